"""The `pure` estimator stage (PURE's whole pipeline) vs a NumPy loop, the SPECS example,
VR-only == RLOO (+ KL), and one compile for every arm (traced choices)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from jaxca import estimators
from jaxca.types import Trajectory
from tests.reference import steps as step_ref

B, T, S, G = 8, 10, 10, 4


def random_batch(seed):
  """Prefix masks (one empty row), random step boundaries, a VR subset, log-probs."""
  rng = np.random.default_rng(seed)
  lens = rng.integers(1, T + 1, size=B)
  lens[3] = 0
  mask = np.arange(T)[None] < lens[:, None]
  step_ids = np.full((B, T), -1, np.int32)
  for i in range(B):
    cuts = np.sort(rng.choice(np.arange(1, T), size=rng.integers(0, 4), replace=False))
    ids = np.searchsorted(cuts, np.arange(T), side='right')
    step_ids[i, : lens[i]] = ids[: lens[i]]
    _, step_ids[i, : lens[i]] = np.unique(step_ids[i, : lens[i]], return_inverse=True)
  step_rewards = rng.uniform(-1, 1, size=(B, S)).astype(np.float32)
  solved = rng.integers(0, 2, size=B).astype(np.float32)
  rewards = np.zeros((B, T), np.float32)
  for i in range(B):
    if lens[i]:
      rewards[i, lens[i] - 1] = solved[i]
  has_ref = np.repeat(rng.integers(0, 2, size=B // G), G).astype(bool)
  lp = rng.normal(size=(B, T)).astype(np.float32)
  ref_lp = rng.normal(size=(B, T)).astype(np.float32)
  return dict(mask=mask, step_ids=step_ids, step_rewards=step_rewards, solved=solved,
              rewards=rewards, has_ref=has_ref, log_probs=lp, ref_log_probs=ref_lp)  # fmt: skip


def trajectory(d):
  ids = np.arange(B, dtype=np.int32) // G
  return Trajectory(
    rewards=jnp.asarray(d['rewards']),
    mask=jnp.asarray(d['mask']),
    step_ids=jnp.asarray(d['step_ids']),
    step_rewards=jnp.asarray(d['step_rewards']),
    group_ids=jnp.asarray(ids),
    num_groups=B // G,
    groups_contiguous=True,
    log_probs=jnp.asarray(np.where(d['mask'], d['log_probs'], 0)),
  ).replace(
    vr_reference=jnp.asarray(d['has_ref']),
    ref_log_probs=jnp.asarray(np.where(d['mask'], d['ref_log_probs'], 0)),
  )


def hparams(est, **kw):
  term = dict(est.hparams['terms'][0])
  for k, v in kw.items():
    if k == 'transform':
      term['transform_id'] = np.float32(estimators.pure.PURE_TRANSFORMS.index(v))
    elif k == 'baseline':
      term['baseline_id'] = np.float32(estimators.pure.PURE_BASELINES.index(v))
    else:
      term[k] = np.float32(v)
  return dict(est.hparams, terms=(term,))


class PureStageTest(parameterized.TestCase):
  @parameterized.product(
    transform=estimators.pure.PURE_TRANSFORMS,
    baseline=estimators.pure.PURE_BASELINES,
    vr=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)),
    mask_sep=(True, False),
  )
  def test_matches_numpy_loop(self, transform, baseline, vr, mask_sep):
    d = random_batch(hash((transform, baseline, vr, mask_sep)) % 1000)
    est = estimators.make('pure', mask_separators=mask_sep)
    kw = dict(transform=transform, baseline=baseline, vr_coef=vr[0], vr_all=vr[1], kl_coef=0.01,
              prm_coef=0.7, temperature=0.2)  # fmt: skip
    fn = jax.jit(lambda traj, hp: est(traj, hp).advantages)
    got = np.asarray(fn(trajectory(d), hparams(est, **kw)))
    if transform == 'sum' and baseline == 'none' and not mask_sep:
      got_nojit = np.asarray(est(trajectory(d), hparams(est, **kw)).advantages)
      np.testing.assert_allclose(got_nojit, got, atol=1e-5)
    want = step_ref.pure_full(
      d['step_ids'], d['mask'], d['step_rewards'], np.arange(B) // G, d['solved'], d['has_ref'],
      d['log_probs'], d['ref_log_probs'], dict(kw, transform=transform, baseline=baseline),
      mask_sep,
    )  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-4)

  def test_traced_mask_and_shuffled_vr_match_numpy_loop(self):
    """One compile: `mask_separators` and `shuffle_vr` are traced; shuffle_vr = 1 is the loop
    run on the outcomes rolled by one group (row i of group k scored with group k - 1's row i)."""
    d = random_batch(11)
    est = estimators.make('pure')
    traces = []  # one entry per trace: the traced options must not retrace
    fn = jax.jit(lambda traj, hp: (traces.append(1), est(traj, hp).advantages)[1])
    for mask_sep in (True, False):
      for shuffle in (0.0, 1.0):
        kw = dict(transform='softmin', baseline='token', vr_coef=1.0, vr_all=1.0, kl_coef=0.01,
                  prm_coef=0.5, temperature=0.2)  # fmt: skip
        hp = hparams(est, mask_separators=float(mask_sep), shuffle_vr=shuffle, **kw)
        got = np.asarray(fn(trajectory(d), hp))
        solved = np.where(d['mask'], d['rewards'], 0).sum(1)  # the verifier's outcome per row
        solved = np.roll(solved, G) if shuffle else solved
        want = step_ref.pure_full(
          d['step_ids'], d['mask'], d['step_rewards'], np.arange(B) // G, solved, d['has_ref'],
          d['log_probs'], d['ref_log_probs'], dict(kw, transform='softmin', baseline='token'),
          mask_sep,
        )  # fmt: skip
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=str((mask_sep, shuffle)))
    self.assertLen(traces, 1)
    rolled = np.roll(np.arange(B), G)
    self.assertTrue(np.all(rolled // G != np.arange(B) // G))  # another prompt's group

  def test_specs_example(self):
    """PR = [.9, .8, -.5, .7] at T = 0.1: step returns ~ [-.5, -.5, -.5, 0] (no baseline)."""
    step_ids = np.repeat(np.arange(4), 2)[None].astype(np.int32)
    step_rewards = np.array([[0.9, 0.8, -0.5, 0.7, 0, 0, 0, 0]], np.float32)
    d = dict(mask=np.ones((1, 8), bool), step_ids=step_ids)
    traj = Trajectory(
      rewards=jnp.zeros((1, 8)), mask=jnp.asarray(d['mask']), step_ids=jnp.asarray(step_ids),
      step_rewards=jnp.asarray(step_rewards), group_ids=jnp.zeros(1, jnp.int32), num_groups=1,
    )  # fmt: skip
    est = estimators.make(
      'pure', baseline='none', verifiable=False, kl_in_reward=False, mask_separators=False
    )
    got = np.asarray(est(traj).advantages)[0, ::2]
    np.testing.assert_allclose(got, [-0.5, -0.5, -0.5, 0.0], atol=2e-3)
    sum_form = np.asarray(est(traj, hparams(est, transform='sum')).advantages)[0, ::2]
    np.testing.assert_allclose(sum_form, [1.9, 1.0, 0.2, 0.7], atol=1e-5)
    strict = np.asarray(est(traj, hparams(est, transform='strict_min')).advantages)[0, ::2]
    np.testing.assert_allclose(strict, [-0.5, -0.5, -0.5, 0.7], atol=1e-6)

  def test_token_baseline_is_pure_baseline(self):
    d = random_batch(5)
    est = estimators.make('pure', verifiable=False, kl_in_reward=False, mask_separators=False)
    traj = trajectory(d)
    got = np.asarray(est(traj, hparams(est, transform='sum')).advantages)
    count = np.zeros((B, S))
    for i in range(B):
      for t in range(T):
        if d['mask'][i, t]:
          count[i, d['step_ids'][i, t]] += 1
    valid = count > 0
    based = credit.pure_baseline(np.where(valid, d['step_rewards'], 0), valid, count - 1,
                                 d['mask'].sum(1), np.arange(B) // G, B // G, 'token')  # fmt: skip
    want = np.zeros((B, T))
    for i in range(B):
      acc = 0.0
      for t in reversed(range(T)):
        if d['mask'][i, t]:
          closer = (
            t == T - 1 or not d['mask'][i, t + 1] or d['step_ids'][i, t + 1] != d['step_ids'][i, t]
          )
          acc += float(based[i, d['step_ids'][i, t]]) if closer else 0.0
          want[i, t] = acc
    np.testing.assert_allclose(got, want, atol=1e-5)

  def test_vr_only_equals_rloo_plus_kl(self):
    d = random_batch(7)
    est = estimators.make('pure', mask_separators=False)
    hp = hparams(est, prm_coef=0.0, vr_coef=1.0, vr_all=1.0, kl_coef=0.05)
    got = np.asarray(est(trajectory(d), hp).advantages)
    valid = d['mask'].any(1)
    rloo = np.asarray(credit.group_relative((d['solved'] - 1).reshape(-1, G), 'rloo',
                                            valid=valid.reshape(-1, G))).reshape(B)  # fmt: skip
    kl = np.where(d['mask'], d['log_probs'] - d['ref_log_probs'], 0.0)
    kl_to_go = np.flip(np.cumsum(np.flip(-0.05 * kl, 1), 1), 1)
    want = np.where(d['mask'], rloo[:, None] + kl_to_go, 0.0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    rloo_est = estimators.make('rloo')
    traj = trajectory(d).replace(rewards=jnp.asarray(d['rewards']))
    np.testing.assert_allclose(
      np.asarray(rloo_est(traj).advantages), np.where(d['mask'], rloo[:, None], 0), atol=1e-6
    )

  def test_row_with_no_step_gives_zero_not_nan(self):
    # PURE's code divides a row's outcome by its number of steps (NaN for none, which its
    # leave-one-out baseline spreads to the group); jaxca's PRM terms give 0 there.
    d = random_batch(2)
    self.assertTrue(d['mask'][1].any())
    d['step_ids'][1] = -1  # row 1 has tokens but no step
    est = estimators.make('pure')
    fn = jax.jit(lambda traj, hp: est(traj, hp).advantages)
    for transform in estimators.pure.PURE_TRANSFORMS:
      for baseline in estimators.pure.PURE_BASELINES:
        hp = hparams(est, transform=transform, baseline=baseline, vr_coef=0.0, kl_coef=0.0)
        got = np.asarray(fn(trajectory(d), hp))
        self.assertTrue(np.all(np.isfinite(got)), (transform, baseline))
        np.testing.assert_array_equal(got[1], 0.0)
        self.assertTrue(np.any(got[0] != 0.0))

  def test_one_compile_serves_every_arm(self):
    d = random_batch(1)
    est = estimators.make('pure | whiten', skip_zeros=True)
    fn = jax.jit(lambda traj, hp: est(traj, hp).advantages)
    outs = []
    for transform in estimators.pure.PURE_TRANSFORMS:
      for baseline in estimators.pure.PURE_BASELINES:
        outs.append(
          np.asarray(fn(trajectory(d), hparams(est, transform=transform, baseline=baseline)))
        )
    self.assertEqual(fn._cache_size(), 1)
    self.assertFalse(np.allclose(outs[0], outs[5]))

  def test_requires_and_bad_options(self):
    self.assertEqual(
      estimators.make('pure').requires,
      ('rewards', 'mask', 'step_ids', 'step_rewards', 'group_ids', 'vr_reference', 'log_probs',
       'ref_log_probs'),
    )  # fmt: skip
    with self.assertRaisesRegex(ValueError, 'baseline'):
      estimators.make('pure', baseline='outcome')
    with self.assertRaisesRegex(ValueError, 'ref_log_probs'):
      estimators.make('pure')(trajectory(random_batch(0)).replace(ref_log_probs=None))


if __name__ == '__main__':
  absltest.main()
