"""PPO with credit.gae on a discrete gymnax env, seeds vmapped. Commands: configs/ppo_gymnax.py."""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import tqdm

from jaxca import checkpoint
from jaxca import metrics
from jaxca import ppo
from jaxca import rollout as rollout_lib
from jaxca import train as train_lib
from jaxca.networks import mlp

FLAGS = flags.FLAGS


def define_flags():  # not at import time, so other experiments can import build()
  config_flags.DEFINE_config_file('config', None, 'configs/ppo_gymnax.py[:args]', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Results + checkpoints; a rerun with the same dir resumes.')


def build(config):
  """Composition only: returns (init(key), update(state, key), num_updates, steps_per_update)."""
  env, env_params, num_actions = rollout_lib.make_env(**config.env)
  net = mlp.make_actor_critic(config.network, num_actions=num_actions)
  steps_per_update = config.rollout.num_envs * config.rollout.num_steps
  num_updates = int(config.train.total_timesteps) // steps_per_update
  p = config.ppo
  opt_steps = num_updates * p.num_epochs * p.num_minibatches
  tx = train_lib.make_optimizer(
    dict(config.optim, anneal_steps=opt_steps if config.optim.anneal else 0)
  )
  obs_dim = int(np.prod(env.observation_space(env_params).shape))
  init = ppo.make_init(
    lambda key: net.init(key, jnp.zeros((1, obs_dim), jnp.float32)),
    tx,
    rollout_lib.make_reset(env, env_params, num_envs=config.rollout.num_envs),
  )
  rollout = rollout_lib.make_rollout(env, env_params, net.apply, gamma=p.gamma, **config.rollout)
  update = ppo.make_update_from_config(p, net.apply, rollout, tx)
  return init, update, num_updates, steps_per_update


_FNS = {}  # config JSON -> jitted fns, so a rerun in one process (tests) reuses the compile


def make_train_fns(config):
  """Jitted, seed-vmapped (init_fn(keys), chunk_fn(state, keys)) plus sizes."""
  key = config.to_json_best_effort(sort_keys=True)
  if key not in _FNS:
    _FNS[key] = _make_train_fns(config)
  return _FNS[key]


def _make_train_fns(config):
  init, update, num_updates, steps_per_update = build(config)
  if num_updates % config.train.num_chunks:
    raise ValueError(
      f'train.num_chunks={config.train.num_chunks} must divide the {num_updates} updates.'
    )
  per_chunk = num_updates // config.train.num_chunks

  def run_chunk(state, base_key):
    return jax.lax.scan(lambda s, _: update(s, base_key), state, None, length=per_chunk)

  init_fn = jax.jit(jax.vmap(init))
  chunk_fn = jax.jit(jax.vmap(run_chunk), donate_argnums=0)
  return init_fn, chunk_fn, num_updates, per_chunk, steps_per_update


def train(config, workdir=None):
  """Trains config.num_seeds seeds in lockstep; returns (final state, per-update rows)."""
  init_fn, chunk_fn, num_updates, per_chunk, spu = make_train_fns(config)
  init_keys, loop_keys = jax.random.split(jax.random.key(config.seed), (2, config.num_seeds))
  ckpt, rows = None, []
  if workdir:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'))
    state, step = ckpt.restore_or_init(lambda: init_fn(init_keys))
    step = step or 0
    if step:
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [r for r in map(json.loads, f) if r['update'] <= step]
      logging.info('Resumed from update %d.', step)
  else:
    state, step = init_fn(init_keys), 0
  bar = tqdm.tqdm(total=num_updates, initial=step, unit='upd', disable=not workdir)
  while step < num_updates:
    t0 = time.perf_counter()
    state, chunk_metrics = chunk_fn(state, loop_keys)
    chunk_metrics = jax.device_get(chunk_metrics)  # leaves [S, K]; the only sync point
    logging.log_first_n(logging.INFO, 'First chunk (+compile): %.1f s', 1, time.perf_counter() - t0)
    for k in range(per_chunk):
      values = {n: v[:, k].tolist() for n, v in chunk_metrics.items()}
      rows.append(dict(update=step + k + 1, env_steps=(step + k + 1) * spu, **values))
    step += per_chunk
    bar.update(per_chunk)
    bar.set_postfix(ret=f'{np.mean(chunk_metrics["episode_return"][:, -1]):.1f}')
    if workdir:
      with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in rows)
      ckpt.maybe_save(step, state)
  bar.close()
  if workdir:
    ckpt.close()
    write_results(workdir, rows)
  return state, rows


def write_results(workdir, rows):
  """final.json / final.csv (final return per seed) and curve.png (mean +- std over seeds)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  final = rows[-1]['episode_return']
  summary = dict(env_steps=rows[-1]['env_steps'], final_return_per_seed=final, num_seeds=len(final),
                 mean=float(np.mean(final)), std=float(np.std(final)))  # fmt: skip
  with open(os.path.join(workdir, 'final.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, 'final.csv'), 'w') as f:
    f.write('seed,final_return\n' + ''.join(f'{i},{r}\n' for i, r in enumerate(final)))
  x = np.array([r['env_steps'] for r in rows])
  y = np.array([r['episode_return'] for r in rows])  # [U, S]
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(x, y.mean(1), label=f'mean over {y.shape[1]} seeds')
  ax.fill_between(x, y.mean(1) - y.std(1), y.mean(1) + y.std(1), alpha=0.3, label='+- 1 std')
  ax.set(xlabel='environment steps', ylabel='episode return', title='PPO (jaxca) on gymnax')
  ax.legend()
  fig.savefig(os.path.join(workdir, 'curve.png'), dpi=100, bbox_inches='tight')
  plt.close(fig)
  logging.info('Final return %.1f +- %.1f (%d seeds)', summary['mean'], summary['std'], len(final))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  jax.config.update('jax_threefry_partitionable', True)
  logging.info('Config:\n%s', FLAGS.config)
  if FLAGS.workdir:
    metrics.write_config(FLAGS.workdir, FLAGS.config)
  train(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
