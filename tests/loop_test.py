"""jaxca.loop.run_arm's budgets with a fake phased step (no model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxca import loop
from jaxca.lm import host as host_lib


def _arm(tokens_per_iter):
  def step(state, batch, key):
    del batch, key
    timing = host_lib.Timing(0.0, 0.0, 0.0, 0.0)
    return dict(state, n=state['n'] + 1), {'loss': 0.0}, {}, tokens_per_iter, timing

  step.compile_s = lambda: 0.0
  return loop.ArmSteps('fake', lambda p, s: {'params': p, 'n': 0}, step, phased=True)


@pytest.mark.parametrize('max_tokens, iters', [(25.0, 3), (30.0, 3), (31.0, 4), (float('inf'), 6)])
def test_max_tokens_stops_after_the_iteration_that_reaches_it(max_tokens, iters):
  train = {'prompts': np.zeros((8, 2), np.int32)}
  records, state, _ = loop.run_arm(
    _arm(10.0), np.zeros(()), 0, train, None, lambda p, b: {'exact_match': 0.0},
    iterations=6, prompts=2, eval_every=1, max_tokens=max_tokens, counters=('policy_tokens',),
  )  # fmt: skip
  assert records[-1]['iteration'] == iters == state['n']
  assert records[-1]['tokens'] == 10.0 * iters


def _toy_update(state, batch, key, hparams):
  noise = jax.random.uniform(key, ())
  params = state['params'] + hparams['lr'] * jnp.mean(batch['x']) + noise
  return dict(params=params, step=state['step'] + 1), {'loss': params, 'noise': noise}


def test_seed_batches_are_a_function_of_seed_and_chunk():
  data = {'x': np.arange(10.0), 'y': -np.arange(10.0)}
  chunks = list(loop.seed_batches(data, ('x',), 3, 7, 2, 4))
  assert len(chunks) == 2 and set(chunks[1]) == {'x'} and chunks[1]['x'].shape == (4, 3)
  for c, chunk in enumerate(chunks):
    idx = np.random.default_rng([7, c]).integers(0, 10, size=(4, 3))
    np.testing.assert_array_equal(chunk['x'], data['x'][idx])


def test_run_seeds_batched_matches_a_loop_over_seeds_and_iterations():
  seeds, per_call, iters = (0, 3), 2, 4
  data = {'x': np.linspace(0.0, 1.0, 6, dtype=np.float32)}
  keys = jnp.stack([jax.random.key(10 + s) for s in seeds])
  hp = {'lr': jnp.float32(0.5)}
  state0 = {'params': jnp.zeros((2,)), 'step': jnp.zeros((2,), jnp.int32)}
  per_seed = [loop.seed_batches(data, ('x',), 2, s, iters // per_call, per_call) for s in seeds]
  state, rows, first = loop.run_seeds_batched(
    loop.seeds_chunk(_toy_update), state0, per_seed, keys, hp, name='a', seeds=seeds,
    iterations=iters, per_call=per_call, eval_every=4, write=lambda it, r: dict(r, step=it),
    run_eval=lambda p: {'p': float(p)}, evaluation0={'p': -1.0},
  )  # fmt: skip
  assert first is not None and [r['iteration'] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
  assert [r['seed'] for r in rows] == [0, 3] * 5 and rows[0]['eval_p'] == -1.0
  for j, s in enumerate(seeds):  # the loop: one seed at a time, one iteration at a time
    st = {'params': jnp.float32(0.0), 'step': jnp.int32(0)}
    mine = [r for r in rows if r['seed'] == s and r['iteration'] > 0]
    batches = [b for c in loop.seed_batches(data, ('x',), 2, s, 2, 2) for b in c['x']]
    for it, b in enumerate(batches, 1):
      st, m = _toy_update(st, {'x': b}, jax.random.fold_in(keys[j], st['step']), hp)
      np.testing.assert_allclose(mine[it - 1]['loss'], float(m['loss']), rtol=1e-6)
      assert ('eval_p' in mine[it - 1]) == (it == 4)
    np.testing.assert_allclose(float(state['params'][j]), float(st['params']), rtol=1e-6)
    np.testing.assert_allclose(mine[-1]['eval_p'], float(st['params']), rtol=1e-6)


def test_run_seeds_batched_stops_on_a_non_finite_loss():
  update = lambda s, b, k, h: (dict(s, step=s['step'] + 1), {'loss': jnp.log(-b['x'][0])})  # noqa: E731
  data = {'x': np.ones(4, np.float32)}
  with pytest.raises(FloatingPointError, match='RL a'):
    loop.run_seeds_batched(
      loop.seeds_chunk(update), {'params': jnp.zeros(1), 'step': jnp.zeros(1, jnp.int32)},
      [loop.seed_batches(data, ('x',), 1, 0, 1, 1)], jnp.stack([jax.random.key(0)]), {},
      name='a', seeds=(0,), iterations=1, per_call=1, eval_every=1,
      run_eval=lambda p: {}, write=lambda it, r: r,
    )  # fmt: skip
