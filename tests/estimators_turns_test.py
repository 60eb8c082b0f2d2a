"""The turn-level stages (matchtir, mars, turn_gae) vs the NumPy transcriptions, token layout."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import numpy as np

from jaxca import estimators
from jaxca.types import Trajectory
from tests.reference import turns as ref

B, U, OBS, ACT = 6, 3, 2, 2  # each turn: OBS tool-result tokens (masked), ACT policy tokens


def _batch(seed, obs=OBS):
  """Rows of random length (one empty); rewards: each turn's reward on its last policy token."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, U + 1, size=B)
  lengths[2] = 0
  per = obs + ACT
  t = U * per
  mask = np.zeros((B, t), bool)
  turn_ids = np.full((B, t), -1, np.int32)
  rewards = np.zeros((B, t), np.float32)
  turn_r = np.zeros((B, U), np.float32)
  values = np.zeros((B, t), np.float32)
  v_act = rng.normal(size=(B, U, ACT)).astype(np.float32)  # values at the policy's tokens
  for b in range(B):
    for u in range(lengths[b]):
      cols = np.arange(u * per + obs, (u + 1) * per)
      mask[b, cols] = True
      turn_ids[b, cols] = u
      turn_r[b, u] = rng.integers(0, 3) / 2.0
      rewards[b, cols[-1]] = turn_r[b, u]
      values[b, cols] = v_act[b, u]
  return lengths, mask, turn_ids, rewards, turn_r, values


def _traj(mask, turn_ids, rewards, turn_r, values, groups=(0, 0, 1, 1, 1, 0)):
  return Trajectory(
    rewards=rewards,
    mask=mask,
    values=values,
    group_ids=np.asarray(groups, np.int32),
    num_groups=2,
    turn_ids=turn_ids,
    turn_rewards=turn_r,
    agent_ids=np.asarray([0, 1, 0, 1, 0, 1], np.int32),
  )


def _per_turn(adv, turn_ids, mask, lengths):
  """[B, T] -> list of per-row lists (each turn's tokens must agree)."""
  out = []
  for b in range(B):
    row = []
    for u in range(lengths[b]):
      vals = adv[b][(turn_ids[b] == u) & mask[b]]
      np.testing.assert_allclose(vals, vals[0], atol=1e-6)
      row.append(float(vals[0]))
    out.append(row)
  return out


class TurnStagesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1)
  def test_against_reference(self, seed):
    lengths, mask, turn_ids, rewards, turn_r, values = _batch(seed)
    traj = _traj(mask, turn_ids, rewards, turn_r, values)
    rows = [turn_r[b, : lengths[b]].tolist() for b in range(B)]

    est = estimators.make('matchtir', gamma=0.9)
    got = np.asarray(self.variant(est)(traj).advantages)
    self.assertTrue(np.all(got[~mask] == 0.0))
    want = ref.dual_level([sum(r) for r in rows], rows, traj.group_ids.tolist(), 0.9)
    for g, w in zip(_per_turn(got, turn_ids, mask, lengths), want):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)

    est = estimators.make('mars', gamma=1.0, reward_norm='mean', adv_norm='mean_std')
    got = np.asarray(self.variant(est)(traj).advantages)
    want = ref.mars(rows, traj.agent_ids.tolist(), 1.0, 'mean', 'mean_std')
    for g, w in zip(_per_turn(got, turn_ids, mask, lengths), want):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)

    est = estimators.make('turn_gae', gamma=0.9, lambda_=0.7)
    out = self.variant(est)(traj)
    got_a, got_r = np.asarray(out.advantages), np.asarray(out.returns)
    for b in range(B):
      v = [values[b][(turn_ids[b] == u) & mask[b]][0] for u in range(lengths[b])]
      wa, wr = ref.turn_gae(rows[b], v, 0.9, 0.7)
      np.testing.assert_allclose(_per_turn(got_a, turn_ids, mask, lengths)[b], wa, atol=1e-5)
      np.testing.assert_allclose(_per_turn(got_r, turn_ids, mask, lengths)[b], wr, atol=1e-5)

  @parameterized.parameters('matchtir', 'mars', 'turn_gae', 'matchtir + turn_gae | whiten')
  def test_tool_tokens_transparent(self, spec):
    """More masked tool-result tokens per turn change nothing at the policy's tokens."""
    short = _batch(3, obs=1)
    long = _batch(3, obs=4)
    est = estimators.make(spec)
    a = np.asarray(est(_traj(*short[1:])).advantages)
    b = np.asarray(est(_traj(*long[1:])).advantages)
    np.testing.assert_allclose(a[short[1]], b[long[1]], atol=1e-5)

  def test_requires_and_errors(self):
    self.assertEqual(
      estimators.make('matchtir').requires,
      ('rewards', 'mask', 'group_ids', 'turn_ids', 'turn_rewards'),
    )
    self.assertIn('agent_ids', estimators.make('mars').requires)
    lengths, mask, turn_ids, rewards, turn_r, values = _batch(0)
    traj = _traj(mask, turn_ids, rewards, turn_r, values)
    with self.assertRaisesRegex(ValueError, 'turn_rewards'):
      estimators.make('matchtir')(traj.replace(turn_rewards=turn_r[:3]))
    with self.assertRaisesRegex(ValueError, 'turn_ids'):
      estimators.make('matchtir')(Trajectory(rewards=rewards, mask=mask))
    with self.assertRaisesRegex(ValueError, 'adv_norm'):
      estimators.make('mars', adv_norm='std')

  def test_jit_retrace_free_hparams(self):
    lengths, mask, turn_ids, rewards, turn_r, values = _batch(1)
    traj = _traj(mask, turn_ids, rewards, turn_r, values)
    est = estimators.make('matchtir')
    sweep = jax.vmap(lambda g: est(traj, dict(est.hparams, terms=({'gamma': g, 'eps': 1e-6},))))
    out = sweep(np.asarray([0.5, 0.9], np.float32)).advantages
    self.assertEqual(out.shape, (2,) + rewards.shape)


if __name__ == '__main__':
  absltest.main()
