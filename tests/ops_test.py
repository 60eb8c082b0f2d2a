"""jaxca.ops masked reductions vs NumPy on the valid entries."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import ops


def _inputs(seed, shape=(4, 6)):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  mask = rng.random(shape) > 0.4
  mask[0] = False
  mask[1, :2] = True
  return x, mask


class OpsTest(parameterized.TestCase):
  @parameterized.parameters(None, -1, 0)
  def test_reductions_match_numpy(self, axis):
    x, mask = _inputs(0)
    xm = np.ma.masked_array(x.astype(np.float64), ~mask)
    np.testing.assert_allclose(
      ops.masked_sum(x, mask, axis), np.ma.filled(xm.sum(axis), 0.0), rtol=1e-5
    )
    np.testing.assert_allclose(ops.masked_count(mask, axis), mask.sum(axis))
    np.testing.assert_allclose(
      ops.masked_mean(x, mask, axis),
      np.ma.filled(xm.mean(axis), 0.0),
      rtol=1e-5,
      atol=1e-6,
    )
    for unbiased in (False, True):
      want = xm.var(axis, ddof=int(unbiased))
      want = np.ma.filled(want, 0.0)
      np.testing.assert_allclose(
        ops.masked_var(x, mask, axis, unbiased), want, rtol=1e-5, atol=1e-6
      )

  def test_empty_mask_gives_zero(self):
    x = jnp.ones((2, 3))
    m = jnp.zeros((2, 3), bool)
    for f in (ops.masked_sum, ops.masked_mean, ops.masked_var, ops.masked_whiten):
      np.testing.assert_array_equal(f(x, m), 0.0)

  @parameterized.parameters(True, False)
  def test_whiten_matches_verl_formula(self, shift_mean):
    x, mask = _inputs(1)
    v = x[mask].astype(np.float64)
    mean, var = v.mean(), v.var(ddof=1)
    want = (x - mean) / np.sqrt(var + 1e-8) + (0.0 if shift_mean else mean)
    got = ops.masked_whiten(x, mask, shift_mean=shift_mean)
    np.testing.assert_allclose(got, np.where(mask, want, 0.0), rtol=1e-5, atol=1e-5)
    if shift_mean:
      np.testing.assert_allclose(np.asarray(got)[mask].mean(), 0.0, atol=1e-6)
      np.testing.assert_allclose(np.asarray(got)[mask].std(ddof=1), 1.0, rtol=1e-4)

  def test_masked_inf_entries_give_finite_gradients(self):
    x, mask = _inputs(2)
    x = np.where(mask, x, np.inf).astype(np.float32)
    g = jax.grad(lambda y: jnp.sum(ops.masked_whiten(y, mask) * jnp.arange(6.0)[None, :]))(x)
    self.assertTrue(np.all(np.isfinite(g)))
    np.testing.assert_array_equal(np.asarray(g)[~mask], 0.0)


if __name__ == '__main__':
  absltest.main()
