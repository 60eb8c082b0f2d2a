"""experiments/rbis_gridworld: one trial vs a NumPy loop, the curve, and the smoke run."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import rbis_gridworld as config_module
from experiments import rbis_gridworld as experiment
from jaxca import envs
from jaxca import rbis_protocol
from tests.reference import traces as ref


def _small_config():
  c = config_module.get_config('smoke')
  c.timesteps = 800
  c.chunk_steps = 100
  c.window = 16  # shorter than the early random episodes: exercises eviction
  return c


@pytest.mark.parametrize('method', ['truncated_is', 'rbis'])
def test_trial_matches_numpy_loop(method):
  """Chunked, windowed JAX trial == plain per-step NumPy loop (same uniforms, live Q)."""
  cfg = _small_config()
  env = envs.make(cfg.env)
  init, chunk = rbis_protocol.make_trial_fns(env, cfg, method)
  key = jax.random.key(7)
  lam, alpha = 0.8, 0.7
  trial = init(key, lam, alpha)
  q0 = np.asarray(trial.q)
  run_chunk = jax.jit(chunk)
  xs, ys = [], []
  num_chunks = -(-(cfg.timesteps + cfg.max_episode_len + 2) // cfg.chunk_steps)
  for c in range(num_chunks):
    trial, (x, y, valid) = run_chunk(trial, jnp.int32(c * cfg.chunk_steps), key, lam, alpha)
    xs += list(np.asarray(x)[np.asarray(valid)])
    ys += list(np.asarray(y)[np.asarray(valid)])
  assert bool(trial.finished)

  _, act_key, eval_key = jax.random.split(key, 3)
  total = num_chunks * cfg.chunk_steps
  uniforms = np.asarray(
    jax.vmap(lambda t: jax.random.uniform(jax.random.fold_in(act_key, t)))(jnp.arange(total))
  )
  tables = tuple(np.asarray(a) for a in (env.next_state, env.reward, env.terminal))
  tables += (int(env.start_state),)
  _, ends, snaps = ref.control_trial(
    tables,
    q0,
    uniforms,
    method=method,
    lambda_=lam,
    alpha=alpha,
    gamma=cfg.gamma,
    behaviour_eps=cfg.behaviour_eps,
    explore_eps=cfg.explore_eps,
    explore_episodes=cfg.explore_episodes,
    target_eps=cfg.target_eps,
    window=cfg.window,
  )
  # The official stopping rule: the first episode end after `timesteps` (ends are never
  # later than the cap here; asserted).
  stop = next(i for i, t in enumerate(ends) if t > cfg.timesteps)
  assert ends[stop] <= cfg.timesteps + cfg.max_episode_len + 1
  assert len(ends) > 5, ends  # several episodes, so the test is not vacuous
  assert xs == ends[: stop + 1]
  eval_state = tables[3]
  want_ys = []
  for j, q in enumerate(snaps[: stop + 1]):
    us = np.asarray(jax.random.uniform(jax.random.fold_in(eval_key, j), (cfg.max_episode_len + 1,)))
    ret, eval_state = ref.eval_episode(tables, q, eval_state, us, cfg.eval_eps, cfg.gamma)
    want_ys.append(ret)
  np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)


def test_smoothed_curve_matches_official_semantics():
  rng = np.random.default_rng(0)
  timesteps = 300
  for _ in range(3):
    gaps = rng.integers(1, 40, 60)
    xs = np.concatenate([[0], np.cumsum(gaps)]).astype(np.int32)
    last = np.searchsorted(xs, timesteps, side='right')  # first x > timesteps
    xs = xs[: last + 1]
    ys = np.concatenate([[0.0], rng.random(len(xs) - 1)]).astype(np.float32)
    want = ref.smoothed_curve(list(zip(xs.tolist(), ys.tolist())), timesteps, window=7)
    pad = 10
    got = rbis_protocol.smoothed_curve(
      jnp.asarray(np.pad(xs, (0, pad))), jnp.asarray(np.pad(ys, (0, pad))), len(xs), timesteps, 7
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_smoke_run_writes_results(tmp_path):
  cfg = config_module.get_config('smoke')
  cfg.checkpoint_every = 2
  rows = experiment.run(cfg, str(tmp_path))
  with open(tmp_path / 'rbis_gridworld.csv') as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == ['method', 'lambda', 'alpha', 'auc_mean', 'auc_ci95', 'num_seeds']
  assert len(table) == len(cfg.methods) * len(cfg.lambdas) == len(rows)
  for name in (
    'rbis_gridworld.md',
    'rbis_gridworld_lambda_sweep.png',
    'rbis_gridworld_curves.png',
    'rbis_gridworld_curves.npz',
    'rbis_gridworld.json',
  ):
    assert os.path.getsize(tmp_path / name) > 0
  assert not os.path.exists(tmp_path / experiment.CHECKPOINT)  # removed after success
  # lambda = 0: every method is one-step expected SARSA with the same step size and seeds.
  at_zero = {r['method']: float(r['auc_mean']) for r in table if float(r['lambda']) == 0.0}
  assert len(set(at_zero.values())) == 1, at_zero
  for r in table:
    assert 0.0 <= float(r['auc_mean']) <= (cfg.timesteps + 1) * cfg.gamma**6
