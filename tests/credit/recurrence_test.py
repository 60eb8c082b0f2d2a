"""The blocked reverse recurrence behind credit.gae / credit.discounted_returns.

`_recurrence.reverse_recurrence` solves `_recurrence.DEFAULT_BLOCK` time steps per loop
iteration plus a head of `T % block` steps; these tests cover block sizes that
divide T, that do not, that exceed T, and block 1, for the kernels and their
masked / per-step-lambda paths, against the NumPy loop references.
"""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import rlax

from jaxca import credit
from jaxca import testing
from jaxca.credit import _recurrence
from tests.reference import credit as ref


def _gae_ref(a):
  """The 1-D NumPy reference applied row by row over any leading axes."""
  shape = a['rewards'].shape
  t = shape[-1]
  rows = lambda x: np.reshape(x, (-1, t))  # noqa: E731
  lam = rows(a['lambda_']) if np.ndim(a['lambda_']) else None
  mask = None if a.get('mask') is None else rows(a['mask'])
  boot = np.reshape(a['bootstrap_value'], (-1,))
  outs = [
    ref.gae(
      rows(a['rewards'])[i],
      rows(a['values'])[i],
      rows(a['discounts'])[i],
      boot[i],
      a['lambda_'] if lam is None else lam[i],
      None if mask is None else mask[i],
    )
    for i in range(len(boot))
  ]
  return tuple(np.stack([o[j] for o in outs]).reshape(shape) for j in range(2))


def _patch(test, name, value):
  old = getattr(_recurrence, name)
  setattr(_recurrence, name, value)
  test.addCleanup(setattr, _recurrence, name, old)


class LinearRecurrenceTest(parameterized.TestCase):
  def setUp(self):
    super().setUp()
    _patch(self, 'MIN_BLOCKED_ROWS', 1)  # the blocked path even for these few rows

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
    (1, 16), (5, 3), (16, 16), (37, 1), (37, 4), (37, 16), (64, 16), (37, 64)
  )
  def test_matches_numpy_loop(self, t, block):
    rng = np.random.default_rng(t * 100 + block)
    a = rng.normal(size=(3, t)).astype(np.float32)
    b = (rng.uniform(size=(3, t)) * (rng.uniform(size=(3, t)) > 0.2)).astype(np.float32)
    init = rng.normal(size=3).astype(np.float32)
    got = self.variant(lambda a, b, init: _recurrence.linear_recurrence(a, b, init, block=block))(
      a, b, init
    )
    want = np.stack([ref.discounted_returns(a[i], b[i], init[i]) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Same operations as the one-step-per-iteration time-major scan.
    tm = _recurrence.reverse_linear_scan(a.T, b.T, init).T
    np.testing.assert_allclose(got, tm, rtol=1e-6, atol=1e-6)

  def test_tuple_carry_and_num_outputs(self):
    # Two carries: y1_t = x_t + y1_{t+1}, y2_t = max(x_t, y2_{t+1}); only y1 returned.
    x = np.random.default_rng(0).normal(size=(2, 21)).astype(np.float32)

    def step(cols, ys):
      return cols[0] + ys[0], jnp.maximum(cols[0], ys[1])

    outs = _recurrence.reverse_recurrence(
      step, (x,), (np.zeros(2, np.float32), np.full(2, -np.inf, np.float32)), block=4
    )
    self.assertLen(outs, 1)
    np.testing.assert_allclose(outs[0], np.cumsum(x[:, ::-1], axis=1)[:, ::-1], rtol=1e-5)
    both = _recurrence.reverse_recurrence(
      step, (x,), (np.zeros(2, np.float32), np.full(2, -np.inf, np.float32)), 2, block=4
    )
    np.testing.assert_array_equal(both[1], np.maximum.accumulate(x[:, ::-1], axis=1)[:, ::-1])

  def test_gradient_matches_time_major_scan(self):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 2, 37)).astype(np.float32)
    init = rng.normal(size=2).astype(np.float32)
    w = rng.normal(size=(2, 37)).astype(np.float32)

    def loss_blocked(a, b, init):
      return jnp.sum(w * _recurrence.linear_recurrence(a, b, init, block=16))

    def loss_scan(a, b, init):
      return jnp.sum(w * _recurrence.reverse_linear_scan(a.T, b.T, init).T)

    got = jax.grad(loss_blocked, argnums=(0, 1, 2))(a, b, init)
    want = jax.grad(loss_scan, argnums=(0, 1, 2))(a, b, init)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)

  def test_few_rows_use_the_time_major_scan_with_equal_results(self):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 3, 40)).astype(np.float32)
    init = rng.normal(size=3).astype(np.float32)
    blocked = _recurrence.linear_recurrence(a, b, init)
    _patch(self, 'MIN_BLOCKED_ROWS', 4)
    jaxpr = str(jax.make_jaxpr(_recurrence.linear_recurrence)(a, b, init))
    self.assertIn('scan', jaxpr)
    self.assertNotIn('while', jaxpr)
    np.testing.assert_allclose(_recurrence.linear_recurrence(a, b, init), blocked, rtol=1e-6)

  def test_empty_time_axis_and_bad_block(self):
    z = np.zeros((2, 0), np.float32)
    self.assertEqual(_recurrence.linear_recurrence(z, z, np.zeros(2, np.float32)).shape, (2, 0))
    with self.assertRaisesRegex(ValueError, '`block`'):
      _recurrence.linear_recurrence(np.ones((1, 3)), np.ones((1, 3)), np.zeros(1), block=0)


class BlockedKernelsTest(parameterized.TestCase):
  """credit.gae and credit.discounted_returns at several block sizes (DEFAULT_BLOCK patched)."""

  def setUp(self):
    super().setUp()
    _patch(self, 'MIN_BLOCKED_ROWS', 1)

  def _patch_block(self, block):
    _patch(self, 'DEFAULT_BLOCK', block)

  @parameterized.parameters(
    # (block, shape, mask_kind, per_step_lambda): blocks dividing T, not dividing T, > T, 1.
    (16, (3, 32), None, False),
    (16, (37,), None, True),
    (16, (2, 3, 37), 'mixed', False),
    (16, (2, 3, 37), 'suffix', True),
    (16, (3, 32), 'prefix', False),
    (4, (2, 3, 37), None, False),
    (4, (3, 37), 'random', True),
    (1, (3, 37), None, True),
    (1, (3, 37), 'mixed', False),
    (64, (3, 37), None, False),
    (64, (2, 3, 37), 'mixed', True),
  )
  def test_gae_matches_reference(self, block, shape, mask_kind, per_step_lambda):
    self._patch_block(block)
    a = testing.random_gae_inputs(
      block + len(shape), shape, mask_kind=mask_kind or 'none', per_step_lambda=per_step_lambda
    )
    if mask_kind is None:
      a['mask'] = None
    adv, ret = jax.jit(credit.gae)(**a)  # jit: the trace reads the patched block
    want_adv, want_ret = _gae_ref(a)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)
    if mask_kind is not None:
      np.testing.assert_array_equal(np.asarray(adv)[~a['mask']], 0.0)
      np.testing.assert_array_equal(np.asarray(ret)[~a['mask']], 0.0)

  @parameterized.product(block=(1, 4, 16, 64), mask_kind=(None, 'mixed'))
  def test_discounted_returns_matches_reference(self, block, mask_kind):
    self._patch_block(block)
    shape = (2, 3, 37)
    a = testing.random_gae_inputs(block, shape, mask_kind=mask_kind or 'none')
    mask = None if mask_kind is None else a['mask']
    got = jax.jit(credit.discounted_returns)(
      a['rewards'], a['discounts'], a['bootstrap_value'], mask
    )
    r, d = a['rewards'].reshape(-1, 37), a['discounts'].reshape(-1, 37)
    b = a['bootstrap_value'].reshape(-1)
    m = None if mask is None else mask.reshape(-1, 37)
    want = np.stack(
      [ref.discounted_returns(r[i], d[i], b[i], None if m is None else m[i]) for i in range(6)]
    ).reshape(shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  def test_gae_equals_vmapped_rlax_over_several_blocks(self):
    a = testing.random_gae_inputs(11, (5, 53), mask_kind='none', per_step_lambda=True)
    values_rlax = np.concatenate([a['values'], a['bootstrap_value'][:, None]], axis=1)
    want = jax.vmap(rlax.truncated_generalized_advantage_estimation)(
      a['rewards'], a['discounts'], a['lambda_'], values_rlax
    )
    adv, _ = jax.jit(credit.gae)(**{**a, 'mask': None})
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)

  def test_masked_gradients_finite_over_several_blocks(self):
    a = testing.random_gae_inputs(12, (3, 40), mask_kind='mixed')

    def loss(v, r):
      adv, ret = credit.gae(**{**a, 'values': v, 'rewards': r})
      return jnp.sum(adv**2) + jnp.sum(ret**2)

    gv, gr = jax.jit(jax.grad(loss, argnums=(0, 1)))(a['values'], a['rewards'])
    self.assertTrue(np.all(np.isfinite(gv)) and np.all(np.isfinite(gr)))
    np.testing.assert_array_equal(np.asarray(gr)[~a['mask']], 0.0)
    np.testing.assert_array_equal(np.asarray(gr)[0], 0.0)  # fully masked row


if __name__ == '__main__':
  absltest.main()
