"""PURE min-form kernels vs NumPy loops; the SPECS §2.1 worked example; gradients."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from jaxca import testing
from tests.reference import credit as ref
from tests.reference import steps as step_ref

T = 6


def _rows(fn, x, mask, *args):
  flat = x.reshape(-1, T)
  m = None if mask is None else mask.reshape(-1, T)
  return np.stack(
    [fn(flat[i], *args, None if m is None else m[i]) for i in range(len(flat))]
  ).reshape(x.shape)


class MinFormTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ('single_nomask', (T,), None),
    ('batch_mixed', (3, T), 'mixed'),
    ('two_axes_random', (2, 3, T), 'random'),
  )
  def test_matches_reference(self, shape, mask_kind):
    rng = np.random.default_rng(0)
    r = rng.uniform(-1, 1, shape).astype(np.float32)
    mask = None if mask_kind is None else testing.random_mask(rng, shape, mask_kind)
    got_ret = self.variant(credit.min_form_returns)(r, mask)
    np.testing.assert_allclose(got_ret, _rows(ref.min_form_returns, r, mask), rtol=1e-6)
    got_rew = self.variant(credit.min_form_rewards)(r, 0.3, mask)
    np.testing.assert_allclose(
      got_rew, _rows(ref.min_form_rewards, r, mask, 0.3), rtol=1e-5, atol=1e-6
    )

  def test_spec_example(self):
    # SPECS.md §2.1: PR=[.9,.8,-.5,.7], T=0.1 -> step returns ~[-.5,-.5,-.5,0];
    # the strict suffix-min gives [-.5,-.5,-.5,.7].
    pr = jnp.array([0.9, 0.8, -0.5, 0.7])
    shaped = credit.min_form_rewards(pr, 0.1)
    returns = credit.discounted_returns(shaped, jnp.ones(4))
    np.testing.assert_allclose(returns, [-0.5, -0.5, -0.5, 0.0], atol=1e-4)
    np.testing.assert_allclose(credit.min_form_returns(pr), [-0.5, -0.5, -0.5, 0.7], rtol=1e-6)

  def test_low_temperature_sum_approaches_min_and_weights_sum_to_one(self):
    rng = np.random.default_rng(1)
    r = rng.uniform(-1, 1, (4, T)).astype(np.float32)
    mask = testing.random_mask(rng, (4, T), 'random')
    mask[:, 2] = True
    s = np.asarray(credit.min_form_rewards(r, 1e-3, mask)).sum(-1)
    np.testing.assert_allclose(s, np.where(mask, r, np.inf).min(-1), atol=1e-4)
    ones = np.asarray(credit.min_form_rewards(np.ones((4, T), np.float32), 0.5, mask)).sum(-1)
    np.testing.assert_allclose(ones, 1.0, rtol=1e-6)

  def test_masked_steps_are_transparent(self):
    rng = np.random.default_rng(2)
    r = rng.uniform(-1, 1, T).astype(np.float32)
    padded, mask = testing.insert_masked_steps(3, {'r': r}, [0, 3, 3, T], ('r',))
    for fn in (credit.min_form_returns, lambda x, m=None: credit.min_form_rewards(x, 0.2, m)):
      got = np.asarray(fn(padded['r'], mask))
      np.testing.assert_allclose(got[mask], fn(r), rtol=1e-5, atol=1e-7)
      np.testing.assert_array_equal(got[~mask], 0.0)

  def test_gradients_finite_with_fully_masked_rows(self):
    rng = np.random.default_rng(4)
    r = rng.uniform(-1, 1, (3, T)).astype(np.float32)
    mask = testing.random_mask(rng, (3, T), 'mixed')
    self.assertFalse(mask[0].any())
    for fn in (
      lambda x: credit.min_form_rewards(x, 0.1, mask),
      lambda x: credit.min_form_returns(x, mask),
    ):
      out, g = jax.value_and_grad(lambda x: jnp.sum(fn(x) ** 2))(r)
      self.assertTrue(np.isfinite(out) and np.all(np.isfinite(g)))
      np.testing.assert_array_equal(np.asarray(g)[~mask], 0.0)
    np.testing.assert_array_equal(credit.min_form_rewards(r, 0.1, mask)[0], 0.0)

  def test_vmap_over_temperature(self):
    r = np.random.default_rng(5).uniform(-1, 1, (2, T)).astype(np.float32)
    temps = np.array([0.1, 1.0], np.float32)
    got = jax.vmap(lambda t: credit.min_form_rewards(r, t))(temps)
    for i, t in enumerate(temps):
      np.testing.assert_allclose(got[i], _rows(ref.min_form_rewards, r, None, t), atol=1e-6)

  def test_bad_inputs_name_the_argument(self):
    r = np.zeros((2, T), np.float32)
    with self.assertRaisesRegex(TypeError, '`mask`'):
      credit.min_form_returns(r, np.ones((2, T), np.float32))
    with self.assertRaisesRegex(ValueError, '`mask`'):
      credit.min_form_rewards(r, 0.1, np.ones((2, T + 1), bool))
    with self.assertRaisesRegex(ValueError, '`temperature`'):
      credit.min_form_rewards(r, np.ones(2, np.float32))
    with self.assertRaisesRegex(TypeError, '`rewards`'):
      credit.min_form_returns(np.zeros((2, T), np.int32))


class PureNoStepRowTest(chex.TestCase):
  """A row with no step at all: NaN in PURE's code, 0 in jaxca (README conventions table)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_row_with_no_step_gives_zero_where_pure_gives_nan(self):
    rng = np.random.default_rng(6)
    scores = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
    valid = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]], bool)  # row 2: no step
    n_steps = valid.sum(-1).astype(np.float64)
    ids = np.zeros(4, np.int32)  # one group of 4
    # PURE's soft-min weights: a softmax over a row of -inf, NaN; jaxca: 0.
    official_soft = step_ref.pure_official_softmin(scores.astype(np.float64), valid, 0.1)
    self.assertTrue(np.all(np.isnan(official_soft[2])))
    shaped = np.asarray(self.variant(credit.min_form_rewards)(scores, 0.1, valid), np.float64)
    np.testing.assert_array_equal(shaped[2], 0.0)
    np.testing.assert_allclose(shaped[valid], official_soft[valid], rtol=1e-5, atol=1e-7)
    # PURE's step baseline divides the row's outcome by its 0 steps: NaN, which reaches every
    # row of its group through the leave-one-out baseline.
    official = step_ref.pure_official_step_baseline(shaped, valid, n_steps, 4)
    self.assertTrue(np.all(np.isnan(official[valid])))
    fn = self.variant(
      lambda rv: credit.pure_baseline(
        shaped, valid, np.ones((4, 3)), n_steps, ids, 1, 'step', row_valid=rv
      )
    )
    # Default `row_valid` (rows with a step): the row is left out of the statistics, output 0;
    # the others get PURE's baseline over the rest of the group.
    got = np.asarray(fn(None))
    np.testing.assert_array_equal(got[2], 0.0)
    keep = [0, 1, 3]
    want = step_ref.pure_official_step_baseline(shaped[keep], valid[keep], n_steps[keep], 3)
    np.testing.assert_allclose(got[keep], want, rtol=1e-5, atol=1e-6)
    # `row_valid` True (the `pure` stage: rows with tokens): its reward per step counts as 0.
    got = np.asarray(fn(np.ones(4, bool)))
    np.testing.assert_array_equal(got[2], 0.0)
    want = step_ref.pure_official_step_baseline(shaped, valid, np.maximum(n_steps, 1), 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  absltest.main()
