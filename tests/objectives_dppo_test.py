"""DPPO (jaxca.objectives.dppo_tv / dppo_kl) on hand-made tokens; the NumPy-loop reference
cases (a transcription of verl's `compute_policy_loss_dppo_*`) are in objectives_test.py."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import objectives
from tests.reference import objectives as ref

# Tokens: (p, p_old, A). TV thresholds 0.15 both sides.
TOKENS = [
  (0.50, 0.30, 1.0),  # pushed up past +0.15 with A > 0: out
  (0.40, 0.30, 1.0),  # up by 0.10: kept
  (0.10, 0.30, 1.0),  # moved against A's direction: kept
  (0.10, 0.30, -1.0),  # pushed down past -0.15 with A < 0: out
  (0.20, 0.30, -1.0),  # down by 0.10: kept
  (0.90, 0.30, -1.0),  # up with A < 0: kept
]


def _arrays(tokens=TOKENS):
  p, p_old, a = (np.array([[x[i] for x in tokens]], np.float32) for i in range(3))
  return jnp.log(p), jnp.log(p_old), jnp.asarray(a), jnp.ones(p.shape, bool)


class DppoTest(parameterized.TestCase):
  def test_tv_keeps_the_trust_region(self):
    lp, old, adv, mask = _arrays()
    grads = jax.grad(lambda x: objectives.dppo_tv(x, old, adv, mask, agg_mode='token_sum')[0])(lp)
    ratio = np.exp(np.asarray(lp - old))[0]
    keep = np.array([0, 1, 1, 0, 1, 1], bool)
    np.testing.assert_allclose(
      grads[0], np.where(keep, -np.asarray(adv)[0] * ratio, 0.0), rtol=1e-5
    )
    _, metrics = objectives.dppo_tv(lp, old, adv, mask)
    np.testing.assert_allclose(metrics['clip_frac'], 2 / 6, rtol=1e-6)

  def test_truncated_weight(self):
    lp, old, adv, mask = _arrays([(0.9, 0.01, -1.0)])  # r = 90 > is_max = 20
    grads = jax.grad(lambda x: objectives.dppo_tv(x, old, adv, mask, eps_low=1.0)[0])(lp)
    np.testing.assert_allclose(grads, [[20.0]], rtol=1e-6)
    _, metrics = objectives.dppo_tv(lp, old, adv, mask, eps_low=1.0)
    self.assertEqual(float(metrics['is_trunc_frac']), 1.0)

  def test_kl_matches_its_binary_kl(self):
    # p_old = 0.3 -> p = 0.5: D = 0.3 log(0.3 / 0.5) + 0.7 log(0.7 / 0.5) = 0.0823.
    d = 0.3 * math.log(0.3 / 0.5) + 0.7 * math.log(0.7 / 0.5)
    lp, old, adv, mask = _arrays([(0.5, 0.3, 1.0)])
    for eps, kept in ((d * 0.99, False), (d * 1.01, True)):
      loss, metrics = objectives.dppo_kl(lp, old, adv, mask, eps_low=eps)
      self.assertEqual(float(metrics['clip_frac']), 0.0 if kept else 1.0)
      want = ref.verl_dppo(
        np.asarray(lp), np.asarray(old), np.asarray(adv), np.asarray(mask), 'kl', eps, eps
      )
      np.testing.assert_allclose(loss, want.sum(), rtol=1e-5)

  @parameterized.parameters('dppo_tv', 'dppo_kl')
  def test_make_by_name_and_verl_example_defaults(self, name):
    self.assertEqual(
      objectives.hyperparameters(name)['eps_low'], 0.15 if name == 'dppo_tv' else 0.05
    )
    self.assertEqual(objectives.hyperparameters(name)['is_max'], 20.0)
    lp, old, adv, mask = _arrays()
    loss, _ = jax.jit(objectives.make(name))(lp, old, adv, mask)
    self.assertTrue(np.isfinite(loss))


if __name__ == '__main__':
  absltest.main()
