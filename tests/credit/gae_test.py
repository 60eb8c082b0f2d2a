"""credit.gae vs the NumPy loop reference, rlax, and its defining properties."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import rlax

from jaxca import credit
from jaxca import testing
from tests.reference import credit as ref

T = 7
_GAE_JIT = jax.jit(credit.gae)


def _ref_batched(args):
  """Applies the 1-D reference row by row over any leading axes."""
  shape = args['rewards'].shape
  flat = {k: np.reshape(v, (-1, T)) if np.ndim(v) == len(shape) else v for k, v in args.items()}
  boot = np.reshape(args['bootstrap_value'], (-1,))
  rows = []
  for i in range(flat['rewards'].shape[0]):
    lam = flat['lambda_'][i] if np.ndim(args['lambda_']) else args['lambda_']
    rows.append(
      ref.gae(
        flat['rewards'][i],
        flat['values'][i],
        flat['discounts'][i],
        boot[i],
        lam,
        flat['mask'][i] if args.get('mask') is not None else None,
      )
    )
  adv = np.stack([r[0] for r in rows]).reshape(shape)
  ret = np.stack([r[1] for r in rows]).reshape(shape)
  return adv, ret


class GaeTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ('single_nomask', (T,), 'none', False),
    ('batch_mixed_mask', (3, T), 'mixed', False),
    ('batch_suffix_per_step_lambda', (3, T), 'suffix', True),
    ('two_batch_axes_prefix', (2, 3, T), 'prefix', True),
    ('two_batch_axes_random_nomaskarg', (2, 3, T), None, True),
  )
  def test_matches_reference(self, shape, mask_kind, per_step_lambda):
    args = testing.random_gae_inputs(
      0, shape, mask_kind=mask_kind or 'none', per_step_lambda=per_step_lambda
    )
    if mask_kind is None:
      args['mask'] = None
    adv, ret = self.variant(credit.gae)(**args)
    want_adv, want_ret = _ref_batched(args)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)
    if args['mask'] is not None:
      np.testing.assert_array_equal(np.asarray(adv)[~args['mask']], 0.0)
      np.testing.assert_array_equal(np.asarray(ret)[~args['mask']], 0.0)

  @parameterized.parameters(False, True)
  def test_equals_vmapped_rlax(self, per_step_lambda):
    # Pins the convention mapping: rlax values = [V_0..V_{T-1}, bootstrap].
    a = testing.random_gae_inputs(1, (4, T), mask_kind='none', per_step_lambda=per_step_lambda)
    values_rlax = np.concatenate([a['values'], a['bootstrap_value'][:, None]], axis=1)
    lam_axis = 0 if per_step_lambda else None
    want = jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(0, 0, lam_axis, 0))(
      a['rewards'], a['discounts'], a['lambda_'], values_rlax
    )
    adv, _ = credit.gae(**{**a, 'mask': None})
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
    # ... and the NumPy loop written in rlax's form agrees with ours.
    for i in range(4):
      np.testing.assert_allclose(
        ref.gae_rlax_form(
          a['rewards'][i],
          a['discounts'][i],
          a['lambda_'][i] if per_step_lambda else a['lambda_'],
          values_rlax[i],
        ),
        ref.gae(
          a['rewards'][i],
          a['values'][i],
          a['discounts'][i],
          a['bootstrap_value'][i],
          a['lambda_'][i] if per_step_lambda else a['lambda_'],
        )[0],
        rtol=1e-12,
      )

  def test_lambda_zero_gives_td_errors(self):
    a = testing.random_gae_inputs(2, (3, T), mask_kind='none')
    adv, ret = credit.gae(**{**a, 'lambda_': 0.0, 'mask': None})
    next_v = np.concatenate([a['values'][:, 1:], a['bootstrap_value'][:, None]], 1)
    td = a['rewards'] + a['discounts'] * next_v - a['values']
    np.testing.assert_allclose(adv, td, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, td + a['values'], rtol=1e-5, atol=1e-6)

  def test_lambda_one_gives_return_minus_value(self):
    a = testing.random_gae_inputs(3, (3, T), mask_kind='mixed')
    adv, _ = credit.gae(**{**a, 'lambda_': 1.0})
    g = credit.discounted_returns(a['rewards'], a['discounts'], a['bootstrap_value'], a['mask'])
    np.testing.assert_allclose(adv, np.where(a['mask'], g - a['values'], 0.0), atol=1e-5)

  @hypothesis.settings(max_examples=15, deadline=None)
  @hypothesis.given(
    seed=st.integers(0, 2**16),
    positions=st.lists(st.integers(0, T), min_size=4, max_size=4),
  )
  def test_masked_steps_are_transparent(self, seed, positions):
    a = testing.random_gae_inputs(seed, (T,), mask_kind='none', per_step_lambda=True)
    a.pop('mask')
    base_adv, base_ret = _GAE_JIT(**a, mask=np.ones(T, bool))
    keys = ('rewards', 'values', 'discounts', 'lambda_')
    padded, mask = testing.insert_masked_steps(seed + 1, a, sorted(positions), keys)
    adv, ret = _GAE_JIT(**padded)  # fixed padded length: compiled once
    np.testing.assert_allclose(np.asarray(adv)[mask], base_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret)[mask], base_ret, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(adv)[~mask], 0.0)
    np.testing.assert_array_equal(np.asarray(ret)[~mask], 0.0)

  def test_splitting_at_a_termination_changes_nothing(self):
    a = testing.random_gae_inputs(4, (T,), mask_kind='random', per_step_lambda=True)
    k = 3
    a['discounts'][k] = 0.0
    full = credit.gae(**a)
    head = {n: (v[: k + 1] if np.ndim(v) else v) for n, v in a.items() if n != 'bootstrap_value'}
    tail = {n: (v[k + 1 :] if np.ndim(v) else v) for n, v in a.items() if n != 'bootstrap_value'}
    h = credit.gae(**head, bootstrap_value=np.float32(123.0))  # ignored: d_k = 0
    t = credit.gae(**tail, bootstrap_value=a['bootstrap_value'])
    for i in range(2):
      np.testing.assert_allclose(full[i], np.concatenate([h[i], t[i]]), rtol=1e-6, atol=1e-6)

  def test_vmap_equals_batched_and_lambda_sweep(self):
    a = testing.random_gae_inputs(5, (3, T), mask_kind='mixed')
    batched = credit.gae(**a)
    mapped = jax.vmap(credit.gae, in_axes=(0, 0, 0, 0, None, 0))(
      a['rewards'], a['values'], a['discounts'], a['bootstrap_value'], a['lambda_'], a['mask']
    )
    chex.assert_trees_all_close(batched, mapped, rtol=1e-6, atol=1e-6)
    lams = np.array([0.0, 0.5, 1.0], np.float32)
    sweep = jax.jit(jax.vmap(lambda lam: credit.gae(**{**a, 'lambda_': lam})[0]))(lams)
    for i, lam in enumerate(lams):
      np.testing.assert_allclose(sweep[i], _ref_batched({**a, 'lambda_': lam})[0], atol=1e-5)

  def test_gradients_finite_with_fully_masked_rows(self):
    a = testing.random_gae_inputs(6, (3, T), mask_kind='mixed')
    self.assertFalse(a['mask'][0].any())

    def loss(v, r):
      adv, ret = credit.gae(**{**a, 'values': v, 'rewards': r})
      return jnp.sum(adv**2) + jnp.sum(ret**2)

    gv, gr = jax.grad(loss, argnums=(0, 1))(a['values'], a['rewards'])
    self.assertTrue(np.all(np.isfinite(gv)) and np.all(np.isfinite(gr)))
    np.testing.assert_array_equal(np.asarray(gr)[~a['mask']], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ('single_nomask', (T,), 'none', False, False),
    ('batch_mixed_mask', (3, T), 'mixed', False, True),
    ('batch_random_mask_per_step_lambda', (3, T), 'random', True, True),
    ('two_batch_axes_suffix', (2, 3, T), 'suffix', False, True),
    ('two_batch_axes_nomaskarg_per_step', (2, 3, T), 'none', True, False),
  )
  def test_time_major_matches_reference(self, shape, mask_kind, per_step_lambda, pass_mask):
    # Time-major inputs are the batch-major ones with the time axis moved to the front; the
    # outputs must be the reference (computed batch-major) moved the same way.
    a = testing.random_gae_inputs(30, shape, mask_kind=mask_kind, per_step_lambda=per_step_lambda)
    if not pass_mask:
      a['mask'] = None
    want_adv, want_ret = _ref_batched(a)
    tm = lambda x: x if x is None or np.ndim(x) < len(shape) else np.moveaxis(x, -1, 0)  # noqa: E731
    args = {k: (v if k == 'bootstrap_value' else tm(v)) for k, v in a.items()}
    adv, ret = self.variant(functools.partial(credit.gae, time_major=True))(**args)
    self.assertEqual(adv.shape, (T,) + shape[:-1])
    np.testing.assert_allclose(adv, tm(want_adv), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, tm(want_ret), rtol=1e-5, atol=1e-5)
    batch_major = credit.gae(**a)
    for got, want in zip((adv, ret), batch_major):
      np.testing.assert_allclose(got, tm(np.asarray(want)), rtol=1e-6, atol=1e-6)
    if a['mask'] is not None:
      np.testing.assert_array_equal(np.asarray(adv)[~args['mask']], 0.0)
      np.testing.assert_array_equal(np.asarray(ret)[~args['mask']], 0.0)

  @parameterized.parameters(False, True)
  def test_masked_scalar_lambda_path_with_all_true_mask_equals_unmasked(self, time_major):
    # The folded-mask recurrence (scalar lambda) against the unmasked one, incl. lambda 0 and 1.
    a = testing.random_gae_inputs(31, (5, 40), mask_kind='none')
    if time_major:
      a = {k: (v.T if np.ndim(v) == 2 else v) for k, v in a.items()}
    for lam in (0.0, 0.37, 1.0):
      kw = {**a, 'lambda_': np.float32(lam), 'time_major': time_major}
      masked = credit.gae(**kw)
      unmasked = credit.gae(**{**kw, 'mask': None})
      chex.assert_trees_all_close(masked, unmasked, rtol=1e-5, atol=1e-5)

  def test_time_major_bad_bootstrap_shape(self):
    a = testing.random_gae_inputs(32, (3, T))
    tm = {k: (v.T if np.ndim(v) == 2 else v) for k, v in a.items()}
    with self.assertRaisesRegex(ValueError, '`bootstrap_value`'):
      credit.gae(**{**tm, 'bootstrap_value': np.zeros(T, np.float32)}, time_major=True)

  def test_bad_inputs_name_the_argument(self):
    a = testing.random_gae_inputs(7, (3, T))
    cases = [
      ('values', {'values': a['values'][:, :-1]}),
      ('discounts', {'discounts': a['discounts'][None]}),
      ('bootstrap_value', {'bootstrap_value': a['bootstrap_value'][:-1]}),
      ('bootstrap_value', {'bootstrap_value': np.float32(0.0)}),
      ('lambda_', {'lambda_': np.ones(T, np.float32)}),
      ('mask', {'mask': a['mask'].astype(np.float32)}),
      ('mask', {'mask': a['mask'][:, :-1]}),
      ('rewards', {'rewards': a['rewards'].astype(np.int32)}),
    ]
    for name, change in cases:
      with self.assertRaisesRegex((ValueError, TypeError), f'`{name}`'):
        credit.gae(**{**a, **change})
    with self.assertRaisesRegex(ValueError, '`rewards`'):
      credit.gae(np.float32(1.0), np.float32(1.0), np.float32(1.0), np.float32(0.0), 0.9)

  def test_concrete_lambda_outside_unit_interval_is_rejected(self):
    a = testing.random_gae_inputs(8, (2, T))
    for bad in (1.5, -1.0, float('nan'), np.array([0.5] * (T - 1) + [1.01], np.float32)):
      with self.assertRaisesRegex(ValueError, r'`lambda_` must be in \[0, 1\]'):
        credit.gae(
          **{**a, 'lambda_': np.broadcast_to(bad, a['rewards'].shape) if np.ndim(bad) else bad}
        )
    for ok in (0.0, 1.0):
      credit.gae(**{**a, 'lambda_': ok})
    # A traced lambda cannot be checked and is allowed (sweeps under vmap/jit).
    lams = jnp.array([0.0, 0.5, 1.0])
    out = jax.jit(jax.vmap(lambda lam: credit.gae(**{**a, 'lambda_': lam})[0]))(lams)
    self.assertEqual(out.shape, (3, 2, T))


if __name__ == '__main__':
  absltest.main()
