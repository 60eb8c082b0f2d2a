"""Tests for jaxca.objectives.corrections against NumPy loops (tests/reference/objectives.py)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca.objectives import corrections
from tests.reference import objectives as ref


def _inputs(seed, shape=(6, 8), spread=0.6):
  rng = np.random.default_rng(seed)
  target = rng.normal(-1.0, 0.5, shape).astype(np.float32)
  rollout = (target + rng.normal(0.0, spread, shape)).astype(np.float32)
  mask = rng.random(shape) < 0.75
  mask.reshape(-1, shape[-1])[0] = False  # a fully masked sequence
  return target, rollout, mask


CASES = dict(
  token_tis=dict(level='token', mode='truncate', high=1.5),
  token_tis_two_sided=dict(level='token', mode='truncate', low=0.8, high=1.5),
  seq_tis=dict(level='sequence', mode='truncate', high=2.0),
  geo_tis_normalized=dict(level='geometric', mode='truncate', high=1.2, normalize=True),
  token_mis=dict(level='token', mode='mask', high=1.5),
  icepop=dict(level='token', mode='mask', low=0.5, high=5.0),
  seq_mis=dict(level='sequence', mode='mask', low=0.5, high=2.0),
  geo_rs=dict(level='geometric', mode='mask', low=0.9, high=1.1, apply_weights=False),
  token_normalized=dict(level='token', mode='truncate', high=3.0, normalize=True),
  kl_mean_k3=dict(level=None, kl_threshold=0.2, kl_estimator='k3', kl_reduce='mean'),
  kl_sum_k2=dict(level='token', high=2.0, kl_threshold=1.0, kl_estimator='k2', kl_reduce='sum'),
  kl_max_k1=dict(level='sequence', high=2.0, kl_threshold=0.6, kl_estimator='k1', kl_reduce='max'),
)


class RolloutCorrectionTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(k, k) for k in CASES])
  def test_matches_reference(self, case):
    kwargs = CASES[case]
    target, rollout, mask = _inputs(1)
    fn = self.variant(corrections.make(**kwargs))
    weights, new_mask, metrics = fn(target, rollout, mask)
    exp_w, exp_mask = ref.rollout_correction(target, rollout, mask, **kwargs)
    np.testing.assert_array_equal(new_mask, exp_mask)
    np.testing.assert_allclose(weights, exp_w, rtol=1e-5, atol=1e-6)
    self.assertTrue(all(np.isfinite(v) for v in jax.tree.leaves(metrics)))
    np.testing.assert_allclose(
      metrics['frac_rejected'], (mask & ~exp_mask).sum() / mask.sum(), rtol=1e-6
    )

  def test_cases_exercise_the_bounds(self):
    # Guards against a silent test: the inputs must trigger truncation, masking and rejection.
    target, rollout, mask = _inputs(1)
    for case in ('token_mis', 'icepop', 'seq_mis', 'geo_rs', 'kl_mean_k3', 'kl_max_k1'):
      _, kept = ref.rollout_correction(target, rollout, mask, **CASES[case])
      self.assertLess(kept.sum(), mask.sum(), case)
      self.assertGreater(kept.sum(), 0, case)
    w, _ = ref.rollout_correction(target, rollout, mask, **CASES['token_tis'])
    self.assertTrue(np.any(w[mask] == 1.5))

  def test_presets(self):
    target, rollout, mask = _inputs(2)
    for name, kwargs in corrections.PRESETS.items():
      a = corrections.make(name)(target, rollout, mask)
      b = corrections.rollout_correction(target, rollout, mask, **kwargs)
      chex.assert_trees_all_close(a, b)
    self.assertEqual(
      corrections.PRESETS['icepop'], dict(level='token', mode='mask', low=0.5, high=5.0)
    )
    # kwargs override a preset
    a = corrections.make('icepop', high=2.0)(target, rollout, mask)
    b = corrections.rollout_correction(
      target, rollout, mask, level='token', mode='mask', low=0.5, high=2.0
    )
    chex.assert_trees_all_close(a, b)

  def test_weights_carry_no_gradient(self):
    target, rollout, mask = _inputs(3)
    c = np.random.default_rng(4).normal(size=mask.shape).astype(np.float32)
    for case, kwargs in CASES.items():
      fn = corrections.make(**kwargs)

      def f(t, r):
        w, _, metrics = fn(t, r, mask)
        return jnp.sum(w * c) + sum(jax.tree.leaves(metrics))

      g_t, g_r = jax.grad(f, argnums=(0, 1))(target, rollout)
      np.testing.assert_array_equal(g_t, 0.0, err_msg=case)
      np.testing.assert_array_equal(g_r, 0.0, err_msg=case)

  def test_identical_policies_need_no_correction(self):
    target, _, mask = _inputs(5)
    for case, kwargs in CASES.items():
      w, kept, _ = corrections.make(**kwargs)(target, target, mask)
      np.testing.assert_array_equal(kept, mask, err_msg=case)
      np.testing.assert_allclose(w, mask.astype(np.float32), rtol=1e-6, err_msg=case)

  def test_sequence_weight_is_the_product_and_geometric_is_its_root(self):
    target, rollout, mask = _inputs(6)
    seq = corrections.log_importance_weights(target, rollout, mask, 'sequence')
    geo = corrections.log_importance_weights(target, rollout, mask, 'geometric')
    for b in range(mask.shape[0]):
      d = (target[b] - rollout[b])[mask[b]]
      if d.size:
        np.testing.assert_allclose(seq[b][mask[b]], d.sum(), rtol=1e-5)
        np.testing.assert_allclose(geo[b][mask[b]], d.mean(), rtol=1e-5)
      np.testing.assert_array_equal(seq[b][~mask[b]], 0.0)

  def test_masked_inf_inputs_and_leading_axes(self):
    target, rollout, mask = _inputs(7, shape=(2, 3, 8))
    target = np.where(mask, target, np.inf).astype(np.float32)
    rollout = np.where(mask, rollout, -np.inf).astype(np.float32)
    for case, kwargs in CASES.items():
      w, kept, metrics = corrections.make(**kwargs)(target, rollout, mask)
      self.assertEqual(w.shape, mask.shape)
      self.assertTrue(np.all(np.isfinite(w)), case)
      self.assertTrue(all(np.isfinite(v) for v in jax.tree.leaves(metrics)), case)
      flat = [a.reshape(-1, 8) for a in (target, rollout, mask)]
      exp_w, exp_mask = ref.rollout_correction(*flat, **kwargs)
      np.testing.assert_array_equal(np.asarray(kept).reshape(-1, 8), exp_mask)
      np.testing.assert_allclose(np.asarray(w).reshape(-1, 8), exp_w, rtol=1e-5, atol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, 'preset'):
      corrections.make('tis')
    with self.assertRaisesRegex(ValueError, 'options'):
      corrections.make(threshold=2.0)
    with self.assertRaisesRegex(ValueError, 'level'):
      corrections.make(level='seq')
    with self.assertRaisesRegex(ValueError, 'KL estimator'):
      corrections.make(kl_threshold=0.1, kl_estimator='k4')


if __name__ == '__main__':
  absltest.main()
