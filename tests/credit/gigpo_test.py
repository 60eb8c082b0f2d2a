"""credit.gigpo and the GiGPO / turn-index estimator stages vs a dict-based NumPy reference."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import estimators
from jaxca import ops
from jaxca.credit import gigpo
from jaxca.types import Trajectory
from tests.reference import gigpo as ref

B, S, P = 12, 6, 3


def _batch(seed, num_anchors=4):
  """Rows in random task order, random lengths (one empty row), anchors with recurrences."""
  rng = np.random.default_rng(seed)
  group_ids = rng.permutation(np.repeat(np.arange(P), B // P)).astype(np.int32)
  lengths = rng.integers(1, S + 1, size=B)
  lengths[3] = 0
  steps = np.arange(S)[None, :] < lengths[:, None]
  rewards = np.where(steps, rng.integers(0, 2, size=(B, S)) * rng.normal(size=(B, S)), 0.0)
  rewards = rewards.astype(np.float32)
  # Arbitrary (negative, large) anchor ids drawn from a small set, so states recur.
  table = rng.integers(-(2**30), 2**30, size=num_anchors)
  anchors = np.where(steps, table[rng.integers(0, num_anchors, size=(B, S))], -1).astype(np.int32)
  return group_ids, steps, rewards, anchors


def _rows(group_ids, steps, values):
  """[B, S] -> the verl-agent row layout: (uids, trajs, per-row values) in time order."""
  uids, trajs, out = [], [], []
  for b in range(B):
    for t in range(S):
      if steps[b, t]:
        uids.append(f'task-{group_ids[b]}')
        trajs.append(('traj', b))
        out.append(values[b][t] if np.ndim(values[b]) else values[b])
  return uids, trajs, out


def _scatter(steps, row_values):
  out = np.zeros((B, S))
  out[steps] = row_values
  return out


class GroupIdsTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1, 2, 3)
  def test_same_partition_as_dict(self, width):
    rng = np.random.default_rng(width)
    keys = rng.integers(-3, 3, size=(40, width)).astype(np.int32)
    if width == 1:
      keys = keys[:, 0]
    ids = np.asarray(self.variant(gigpo.group_ids_from_keys)(keys))
    self.assertTrue(np.all((ids >= 0) & (ids < 40)))
    hashable = [tuple(np.atleast_1d(k)) for k in keys]
    self.assertEqual(ref.partition(ids.tolist()), ref.partition(hashable))

  def test_vmap(self):
    keys = np.asarray([[5, 1, 5, 9], [2, 2, 2, 2]], np.int32)
    ids = jax.vmap(gigpo.group_ids_from_keys)(keys)
    np.testing.assert_array_equal(ids, [[1, 0, 1, 2], [0, 0, 0, 0]])  # rank among the distinct keys


class KernelTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(std_norm=(0.0, 1.0), seed=(0, 1, 2))
  def test_step_advantages_match_reference(self, std_norm, seed):
    group_ids, steps, rewards, anchors = _batch(seed)
    gamma = 0.9
    keys = gigpo.anchor_keys(group_ids, anchors)
    got = self.variant(gigpo.step_advantages)(rewards, steps, keys, gamma, std_norm)
    uids, trajs, r = _rows(group_ids, steps, rewards)
    _, _, anc = _rows(group_ids, steps, anchors)
    ret = ref.step_returns(np.asarray(r, np.float64), trajs, gamma)
    want = ref.step_advantages(ret, uids, [('anchor', a) for a in anc], bool(std_norm))
    np.testing.assert_allclose(got, _scatter(steps, want), rtol=1e-4, atol=1e-5)
    self.assertTrue(np.all(np.asarray(got)[~steps] == 0.0))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(std_norm=(0.0, 1.0), per_trajectory=(0.0, 1.0), seed=(0, 1))
  def test_episode_advantages_match_reference(self, std_norm, per_trajectory, seed):
    group_ids, steps, rewards, _ = _batch(seed)
    returns = rewards.sum(-1)
    got = self.variant(gigpo.episode_advantages, static_argnums=2)(
      returns, group_ids, P, steps, std_norm, per_trajectory
    )
    uids, trajs, scores = _rows(group_ids, steps, returns)
    want_rows = ref.episode_advantages(scores, uids, trajs, bool(std_norm), bool(per_trajectory))
    want = _scatter(steps, want_rows).max(-1, where=steps, initial=-np.inf)
    want = np.where(steps.any(-1), want, 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

  @parameterized.parameters(0.0, 1.0)
  def test_singleton_step_groups_give_zero(self, std_norm):
    group_ids, steps, rewards, _ = _batch(0)
    unique = np.arange(B * S, dtype=np.int32).reshape(B, S) * 7 - 50  # every anchor distinct
    keys = gigpo.anchor_keys(group_ids, unique)
    got = gigpo.step_advantages(rewards + 1.0, steps, keys, 0.95, std_norm)
    np.testing.assert_array_equal(got, 0.0)

  def test_history_and_turn_keys(self):
    group_ids = np.asarray([0, 0, 1], np.int32)
    anchors = np.asarray([[1, 2], [1, 2], [1, 2]], np.int32)
    hist = np.asarray([[0, 5], [0, 6], [0, 5]], np.int32)
    steps = np.ones((3, 2), bool)
    part = lambda **kw: ref.partition(  # noqa: E731
      np.asarray(gigpo.step_group_ids(gigpo.anchor_keys(group_ids, anchors, hist, **kw), steps))
      .ravel()
      .tolist()
    )
    # state: rows 0, 1 share both steps; the other task's row never joins them.
    self.assertEqual(part(), {frozenset({0, 2}), frozenset({1, 3}), frozenset({4}), frozenset({5})})
    self.assertEqual(
      part(use_state=0.0, use_history=1.0),
      {frozenset({0, 2}), frozenset({1}), frozenset({3}), frozenset({4}), frozenset({5})},
    )
    self.assertEqual(part(use_state=0.0, use_turn=1.0), part())

  def test_size_histogram(self):
    ids = np.asarray([0, 0, 0, 1, 2, 2, 5], np.int32)
    valid = np.asarray([1, 1, 1, 1, 1, 1, 0], bool)
    groups, rows = gigpo.size_histogram(ids, valid)
    np.testing.assert_allclose(groups, [1 / 3, 2 / 3, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(rows, [1 / 6, 5 / 6, 0, 0, 0], rtol=1e-6)


def _trajectory(group_ids, steps, rewards, anchors, num_groups=P):
  """One token per step (the action token), so T = S and step_ids = turn index."""
  step_ids = np.where(steps, np.arange(steps.shape[1])[None, :], -1).astype(np.int32)
  return Trajectory(
    rewards=jnp.asarray(rewards),
    mask=jnp.asarray(steps),
    group_ids=jnp.asarray(group_ids),
    num_groups=num_groups,
    step_ids=jnp.asarray(step_ids),
    step_rewards=jnp.asarray(rewards),
    anchor_ids=jnp.asarray(anchors),
  )


class EstimatorTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((0.0, 'dr_grpo'), (1.0, 'grpo'))
  def test_gigpo_with_omega_zero_is_grpo(self, std_norm, grpo_name):
    traj = _trajectory(*_batch(3))
    est = estimators.make('gigpo_episode + gigpo_step', std_norm=std_norm, per_trajectory=1.0)
    hp = jax.tree.map(np.copy, est.hparams)
    hp['weights'][1] = 0.0
    got = self.variant(lambda t, h: est(t, h).advantages)(traj, hp)
    want = estimators.make(grpo_name)(traj).advantages
    np.testing.assert_array_equal(got, want)
    episode_only = estimators.make('gigpo_episode', std_norm=std_norm, per_trajectory=1.0)
    np.testing.assert_array_equal(got, episode_only(traj).advantages)

  @parameterized.product(std_norm=(0.0, 1.0), per_trajectory=(0.0, 1.0), omega=(0.5, 1.0))
  def test_gigpo_matches_reference(self, std_norm, per_trajectory, omega):
    group_ids, steps, rewards, anchors = _batch(4)
    traj = _trajectory(group_ids, steps, rewards, anchors)
    est = estimators.make(
      f'gigpo_episode + {omega}*gigpo_step',
      std_norm=std_norm,
      per_trajectory=per_trajectory,
      gamma=0.95,
    )
    got = jax.jit(lambda t: est(t).advantages)(traj)
    uids, trajs, r = _rows(group_ids, steps, rewards)
    _, _, anc = _rows(group_ids, steps, anchors)
    _, _, scores = _rows(group_ids, steps, rewards.sum(-1))
    a_e = ref.episode_advantages(scores, uids, trajs, bool(std_norm), bool(per_trajectory))
    ret = ref.step_returns(np.asarray(r, np.float64), trajs, 0.95)
    a_s = ref.step_advantages(ret, uids, anc, bool(std_norm))
    np.testing.assert_allclose(got, _scatter(steps, a_e + omega * a_s), rtol=1e-4, atol=1e-5)

  def test_requires(self):
    est = estimators.make('gigpo_episode + gigpo_step', history=True)
    self.assertIn('anchor_ids', est.requires)
    self.assertIn('history_ids', est.requires)
    self.assertNotIn('history_ids', estimators.make('turn_step').requires)


class TurnIndexBiasTest(absltest.TestCase):
  """A two-turn toy with known true advantages: turn-index groups are biased, anchors are not.

  Turn 1 from s0 (uniform over 3 actions): a=0 -> state A, a=1 -> state B, a=2 ends the
  episode with reward 0. Turn 2 (uniform over 2 actions): in A both actions give 1; in B
  action 0 gives 0 and action 1 gives 1. So V(A) = 1, V(B) = 0.5, V(s0) = 0.5, and the true
  advantages Q - V are: turn 1 (+0.5, 0, -0.5) for a = 0, 1, 2; turn 2 0 in A, (-0.5, +0.5) in B.
  The batch is the exact population (each trajectory repeated in proportion to its
  probability: 1/6 for each two-turn path, 1/3 for the early end), so mean_norm group means
  are exact expectations. Turn-index groups pool A and B at turn 2 (the survivors of turn 1),
  giving a baseline 0.75 instead of V(A) = 1 or V(B) = 0.5.
  """

  def test_bias(self):
    # rows: (A, a0), (A, a1), (B, a0), (B, a1), (end), (end)
    rewards = np.asarray([[0, 1], [0, 1], [0, 0], [0, 1], [0, 0], [0, 0]], np.float32)
    steps = np.asarray([[1, 1]] * 4 + [[1, 0]] * 2, bool)
    s0, a_state, b_state = 10, 11, 12
    anchors = np.asarray([[s0, a_state]] * 2 + [[s0, b_state]] * 2 + [[s0, -1]] * 2, np.int32)
    true = np.asarray([[0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5], [-0.5, 0], [-0.5, 0]])
    traj = _trajectory(np.zeros(6, np.int32), steps, rewards, anchors, num_groups=1)
    kw = dict(std_norm=0.0, gamma=1.0)
    anchor = np.asarray(estimators.make('gigpo_step', **kw)(traj).advantages)
    turn = np.asarray(estimators.make('turn_step', **kw)(traj).advantages)

    def expected(adv):  # E[A | turn, state, action]: average the rows of each (s, a) pair
      out = np.asarray(adv, np.float64).copy()
      for rows in ((0, 1), (2, 3), (4, 5)):  # turn 1: rows with the same first action
        out[list(rows), 0] = out[list(rows), 0].mean()
      return out  # turn 2 rewards are deterministic given (s, a): single rows are exact

    np.testing.assert_allclose(expected(anchor), np.where(steps, true, 0.0), atol=1e-6)
    bias = expected(turn) - np.where(steps, true, 0.0)
    np.testing.assert_allclose(bias[:, 0], 0.0, atol=1e-6)  # turn 1: one state, no bias
    np.testing.assert_allclose(bias[:4, 1], [0.25, 0.25, -0.25, -0.25], atol=1e-6)
    self.assertAlmostEqual(float(np.abs(bias).max()), 0.25, places=6)
    # Sum of rewards equals ops' masked sum: the toy's rows are what the estimator sees.
    np.testing.assert_allclose(ops.masked_sum(traj.rewards, traj.mask, axis=-1), rewards.sum(-1))


if __name__ == '__main__':
  absltest.main()
