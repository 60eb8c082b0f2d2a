"""credit.group_relative vs a NumPy loop over groups; layouts; degenerate groups."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from tests.reference import credit as ref

P, G = 4, 5


def _inputs(seed):
  rng = np.random.default_rng(seed)
  s = rng.normal(size=(P, G)).astype(np.float32)
  valid = rng.random((P, G)) > 0.2
  valid[0] = False  # no valid member
  valid[1] = [True, False, False, False, False]  # a single valid member
  s[2] = 0.3  # all-equal group (0.3 is not exactly representable)
  valid[2] = True
  return s, valid


class GroupRelativeTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(mode=('grpo', 'dr_grpo', 'rloo'), layout=('contiguous', 'ids'))
  def test_matches_reference(self, mode, layout):
    s, valid = _inputs(0)
    ids = np.repeat(np.arange(P), G)
    want = ref.group_relative(s.ravel(), ids, mode, valid=valid.ravel()).reshape(P, G)
    if layout == 'contiguous':
      got = self.variant(lambda x, v: credit.group_relative(x, mode, valid=v))(s, valid)
    else:
      perm = np.random.default_rng(1).permutation(P * G)
      fn = self.variant(
        lambda x, i, v: credit.group_relative(x, mode, group_ids=i, num_groups=P, valid=v)
      )
      got_perm = fn(s.ravel()[perm], ids[perm], valid.ravel()[perm])
      got = np.empty(P * G, np.float32)
      got[perm] = got_perm
      got = got.reshape(P, G)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Degenerate groups: exactly 0, never NaN.
    np.testing.assert_array_equal(np.asarray(got)[:3], 0.0)

  @hypothesis.settings(max_examples=10, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**16))
  def test_shuffled_ids_equal_contiguous_layout(self, seed):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(P, G)).astype(np.float32)
    valid = rng.random((P, G)) > 0.3
    perm = rng.permutation(P * G)
    ids = np.repeat(np.arange(P), G)
    for mode in credit.group.MODES:
      a = _CONTIG(s, valid, mode)
      b = np.empty(P * G, np.float32)
      b[perm] = _BY_IDS(s.ravel()[perm], ids[perm], valid.ravel()[perm], mode)
      np.testing.assert_allclose(b.reshape(P, G), a, rtol=1e-5, atol=1e-6)

  def test_all_equal_group_is_exactly_zero_for_many_values(self):
    vals = np.array([0.1, 0.3, 1e-7, 123.456, -7.77, 1e6 + 0.1], np.float32)
    s = np.repeat(vals[:, None], 7, axis=1)
    for mode in credit.group.MODES:
      np.testing.assert_array_equal(credit.group_relative(s, mode), 0.0)

  def test_low_variance_group_is_accurate(self):
    # Large offset, tiny spread: E[x^2]-E[x]^2 would cancel catastrophically.
    s = (1000.0 + np.array([0.0, 1.0, 2.0, 3.0]) * 1e-3).astype(np.float32)
    got = credit.group_relative(s, 'grpo', eps=0.0)
    want = ref.group_relative(s, np.zeros(4, int), 'grpo', eps=0.0)
    np.testing.assert_allclose(got, want, rtol=1e-2)

  def test_extra_leading_axes_and_vmap(self):
    s = np.random.default_rng(2).normal(size=(2, 3, G)).astype(np.float32)
    got = credit.group_relative(s, 'grpo')
    mapped = jax.vmap(lambda x: credit.group_relative(x, 'grpo'))(s)
    np.testing.assert_allclose(got, mapped, rtol=1e-6)
    want = ref.group_relative(s.ravel(), np.repeat(np.arange(6), G), 'grpo').reshape(s.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_gradients_finite_with_degenerate_groups(self):
    s, valid = _inputs(3)
    for layout in ('contiguous', 'ids'):
      for mode in credit.group.MODES:
        if layout == 'contiguous':
          f = lambda x: jnp.sum(credit.group_relative(x, mode, valid=valid) ** 2)  # noqa: E731
          g = jax.grad(f)(s)
        else:
          ids = np.repeat(np.arange(P), G)
          f = lambda x: jnp.sum(  # noqa: E731
            credit.group_relative(x, mode, group_ids=ids, num_groups=P, valid=valid.ravel()) ** 2
          )
          g = jax.grad(f)(s.ravel()).reshape(P, G)
        self.assertTrue(np.all(np.isfinite(g)), (layout, mode))
        np.testing.assert_array_equal(np.asarray(g)[~valid], 0.0)

  def test_bad_inputs_name_the_argument(self):
    s = np.zeros((2, G), np.float32)
    with self.assertRaisesRegex(ValueError, "'grpo'"):
      credit.group_relative(s, 'ppo')
    with self.assertRaisesRegex(TypeError, '`valid`'):
      credit.group_relative(s, valid=np.ones((2, G), np.float32))
    with self.assertRaisesRegex(ValueError, '`valid`'):
      credit.group_relative(s, valid=np.ones((2, G + 1), bool))
    with self.assertRaisesRegex(ValueError, '`group_ids`'):
      credit.group_relative(s.ravel(), group_ids=np.zeros(3, np.int32), num_groups=2)
    with self.assertRaisesRegex(TypeError, '`num_groups`'):
      credit.group_relative(s.ravel(), group_ids=np.zeros(2 * G, np.int32))
    with self.assertRaisesRegex(ValueError, '`scores`'):
      credit.group_relative(s, group_ids=np.zeros(2 * G, np.int32), num_groups=2)
    with self.assertRaisesRegex(TypeError, '`group_ids`'):
      credit.group_relative(s.ravel(), group_ids=np.zeros(2 * G, np.float32), num_groups=2)


@jax.jit
def _contig_all(s, valid):
  return {m: credit.group_relative(s, m, valid=valid) for m in credit.group.MODES}


def _CONTIG(s, valid, mode):  # noqa: N802
  return _contig_all(s, valid)[mode]


_BY_IDS_ALL = jax.jit(
  lambda s, i, v: {
    m: credit.group_relative(s, m, group_ids=i, num_groups=P, valid=v) for m in credit.group.MODES
  }
)


def _BY_IDS(s, ids, valid, mode):  # noqa: N802
  return _BY_IDS_ALL(s, ids, valid)[mode]


if __name__ == '__main__':
  absltest.main()
