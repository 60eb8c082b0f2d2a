"""Tests for jaxca.objectives.kl against NumPy loops (tests/reference/objectives.py)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca.objectives import aggregation
from jaxca.objectives import kl
from tests.reference import losses as ref_losses
from tests.reference import objectives as ref


def _inputs(seed, shape=(4, 6)):
  rng = np.random.default_rng(seed)
  log_probs = rng.normal(-1.0, 0.5, shape).astype(np.float32)
  ref_lp = (log_probs + rng.normal(0.0, 0.4, shape)).astype(np.float32)
  mask = rng.random(shape) < 0.7
  mask.reshape(-1, shape[-1])[0] = False
  return log_probs, ref_lp, mask


class EstimateTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(estimator=['k1', 'k2', 'k3', 'abs', 'kl', 'mse', 'low_var_kl', 'k3+'])
  def test_matches_reference(self, estimator):
    log_probs, ref_lp, mask = _inputs(1)
    got = self.variant(lambda a, b, m: kl.estimate(a, b, m, estimator))(log_probs, ref_lp, mask)
    base = kl.check_estimator(estimator).rstrip('+')
    np.testing.assert_allclose(
      got, ref.kl_estimate(log_probs, ref_lp, mask, base), rtol=1e-5, atol=1e-6
    )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('k3', 'low_var_kl', 'k3+', 'low_var_kl+', 'k1', 'k2', 'abs')
  def test_matches_verl_kl_penalty_at_large_log_ratios(self, name):
    # verl clamps the k3 value to [-10, 10]: log-ratios of +-5 and +-25 hit the clamp or not.
    log_ratio = np.array([[-25.0, -5.0, -0.5, 0.5, 5.0, 25.0]], np.float32)
    ref_lp = np.full(log_ratio.shape, -30.0, np.float32)
    log_probs = ref_lp + log_ratio
    mask = np.ones(log_ratio.shape, bool)
    got = self.variant(lambda lp: kl.estimate(lp, ref_lp, mask, name))(log_probs)
    grad = self.variant(jax.grad(lambda lp: jnp.sum(kl.estimate(lp, ref_lp, mask, name))))(
      log_probs
    )
    want = [ref.verl_kl_penalty(a, b, name) for a, b in zip(log_probs[0], ref_lp[0])]
    np.testing.assert_allclose(got[0], [v for v, _ in want], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad[0], [g for _, g in want], rtol=1e-5, atol=1e-6)
    if name.rstrip('+') in ('k3', 'low_var_kl'):
      self.assertLessEqual(float(jnp.max(got)), 10.0)

  def test_k3_bound_none_is_unclamped(self):
    lp = np.array([[0.0, 0.0]], np.float32)
    ref_lp = np.array([[5.0, -5.0]], np.float32)
    got = kl.estimate(lp, ref_lp, np.ones((1, 2), bool), 'k3', k3_bound=None)
    np.testing.assert_allclose(got[0], [np.exp(5.0) - 6.0, np.exp(-5.0) + 4.0], rtol=1e-5)

  def test_k3_is_losses_kl_k3(self):
    log_probs, ref_lp, mask = _inputs(2)
    np.testing.assert_array_equal(
      kl.estimate(log_probs, ref_lp, mask, 'k3'), kl.kl_k3(log_probs, ref_lp, mask)
    )

  def test_expectations_over_an_enumerated_distribution(self):
    # E_{a~p}[k1] = E_{a~p}[k3] = KL(p || q) exactly; k2 and abs are >= 0.
    rng = np.random.default_rng(3)
    p = jax.nn.log_softmax(jnp.asarray(rng.normal(size=7), jnp.float32))
    q = jax.nn.log_softmax(jnp.asarray(rng.normal(size=7), jnp.float32))
    exact = float(jnp.sum(jnp.exp(p) * (p - q)))
    ones = jnp.ones(7, bool)
    for name in ('k1', 'k3'):
      got = float(jnp.sum(jnp.exp(p) * kl.estimate(p, q, ones, name)))
      self.assertAlmostEqual(got, exact, places=5, msg=name)
    for name in ('k2', 'k3', 'abs'):
      self.assertTrue(np.all(np.asarray(kl.estimate(p, q, ones, name)) >= 0))
      np.testing.assert_allclose(kl.estimate(p, p, ones, name), 0.0, atol=1e-7)

  @parameterized.parameters('k1+', 'k3+', 'abs+', 'low_var_kl+')
  def test_straight_through_has_the_value_of_the_estimator_and_the_gradient_of_k2(self, name):
    log_probs, ref_lp, mask = _inputs(4)
    base = name[:-1]
    np.testing.assert_allclose(
      kl.estimate(log_probs, ref_lp, mask, name), kl.estimate(log_probs, ref_lp, mask, base)
    )
    grad = jax.grad(lambda lp: jnp.sum(kl.estimate(lp, ref_lp, mask, name)))(log_probs)
    np.testing.assert_allclose(grad, np.where(mask, log_probs - ref_lp, 0.0), rtol=1e-5, atol=1e-7)
    self.assertEqual(kl.check_estimator('k2+'), 'k2')

  @parameterized.parameters('k1', 'k2', 'k3', 'abs')
  def test_masked_inf_and_no_gradient_to_the_reference(self, name):
    log_probs, ref_lp, mask = _inputs(5)
    log_probs = np.where(mask, log_probs, -np.inf).astype(np.float32)
    ref_lp = np.where(mask, ref_lp, np.inf).astype(np.float32)
    g_lp, g_ref = jax.grad(lambda a, b: kl.penalty(a, b, mask, estimator=name), argnums=(0, 1))(
      log_probs, ref_lp
    )
    self.assertTrue(np.all(np.isfinite(g_lp)))
    np.testing.assert_array_equal(np.asarray(g_lp)[~mask], 0.0)
    np.testing.assert_array_equal(g_ref, 0.0)

  def test_penalty_aggregates_like_the_policy_loss(self):
    log_probs, ref_lp, mask = _inputs(6)
    for mode in aggregation.AGG_MODES:
      got = kl.penalty(log_probs, ref_lp, mask, estimator='k3', agg_mode=mode)
      want = ref_losses.aggregate(ref.kl_estimate(log_probs, ref_lp, mask, 'k3'), mask, mode)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_penalize_rewards(self):
    log_probs, ref_lp, mask = _inputs(7)
    rewards = np.random.default_rng(8).normal(size=mask.shape).astype(np.float32)
    got = kl.penalize_rewards(rewards, log_probs, ref_lp, mask, 0.1, estimator='k1')
    want = np.where(mask, rewards - 0.1 * (log_probs - ref_lp), rewards)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda lp: jnp.sum(kl.penalize_rewards(rewards, lp, ref_lp, mask, 0.1)))(
      log_probs
    )
    np.testing.assert_array_equal(grads, 0.0)

  def test_unknown_estimator(self):
    with self.assertRaisesRegex(ValueError, 'Unknown KL estimator'):
      kl.check_estimator('full')


class ControllerTest(parameterized.TestCase):
  def test_adaptive_matches_reference(self):
    kls = [0.05, 0.3, 0.1, 0.0, 0.12, 1.0]
    ctrl = kl.make_controller('adaptive', coef=0.2, target=0.1, horizon=100)

    @jax.jit
    def run(values):
      def step(state, value):
        state = ctrl.update(state, value, 8)
        return state, state.coef

      return jax.lax.scan(step, ctrl.init(), values)[1]

    got = run(jnp.asarray(kls, jnp.float32))
    np.testing.assert_allclose(got, ref.adaptive_kl(0.2, kls, 8, 0.1, 100), rtol=1e-6)
    # above target the coefficient grows, below it shrinks
    self.assertGreater(float(got[1]), float(got[0]))
    self.assertLess(float(got[0]), 0.2)

  def test_fixed_and_errors(self):
    ctrl = kl.make_controller('fixed', coef=0.05)
    state = ctrl.update(ctrl.init(), 10.0, 4)
    self.assertAlmostEqual(float(state.coef), 0.05, places=7)
    with self.assertRaisesRegex(ValueError, 'target'):
      kl.make_controller('adaptive', coef=0.1)
    with self.assertRaisesRegex(ValueError, 'controller'):
      kl.make_controller('pid')


if __name__ == '__main__':
  absltest.main()
