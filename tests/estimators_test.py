"""jaxca.estimators: each stage vs targets computed from the NumPy references.

Also: the legacy call form, bit-identity of 'grpo' with the formula before
`Trajectory` existed, PURE's baselines vs a transcription of its code's
definitions on hand-made groups, composition, traceable hyper-parameters, and
the missing-field error.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxca import credit
from jaxca import estimators
from jaxca import ops
from jaxca import testing
from jaxca.types import Trajectory
from tests.reference import credit as ref
from tests.reference import steps as step_ref

P, G, T = 2, 3, 6
B = P * G
IDS = np.repeat(np.arange(P), G).astype(np.int32)


def _rollout(seed):
  rng = np.random.default_rng(seed)
  mask = testing.random_mask(rng, (B, T), 'suffix')
  mask[:, 0] = True
  mask[4] = False  # an empty response
  last = mask.sum(-1) - 1
  rewards = np.zeros((B, T), np.float32)
  for b in range(B):
    if last[b] >= 0:
      rewards[b, last[b]] = rng.normal()
  values = rng.normal(size=(B, T)).astype(np.float32)
  return rewards, mask, values


def _traj(rewards, mask, **kw):
  return Trajectory(rewards=jnp.asarray(rewards), mask=jnp.asarray(mask), **kw)


def _legacy(rewards, mask, *, values=None, group_size=None, reward_mask=None):
  """The Trajectory of the call form before it existed: contiguous groups of `group_size`,
  steps closed at `reward_mask` (default: the last valid token), S = T."""
  rewards, mask = jnp.asarray(rewards, jnp.float32), jnp.asarray(mask)
  b, t = rewards.shape
  kw = {}
  if group_size is not None:
    kw = dict(
      group_ids=jnp.arange(b, dtype=jnp.int32) // group_size,
      num_groups=b // group_size,
      groups_contiguous=True,
    )
  if reward_mask is None:
    reward_mask = ops.step_closers(jnp.where(mask, 0, -1), 1)
  closer = jnp.asarray(reward_mask) & mask
  before = jnp.cumsum(closer, axis=-1, dtype=jnp.int32) - closer
  total = jnp.sum(closer, axis=-1, keepdims=True, dtype=jnp.int32)
  step_ids = jnp.where(mask & (before < total), before, -1)
  step_rewards = ops.to_steps(jnp.where(closer, rewards, 0.0), step_ids, t, 'sum')
  v = None if values is None else jnp.asarray(values)
  return Trajectory(
    rewards=rewards, mask=mask, values=v, step_ids=step_ids, step_rewards=step_rewards, **kw
  )


def _ref_whiten(x, mask):
  v = x[mask].astype(np.float64)
  out = (x - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8)
  return np.where(mask, out, 0.0)


class EstimatorsTest(parameterized.TestCase):
  @parameterized.parameters(False, True)
  def test_gae(self, whiten):
    rewards, mask, values = _rollout(0)
    est = estimators.make('gae', gamma=0.9, lambda_=0.7, whiten=whiten)
    self.assertIn('values', est.requires)
    traj = _traj(rewards, mask, values=jnp.asarray(values))
    got = jax.jit(est)(traj)
    legacy = jax.jit(lambda r, m, v: est(_legacy(r, m, values=v)))(rewards, mask, values)
    adv = np.zeros((B, T))
    ret = np.zeros((B, T))
    for b in range(B):
      adv[b], ret[b] = ref.gae(rewards[b], values[b], np.full(T, 0.9), 0.0, 0.7, mask[b])
    if whiten:
      adv = _ref_whiten(adv, mask)
    for out in (got, legacy):
      np.testing.assert_allclose(out.advantages, adv, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(out.returns, ret, rtol=1e-5, atol=1e-5)
    spec = estimators.make('gae|whiten' if whiten else 'gae', gamma=0.9, lambda_=0.7)
    np.testing.assert_array_equal(jax.jit(spec)(traj).advantages, got.advantages)  # same program

  @parameterized.product(name=('grpo', 'dr_grpo', 'rloo'), layout=('contiguous', 'ids'))
  def test_group_estimators(self, name, layout):
    rewards, mask, _ = _rollout(1)
    est = estimators.make(name)
    self.assertEqual(est.requires, ('rewards', 'mask', 'group_ids'))
    if layout == 'contiguous':
      traj = _traj(rewards, mask, group_ids=IDS, num_groups=P, groups_contiguous=True)
      got = est(traj)
      np.testing.assert_array_equal(
        est(_legacy(rewards, mask, group_size=G)).advantages, got.advantages
      )
    else:
      perm = np.random.default_rng(2).permutation(B)
      traj = _traj(rewards[perm], mask[perm], group_ids=IDS[perm], num_groups=P)
      out = jax.jit(est)(traj)
      got = estimators.Targets(*(np.empty_like(np.asarray(x)) for x in out))
      got.advantages[perm] = out.advantages
      got.returns[perm] = out.returns
    scores = np.where(mask, rewards, 0.0).sum(-1)
    a = ref.group_relative(scores, IDS, name, valid=mask.any(-1))
    want = np.where(mask, a[:, None], 0.0)
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.returns, want, rtol=1e-5, atol=1e-6)

  @parameterized.parameters('grpo', 'dr_grpo', 'rloo')
  def test_group_bit_identical_to_the_formula_before_trajectory(self, name):
    """The sampler layout gives exactly the advantages of the previous `group_fn`."""
    rewards, mask, _ = _rollout(7)

    def old(rewards, mask):  # transcription of the estimator before the Trajectory API
      scores = ops.masked_sum(rewards, mask, axis=-1)
      valid = jnp.any(mask, axis=-1)
      a = credit.group_relative(
        scores.reshape(-1, G), name, eps=1e-6, valid=valid.reshape(-1, G)
      ).reshape(B)
      adv = jnp.where(mask, a[:, None], 0.0)
      return jnp.where(mask, adv, 0.0)

    est = estimators.make(name)
    traj = _traj(rewards, mask, group_ids=IDS, num_groups=P, groups_contiguous=True)
    np.testing.assert_array_equal(jax.jit(est)(traj).advantages, jax.jit(old)(rewards, mask))
    np.testing.assert_array_equal(est(traj).advantages, old(rewards, mask))

  def test_min_form_legacy_outcome_baseline(self):
    """baseline='outcome', mask_separators=False is the estimator before PURE's baselines."""
    rewards, mask, _ = _rollout(3)
    rng = np.random.default_rng(4)
    reward_mask = mask & (rng.random((B, T)) > 0.5)
    rewards = np.where(reward_mask, rng.uniform(-1, 1, (B, T)), 0.0).astype(np.float32)
    est = estimators.make('min_form', temperature=0.2, baseline='none', mask_separators=False)
    self.assertNotIn('group_ids', est.requires)
    got = est(_legacy(rewards, mask, reward_mask=reward_mask))
    want = _pr(rewards, mask, reward_mask)
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.returns, want, rtol=1e-5, atol=1e-6)
    # Default reward_mask = last valid token: one step, weight 1, return = outcome score.
    out_rewards, _, _ = _rollout(3)
    got = est(_legacy(out_rewards, mask))
    want = np.stack(
      [ref.discounted_returns(out_rewards[b], np.ones(T), 0.0, mask[b]) for b in range(B)]
    )
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    # With an 'outcome' baseline, the other rows' mean outcome is subtracted (returns unchanged).
    est_o = estimators.make('min_form', temperature=0.2, baseline='outcome', mask_separators=False)
    got_g = est_o(_legacy(rewards, mask, reward_mask=reward_mask, group_size=G))
    outcome = np.stack(
      [ref.min_form_rewards(rewards[b], 0.2, reward_mask[b]).sum() for b in range(B)]
    )
    baseline = outcome - ref.group_relative(outcome, IDS, 'rloo', valid=mask.any(-1))
    pr_returns = _pr(rewards, mask, reward_mask)
    want_g = pr_returns - np.where(mask, baseline[:, None], 0.0)
    np.testing.assert_allclose(got_g.advantages, want_g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_g.returns, pr_returns, rtol=1e-5, atol=1e-6)

  def test_min_form_specs_example(self):
    """PR = [.9, .8, -.5, .7], T = 0.1: step returns ~ [-.5, -.5, -.5, 0] (arXiv 2504.15275)."""
    step_rewards = np.array([[0.9, 0.8, -0.5, 0.7]], np.float32)
    step_ids = np.array([[0, 0, 1, 1, 2, 2, 3, 3]], np.int32)
    traj = _traj(
      np.zeros((1, 8), np.float32),
      np.ones((1, 8), bool),
      step_ids=step_ids,
      step_rewards=step_rewards,
    )
    est = estimators.make('min_form', baseline='none', mask_separators=False)
    got = np.asarray(est(traj).advantages)[0, ::2]
    np.testing.assert_allclose(got, [-0.5, -0.5, -0.5, 0.0], atol=2e-3)

  @parameterized.product(
    baseline=('token', 'step', 'none'),
    transform=('softmin', 'sum'),
    mask_sep=(True, False),
    jit=(False, True),
  )
  def test_min_form_matches_pure_code_on_hand_made_groups(self, baseline, transform, mask_sep, jit):
    groups = [
      [[(2, 0.9), (3, -0.4), (1, 0.7)], [(4, 0.2)], [(1, -0.6), (2, 0.5)]],
      [[(2, 0.3), (2, 0.3)], [(1, 0.8), (1, -1.0), (3, 0.1), (1, 0.4)]],
    ]
    want = step_ref.pure_pipeline(groups, 0.1, baseline, transform, mask_sep)
    rows = [resp for group in groups for resp in group]
    b, t_len, s = len(rows), 8, 4
    step_ids = np.full((b, t_len), -1, np.int32)
    step_rewards = np.zeros((b, s), np.float32)
    mask = np.zeros((b, t_len), bool)
    for i, resp in enumerate(rows):
      pos = 0
      for k, (nt, score) in enumerate(resp):
        step_ids[i, pos : pos + nt] = k
        step_rewards[i, k] = score
        pos += nt
      mask[i, :pos] = True
    ids = np.array([g for g, group in enumerate(groups) for _ in group], np.int32)
    traj = _traj(
      np.zeros((b, t_len), np.float32),
      mask,
      step_ids=step_ids,
      step_rewards=step_rewards,
      group_ids=ids,
      num_groups=len(groups),
    )
    est = estimators.make(
      'min_form', baseline=baseline, transform=transform, mask_separators=mask_sep
    )
    got = np.asarray((jax.jit(est) if jit else est)(traj).advantages)
    flat = [adv for group in want for adv in group]
    for i, adv in enumerate(flat):
      np.testing.assert_allclose(got[i, : len(adv)], adv, rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(got[i, len(adv) :], 0.0)

  def test_reinforce(self):
    rewards, mask, _ = _rollout(5)
    got = estimators.make('reinforce', gamma=0.8)(_traj(rewards, mask))
    want = np.stack(
      [ref.discounted_returns(rewards[b], np.full(T, 0.8), 0.0, mask[b]) for b in range(B)]
    )
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)

  def test_composition_and_traceable_hyper_parameters(self):
    rewards, mask, _ = _rollout(8)
    traj = _traj(rewards, mask, group_ids=IDS, num_groups=P, groups_contiguous=True)
    est = estimators.make('grpo + 0.5*rloo')
    self.assertEqual(est.requires, ('rewards', 'mask', 'group_ids'))
    want = estimators.make('grpo')(traj).advantages + 0.5 * estimators.make('rloo')(traj).advantages
    np.testing.assert_allclose(est(traj).advantages, want, rtol=1e-6)
    traces = []

    def run(hp):
      traces.append(None)
      return est(traj, hp).advantages

    sweep = jax.jit(jax.vmap(run))
    omegas = np.array([0.0, 0.5, 2.0], np.float32)
    hp = jax.tree.map(lambda x: np.stack([x] * 3), est.hparams)
    hp['weights'][:, 1] = omegas
    out = sweep(hp)
    for i, w in enumerate(omegas):
      want = estimators.make('grpo')(traj).advantages + w * estimators.make('rloo')(traj).advantages
      np.testing.assert_allclose(out[i], want, rtol=1e-5, atol=1e-6)
    hp['weights'][:, 1] = omegas + 1.0
    sweep(hp)
    self.assertLen(traces, 1)  # new hyper-parameter values, no retrace
    np.testing.assert_allclose(out[0], estimators.make('grpo')(traj).advantages, rtol=1e-6)

  def test_missing_fields_are_listed_at_once(self):
    rewards, mask, _ = _rollout(6)
    est = estimators.make('gae + grpo')
    with self.assertRaisesRegex(ValueError, r"\['values', 'group_ids'\]"):
      est(_traj(rewards, mask))
    with self.assertRaisesRegex(ValueError, 'step_ids.*step_rewards.*group_ids'):
      jax.jit(estimators.make('min_form'))(_traj(rewards, mask))

  def test_from_config_and_unknown_names(self):
    cfg = ml_collections.ConfigDict({'estimator': 'gae', 'gamma': 0.5, 'lambda_': 0.0})
    est = estimators.from_config(cfg)
    rewards, mask, values = _rollout(6)
    got = est(_traj(rewards, mask, values=values))
    want = np.stack(
      [ref.gae(rewards[b], values[b], np.full(T, 0.5), 0.0, 0.0, mask[b])[0] for b in range(B)]
    )
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    chain = estimators.from_config(
      dict(estimator='rloo | whiten', eps=1e-6, gamma=1.0, whiten=False, temperature=0.1)
    )
    self.assertEqual([s.name for s in chain.post], ['whiten'])
    self.assertContainsSubset({'gae', 'grpo', 'dr_grpo', 'rloo', 'min_form'}, estimators.STAGES)
    with self.assertRaisesRegex(ValueError, 'dr_grpo.*gae.*grpo.*min_form'):
      estimators.make('ppo')
    with self.assertRaisesRegex(ValueError, 'whiten'):
      estimators.make('grpo | clip')
    with self.assertRaisesRegex(ValueError, 'Unknown estimator option'):
      estimators.make('grpo', lamda=0.9)
    with self.assertRaisesRegex(ValueError, 'baseline'):
      estimators.make('min_form', baseline='tokens')
    with self.assertRaisesRegex(TypeError, '`mask`'):
      estimators.make('reinforce')(_traj(rewards, mask.astype(np.int32)))
    with self.assertRaisesRegex(TypeError, 'Trajectory'):
      estimators.make('rloo')(rewards)
    with self.assertRaisesRegex(ValueError, '`values`'):
      estimators.make('gae')(_traj(rewards, mask, values=values[:, :3]))

  def test_registered_stage_reads_a_new_field(self):
    def bonus(scale=1.0):
      def apply(traj, prev, hp):
        del prev
        adv = hp['scale'] * traj.get('bonus')
        return estimators.Targets(adv, adv)

      return estimators.Stage('bonus_test', ('bonus',), dict(scale=scale), apply)

    rewards, mask, _ = _rollout(9)
    est = estimators.make('reinforce + 2*bonus_test', stages={'bonus_test': bonus}, scale=0.5)
    with self.assertRaisesRegex(ValueError, 'bonus_test'):
      estimators.make('bonus_test')  # no global registry: the stage exists for that call only
    self.assertEqual(est.requires, ('rewards', 'mask', 'bonus'))
    traj = _traj(rewards, mask).replace(bonus=jnp.ones((B, T)))
    got = est(traj).advantages
    want = estimators.make('reinforce')(traj).advantages + np.where(mask, 1.0, 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "'bonus'"):
      est(_traj(rewards, mask))


def _pr(rewards, mask, reward_mask):
  return np.stack(
    [
      ref.discounted_returns(
        ref.min_form_rewards(rewards[b], 0.2, reward_mask[b]), np.ones(T), 0.0, mask[b]
      )
      for b in range(B)
    ]
  )


if __name__ == '__main__':
  absltest.main()
