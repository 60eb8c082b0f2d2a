"""jaxca.bench.seeds_batched_vs_sequential: the batched and sequential runs of a toy noisy step
equal a plain NumPy loop seed by seed (structure only: no timing asserts)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxca import bench


def _step(state, batch, key, hparams):
  noise = jax.random.normal(key, state['w'].shape)
  w = state['w'] - hparams['lr'] * (state['w'] - jnp.mean(batch['x'], axis=0) + 0.1 * noise)
  return dict(w=w, step=state['step'] + 1), dict(loss=jnp.sum(w * w))


def test_batched_and_sequential_equal_a_numpy_loop():
  seeds, iterations, dim = 3, 4, 5
  rng = np.random.default_rng(0)
  batches = {'x': rng.normal(size=(seeds, iterations, 2, dim)).astype(np.float32)}
  keys = jax.vmap(jax.random.key)(jnp.arange(seeds))
  state0 = dict(w=np.ones(dim, np.float32), step=np.int32(0))
  hp = dict(lr=jnp.float32(0.5))
  out = bench.seeds_batched_vs_sequential(_step, state0, batches, keys, hp, reps=2)
  for s in range(seeds):  # the reference: a NumPy loop, noise drawn with the same keys
    w = np.ones(dim, np.float32)
    for t in range(iterations):
      noise = np.asarray(jax.random.normal(jax.random.fold_in(keys[s], t + 1), (dim,)))
      w = w - 0.5 * (w - batches['x'][s, t].mean(0) + 0.1 * noise)
    np.testing.assert_allclose(out['final_states']['w'][s], w, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out['final_states']['step'], [iterations] * seeds)
  assert out['max_abs_diff'] < 1e-5
  assert (out['seeds'], out['iterations']) == (seeds, iterations)
  assert out['sequential'].reps == out['batched'].reps == 2
  r = out['speedup']
  assert len(r['timed']) == 2 and 0 < r['min'] <= r['median'] <= r['max']


def test_one_key_per_seed():
  batches = {'x': np.zeros((2, 1, 1, 3), np.float32)}
  keys = jax.vmap(jax.random.key)(jnp.arange(3))
  state0 = dict(w=np.ones(3, np.float32), step=np.int32(0))
  with pytest.raises(ValueError, match='one key per seed'):
    bench.seeds_batched_vs_sequential(_step, state0, batches, keys, dict(lr=0.1), reps=1)


def test_xla_flops_counts_a_matmul():
  """A [m, k] x [k, n] product is 2 m k n floating-point operations."""
  a, b = jnp.ones((8, 16), jnp.float32), jnp.ones((16, 4), jnp.float32)
  assert bench.xla_flops(jax.jit(jnp.matmul), a, b) == pytest.approx(2 * 8 * 16 * 4, rel=0.01)
