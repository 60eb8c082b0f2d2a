"""credit.discounted_returns vs the NumPy loop reference and properties."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from jaxca import testing
from tests.reference import credit as ref

T = 7


def _ref(a, mask):
  shape = a['rewards'].shape
  r = a['rewards'].reshape(-1, T)
  d = a['discounts'].reshape(-1, T)
  b = np.broadcast_to(a['bootstrap_value'], shape[:-1]).reshape(-1)
  m = None if mask is None else mask.reshape(-1, T)
  rows = [
    ref.discounted_returns(r[i], d[i], b[i], None if m is None else m[i]) for i in range(len(r))
  ]
  return np.stack(rows).reshape(shape)


class DiscountedReturnsTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ('single_nomask', (T,), None),
    ('batch_mixed', (3, T), 'mixed'),
    ('two_axes_suffix', (2, 3, T), 'suffix'),
  )
  def test_matches_reference(self, shape, mask_kind):
    a = testing.random_gae_inputs(0, shape, mask_kind=mask_kind or 'none')
    mask = None if mask_kind is None else a['mask']
    got = self.variant(credit.discounted_returns)(
      a['rewards'], a['discounts'], a['bootstrap_value'], mask
    )
    np.testing.assert_allclose(got, _ref(a, mask), rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ('single_nomask', (T,), None),
    ('batch_mixed', (3, T), 'mixed'),
    ('two_axes_random', (2, 3, T), 'random'),
  )
  def test_time_major_matches_reference(self, shape, mask_kind):
    rng = np.random.default_rng(40)
    a = dict(
      rewards=rng.normal(size=shape).astype(np.float32),
      discounts=(0.9 * (rng.random(shape) > 0.2)).astype(np.float32),
      bootstrap_value=rng.normal(size=shape[:-1]).astype(np.float32),
    )
    mask = None if mask_kind is None else testing.random_mask(rng, shape, mask_kind)
    tm = lambda x: None if x is None else np.moveaxis(x, -1, 0)  # noqa: E731
    fn = self.variant(lambda r, d, b, m: credit.discounted_returns(r, d, b, m, time_major=True))
    got = fn(tm(a['rewards']), tm(a['discounts']), a['bootstrap_value'], tm(mask))
    np.testing.assert_allclose(got, tm(_ref(a, mask)), rtol=1e-5, atol=1e-5)
    batch_major = credit.discounted_returns(**a, mask=mask)
    np.testing.assert_allclose(got, tm(np.asarray(batch_major)), rtol=1e-6, atol=1e-6)
    # A scalar bootstrap broadcasts over the batch axes (after the time axis).
    got0 = credit.discounted_returns(tm(a['rewards']), tm(a['discounts']), time_major=True)
    want0 = _ref({**a, 'bootstrap_value': np.float32(0.0)}, None)
    np.testing.assert_allclose(got0, tm(want0), rtol=1e-5, atol=1e-5)

  def test_scalar_bootstrap_default_and_vmap(self):
    a = testing.random_gae_inputs(1, (3, T), mask_kind='mixed')
    got = credit.discounted_returns(a['rewards'], a['discounts'], mask=a['mask'])
    np.testing.assert_allclose(got, _ref({**a, 'bootstrap_value': 0.0}, a['mask']), atol=1e-5)
    mapped = jax.vmap(credit.discounted_returns)(
      a['rewards'], a['discounts'], a['bootstrap_value'], a['mask']
    )
    batched = credit.discounted_returns(
      a['rewards'], a['discounts'], a['bootstrap_value'], a['mask']
    )
    np.testing.assert_allclose(mapped, batched, rtol=1e-6, atol=1e-6)

  def test_masked_steps_are_transparent(self):
    a = testing.random_gae_inputs(2, (T,), mask_kind='none')
    base = credit.discounted_returns(a['rewards'], a['discounts'], a['bootstrap_value'])
    padded, mask = testing.insert_masked_steps(3, a, [0, 2, 2, T], ('rewards', 'discounts'))
    got = credit.discounted_returns(
      padded['rewards'], padded['discounts'], a['bootstrap_value'], mask
    )
    np.testing.assert_allclose(np.asarray(got)[mask], base, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got)[~mask], 0.0)

  def test_gradients_finite_with_fully_masked_row(self):
    a = testing.random_gae_inputs(4, (3, T), mask_kind='mixed')
    g = jax.grad(
      lambda r: jnp.sum(credit.discounted_returns(r, a['discounts'], 0.0, a['mask']) ** 2)
    )(a['rewards'])
    self.assertTrue(np.all(np.isfinite(g)))
    np.testing.assert_array_equal(np.asarray(g)[~a['mask']], 0.0)

  def test_bad_inputs_name_the_argument(self):
    r = np.zeros((2, T), np.float32)
    with self.assertRaisesRegex(ValueError, '`discounts`'):
      credit.discounted_returns(r, np.zeros((2, T - 1), np.float32))
    with self.assertRaisesRegex(ValueError, '`bootstrap_value`'):
      credit.discounted_returns(r, r, np.zeros(3, np.float32))
    with self.assertRaisesRegex(TypeError, '`mask`'):
      credit.discounted_returns(r, r, 0.0, np.ones((2, T), np.int32))


if __name__ == '__main__':
  absltest.main()
