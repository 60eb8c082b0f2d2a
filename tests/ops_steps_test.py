"""jaxca.ops.to_steps / to_tokens / step_closers vs NumPy loops."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import numpy as np

from jaxca import ops
from tests.reference import steps as ref

B, T, S = 5, 9, 4


def _inputs(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, T)).astype(np.float32)
  # Sorted step ids with -1 holes and ids >= S (dropped), one row in no step at all.
  ids = np.sort(rng.integers(-1, S + 1, size=(B, T)), axis=-1).astype(np.int32)
  ids[rng.random((B, T)) < 0.15] = -1
  ids[0] = -1
  mask = rng.random((B, T)) > 0.2
  return x, ids, mask


class StepOpsTest(chex.TestCase, parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(reduce=ops.STEP_REDUCTIONS, use_mask=(False, True), seed=(0, 1))
  def test_to_steps_matches_loop(self, reduce, use_mask, seed):
    x, ids, mask = _inputs(seed)
    m = mask if use_mask else None
    got = self.variant(lambda a, b, c: ops.to_steps(a, b, S, reduce, mask=c))(x, ids, m)
    want = np.stack(
      [ref.to_steps(x[b], ids[b], S, reduce, None if m is None else m[b]) for b in range(B)]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_to_tokens_and_closers(self):
    x, ids, _ = _inputs(2)
    y = x[:, :S]
    got = self.variant(lambda a, b: ops.to_tokens(a, b, fill=-7.0))(y, ids)
    want = np.stack([ref.to_tokens(y[b], ids[b], -7.0) for b in range(B)])
    np.testing.assert_allclose(got, want)
    closers = self.variant(lambda b: ops.step_closers(b, S))(ids)
    for b in range(B):
      for s in range(S):
        where = [t for t in range(T) if ids[b, t] == s]
        for t in range(T):
          if ids[b, t] == s:
            self.assertEqual(bool(closers[b, t]), t == max(where))
      self.assertFalse(np.any(np.asarray(closers[b])[(ids[b] < 0) | (ids[b] >= S)]))

  def test_leading_axes_vmap_and_grad(self):
    x, ids, mask = _inputs(3)
    x3, ids3 = x.reshape(1, B, T), ids.reshape(1, B, T)
    np.testing.assert_allclose(ops.to_steps(x3, ids3, S)[0], ops.to_steps(x, ids, S), rtol=1e-6)
    v = jax.vmap(lambda a, b: ops.to_steps(a, b, S, 'mean'))(x, ids)
    np.testing.assert_allclose(v, ops.to_steps(x, ids, S, 'mean'), rtol=1e-6)
    # The round trip sum -> broadcast has gradient = the token's membership count (0 or 1).
    g = jax.grad(lambda a: ops.to_tokens(ops.to_steps(a, ids, S), ids).sum())(x)
    inside = (ids >= 0) & (ids < S)
    counts = np.stack([ref.to_steps(np.ones(T), ids[b], S, 'count') for b in range(B)])
    want = np.where(inside, np.take_along_axis(counts, np.clip(ids, 0, S - 1), -1), 0.0)
    np.testing.assert_allclose(g, want)

  def test_errors(self):
    x, ids, _ = _inputs(0)
    with self.assertRaisesRegex(ValueError, 'reduce'):
      ops.to_steps(x, ids, S, 'median')
    with self.assertRaisesRegex(ValueError, 'step_ids'):
      ops.to_steps(x, ids.astype(np.float32), S)
    with self.assertRaisesRegex(ValueError, 'step_ids'):
      ops.to_tokens(x[:, :S], ids[:2])


if __name__ == '__main__':
  absltest.main()
