"""Tests for jaxca.objectives.losses against NumPy loops (tests/reference/losses.py)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import ops
from jaxca.objectives import aggregation
from jaxca.objectives import kl as kl_lib
from jaxca.objectives import losses
from tests.reference import losses as ref
from tests.reference import objectives as objectives_ref


def _inputs(seed, shape=(3, 7)):
  rng = np.random.default_rng(seed)
  log_probs = rng.normal(-1.0, 0.5, shape).astype(np.float32)
  old = (log_probs + rng.normal(0.0, 0.3, shape)).astype(np.float32)
  adv = rng.normal(size=shape).astype(np.float32)
  mask = rng.random(shape) < 0.7
  mask[0] = False  # one fully masked sequence
  return log_probs, old, adv, mask


class AggregateTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(mode=aggregation.AGG_MODES, shape=[(3, 7), (2, 3, 5)])
  def test_matches_reference(self, mode, shape):
    rng = np.random.default_rng(0)
    loss_mat = rng.normal(size=shape).astype(np.float32)
    mask = rng.random(shape) < 0.6
    got = self.variant(lambda l, m: aggregation.aggregate(l, m, mode))(loss_mat, mask)
    np.testing.assert_allclose(got, ref.aggregate(loss_mat, mask, mode), rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    mode=['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'],
    norm_length=[None, 11.0],
  )
  def test_matches_verl_agg_loss_with_an_empty_row(self, mode, norm_length):
    # verl's `agg_loss`: seq-mean-token-sum-norm is the mean over non-empty rows of the row
    # sums, / loss_scale_factor (default T); it used to divide by (all rows) * T here.
    rng = np.random.default_rng(7)
    loss_mat = rng.normal(size=(4, 6)).astype(np.float32)
    mask = rng.random((4, 6)) < 0.6
    mask[1] = False
    fn = lambda l: aggregation.aggregate(l, mask, mode, norm_length)  # noqa: E731
    got, grad = self.variant(jax.value_and_grad(fn))(loss_mat)
    want, want_grad = objectives_ref.verl_agg_loss(
      loss_mat.astype(np.float64), mask, mode, loss_scale_factor=norm_length
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)

  def test_hyphenated_names_and_unknown_mode(self):
    l = jnp.ones((2, 3))
    m = jnp.ones((2, 3), bool)
    self.assertEqual(float(aggregation.aggregate(l, m, 'token-mean')), 1.0)
    with self.assertRaisesRegex(ValueError, 'seq_mean_token_mean'):
      aggregation.aggregate(l, m, 'sum')

  def test_empty_mask_gives_zero_not_nan(self):
    for mode in aggregation.AGG_MODES:
      got = aggregation.aggregate(jnp.ones((2, 3)), jnp.zeros((2, 3), bool), mode)
      self.assertEqual(float(got), 0.0)


class PpoPolicyLossTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(mode=aggregation.AGG_MODES, clip_high=[None, 0.28])
  def test_matches_reference(self, mode, clip_high):
    log_probs, old, adv, mask = _inputs(1)
    fn = self.variant(
      lambda a, b, c, d: losses.ppo_policy_loss(
        a, b, c, d, clip_eps=0.2, clip_eps_high=clip_high, agg_mode=mode
      )[0]
    )
    got = fn(log_probs, old, adv, mask)
    per_token = ref.ppo_policy_loss_per_token(
      log_probs, old, adv, 0.2, 0.2 if clip_high is None else clip_high
    )
    np.testing.assert_allclose(got, ref.aggregate(per_token, mask, mode), rtol=1e-5, atol=1e-6)

  def test_on_policy_gradient_is_minus_advantage_weighted_score(self):
    # At ratio 1 (no clipping active) d/dlogp of -ratio*A is -A per token; token_mean divides by N.
    log_probs, _, adv, mask = _inputs(2)
    grads = jax.grad(lambda lp: losses.ppo_policy_loss(lp, lp, adv, mask)[0])(log_probs)
    expected = np.where(mask, -adv / mask.sum(), 0.0)
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-7)

  def test_masked_inf_inputs_give_finite_loss_and_zero_grads_there(self):
    log_probs, old, adv, mask = _inputs(3)
    log_probs = np.where(mask, log_probs, np.inf).astype(np.float32)
    old = np.where(mask, old, -np.inf).astype(np.float32)
    loss, grads = jax.value_and_grad(lambda lp: losses.ppo_policy_loss(lp, old, adv, mask)[0])(
      log_probs
    )
    self.assertTrue(np.isfinite(loss))
    self.assertTrue(np.all(np.isfinite(grads)))
    np.testing.assert_array_equal(np.asarray(grads)[~mask], 0.0)

  def test_shape_mismatch_names_arguments(self):
    with self.assertRaisesRegex(ValueError, 'old_log_probs'):
      losses.ppo_policy_loss(
        jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.zeros((2, 3)), jnp.ones((2, 3), bool)
      )


class ValueEntropyKlTest(parameterized.TestCase):
  def test_value_loss_clipped_matches_loop(self):
    rng = np.random.default_rng(4)
    v, g, old = (rng.normal(size=(4, 5)).astype(np.float32) for _ in range(3))
    mask = rng.random((4, 5)) < 0.7
    got = losses.value_loss(v, g, mask, old_values=old, clip_eps=0.2)
    per = np.zeros_like(v, dtype=np.float64)
    for idx in np.ndindex(v.shape):
      clipped = old[idx] + min(max(v[idx] - old[idx], -0.2), 0.2)
      per[idx] = max((v[idx] - g[idx]) ** 2, (clipped - g[idx]) ** 2)
    np.testing.assert_allclose(got, 0.5 * ref.aggregate(per, mask, 'token_mean'), rtol=1e-5)
    with self.assertRaisesRegex(ValueError, 'old_values'):
      losses.value_loss(v, g, mask, clip_eps=0.2)

  def test_entropy_uniform_and_onehot(self):
    logits = jnp.stack([jnp.zeros(6), jnp.array([0.0, -1e9, -1e9, -1e9, -1e9, -1e9])])
    np.testing.assert_allclose(losses.entropy_from_logits(logits), [np.log(6.0), 0.0], atol=1e-6)

  def test_kl_k3_matches_formula_and_is_nonnegative(self):
    rng = np.random.default_rng(5)
    lp, ref_lp = (rng.normal(-2, 1, (3, 4)).astype(np.float32) for _ in range(2))
    mask = rng.random((3, 4)) < 0.8
    got = np.asarray(kl_lib.kl_k3(lp, ref_lp, mask))
    d = ref_lp.astype(np.float64) - lp
    np.testing.assert_allclose(got, np.where(mask, np.exp(d) - d - 1, 0.0), rtol=1e-5, atol=1e-6)
    self.assertTrue(np.all(got >= 0))

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_k3_value_is_clamped_as_verl(self):
    # verl `kl_penalty_forward('low_var_kl')`: clamp(exp(kl) - kl - 1, -10, 10), kl = ref - logp
    # clamped to [-20, 20]; the gradient is 0 where a clamp is active.
    log_ratio = np.array([[-25.0, -5.0, -0.5, 0.5, 5.0, 25.0]], np.float32)  # logp - ref
    ref_lp = np.full(log_ratio.shape, -30.0, np.float32)
    lp = ref_lp + log_ratio
    mask = np.ones(log_ratio.shape, bool)
    k3_sum = lambda x: jnp.sum(kl_lib.kl_k3(x, ref_lp, mask))  # noqa: E731
    got, grad = self.variant(jax.value_and_grad(k3_sum))(lp)
    want = [objectives_ref.verl_kl_penalty(a, b, 'low_var_kl') for a, b in zip(lp[0], ref_lp[0])]
    np.testing.assert_allclose(
      kl_lib.kl_k3(lp, ref_lp, mask)[0], [v for v, _ in want], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(got, sum(v for v, _ in want), rtol=1e-5)
    np.testing.assert_allclose(grad[0], [g for _, g in want], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(grad[0])[[0, 1, 5]], 0.0)  # clamped: k3 > 10


class PPOObjectiveTest(absltest.TestCase):
  def test_objective_is_the_sum_of_its_terms(self):
    rng = np.random.default_rng(0)
    shape = (3, 5)
    lp, old, ref_lp, adv, v, ret, old_v, ent = (
      rng.normal(size=shape).astype(np.float32) for _ in range(8)
    )
    mask = rng.random(shape) > 0.3
    for agg in aggregation.AGG_MODES:
      total, aux = losses.ppo_objective(
        lp,
        old,
        adv,
        mask,
        agg_mode=agg,
        advantage_norm='minibatch',
        entropy=ent,
        ent_coef=0.1,
        values=v,
        returns=ret,
        old_values=old_v,
        vf_coef=0.5,
        vf_clip=0.2,
        ref_log_probs=ref_lp,
        kl_coef=0.3,
      )
      white = ops.masked_whiten(adv, mask, unbiased=False)
      pg, _ = losses.ppo_policy_loss(lp, old, white, mask, agg_mode=agg)
      vl = losses.value_loss(v, ret, mask, old_values=old_v, clip_eps=0.2, agg_mode=agg)
      h = aggregation.aggregate(np.where(mask, ent, 0.0), mask, agg)
      kl = aggregation.aggregate(kl_lib.kl_k3(lp, ref_lp, mask), mask, agg)
      np.testing.assert_allclose(total, pg + 0.5 * vl - 0.1 * h + 0.3 * kl, rtol=1e-5)
      for key, want in (('pg_loss', pg), ('value_loss', vl), ('entropy', h), ('kl_ref', kl)):
        np.testing.assert_allclose(aux[key], want, rtol=1e-5)
    base, aux = losses.ppo_objective(lp, old, adv, mask)
    np.testing.assert_allclose(base, losses.ppo_policy_loss(lp, old, adv, mask)[0])
    self.assertNotIn('value_loss', aux)
    with self.assertRaisesRegex(ValueError, 'advantage_norm'):
      losses.ppo_objective(lp, old, adv, mask, advantage_norm='batch')
    with self.assertRaisesRegex(ValueError, 'entropy'):
      losses.ppo_objective(lp, old, adv, mask, ent_coef=0.1)


if __name__ == '__main__':
  absltest.main()
