"""PPO with credit.gae on a discrete gymnax env, seeds vmapped. Commands: configs/ppo_gymnax.py.

Where runs write, resume checks (no config key may change on resume: the number of
updates sets the learning-rate schedule), errors and the closing summary: `jaxca.runs`.
"""

import json
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxca import checkpoint
from jaxca import metrics
from jaxca import ppo
from jaxca import rollout as rollout_lib
from jaxca import runs
from jaxca import train as train_lib
from jaxca.networks import mlp

FLAGS = flags.FLAGS


NAME = 'ppo_gymnax'
SAFE_KEYS = ()  # total_timesteps sets the annealed lr schedule; num_chunks the checkpoints


def define_flags():  # not at import time, so other experiments can import build()
  runs.define_flags(NAME)


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
  ppo.validate_config(config)
  init, update, num_updates, steps_per_update = build(config)
  per_chunk = num_updates // config.train.num_chunks

  def run_chunk(state, base_key):
    return jax.lax.scan(lambda s, _: update(s, base_key), state, None, length=per_chunk)

  # Vmapped init is safe: `networks.mlp.orthogonal` runs its QR as a loop over seeds (a
  # batched QR deadlocks jaxlib 0.10.2's CPU worker pool; BUILD_NOTES.md > Gotchas).
  init_fn = jax.jit(jax.vmap(init))
  chunk_fn = jax.jit(jax.vmap(run_chunk), donate_argnums=0)
  return init_fn, chunk_fn, num_updates, per_chunk, steps_per_update


def train(config, workdir=None):
  """Trains config.num_seeds seeds in lockstep; returns (final state, per-update rows)."""
  init_fn, chunk_fn, num_updates, per_chunk, spu = make_train_fns(config)
  init_keys, loop_keys = jax.random.split(jax.random.key(config.seed), (2, config.num_seeds))
  ckpt, step = None, 0
  if workdir:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'))
    state, step = ckpt.restore_or_init(lambda: init_fn(init_keys))
    step = step or 0
    if 0 < step < num_updates:
      runs.note(f'resumed from update {step} of {num_updates}')
  else:
    state = init_fn(init_keys)
  # Records after the checkpoint we resume from are dropped (and recomputed), in
  # metrics.jsonl and in TensorBoard (a killed run's events of later updates are purged).
  writer = metrics.Writer(
    workdir, keep=lambda r: r['step'] <= step, purge_steps=dict(main=step + 1)
  )
  rows = list(writer.kept)
  bar = tqdm.tqdm(total=num_updates, initial=step, unit='upd', disable=not workdir)
  try:
    while step < num_updates:
      state, chunk_metrics = chunk_fn(state, loop_keys)
      chunk_metrics = jax.device_get(chunk_metrics)  # leaves [S, K]; the only sync point
      runs.check_finite(
        chunk_metrics, ('loss', 'value_loss'), phase='PPO', step=step + per_chunk, checkpointer=ckpt
      )
      for k in range(per_chunk):
        values = {n: v[:, k] for n, v in chunk_metrics.items()}
        u = step + k + 1
        rows.append(writer.write(u, dict(update=u, env_steps=u * spu, **values)))
      step += per_chunk
      bar.update(per_chunk)
      bar.set_postfix(ret=f'{np.mean(chunk_metrics["episode_return"][:, -1]):.1f}')
      runs.at(f'update {step} of {num_updates}')
      if ckpt:
        ckpt.maybe_save(step, state)
  finally:
    bar.close()
    writer.close()
    if ckpt:
      ckpt.close()
  if workdir:
    write_results(workdir, rows, config.env.name)
  return state, rows


def write_results(workdir, rows, env_name):
  """final.json / final.csv (final return per seed) and curve.png (mean +- std over seeds)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  final = [float(r) for r in rows[-1]['episode_return']]
  title = f'PPO (jaxca) on {env_name}'
  summary = dict(
    title=title,
    env=env_name,
    env_steps=rows[-1]['env_steps'],
    final_return_per_seed=final,
    num_seeds=len(final),
    mean=float(np.mean(final)),
    std=float(np.std(final)),
  )
  with open(os.path.join(workdir, 'final.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, 'final.csv'), 'w') as f:
    f.write('seed,final_return\n' + ''.join(f'{i},{r}\n' for i, r in enumerate(final)))
  x = np.array([r['env_steps'] for r in rows])
  y = np.array([r['episode_return'] for r in rows], np.float64)  # [U, S]
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(x, y.mean(1), label=f'mean over {y.shape[1]} seeds')
  ax.fill_between(x, y.mean(1) - y.std(1), y.mean(1) + y.std(1), alpha=0.3, label='+- 1 std')
  ax.set(xlabel='environment steps', ylabel='episode return', title=title)
  ax.legend()
  fig.savefig(os.path.join(workdir, 'curve.png'), dpi=100, bbox_inches='tight')
  plt.close(fig)
  return summary


def run(config, workdir):
  """Trains into `workdir`; returns the closing summary line."""
  start = time.time()
  train(config, workdir)
  with open(os.path.join(workdir, 'final.json')) as f:
    final = json.load(f)
  return (
    f'PPO on {final["env"]}: final episode return {final["mean"]:.1f} +- {final["std"]:.1f} '
    f'over {final["num_seeds"]} seeds after {final["env_steps"]:,} env steps '
    f'({time.time() - start:.0f} s in this process); results in {workdir}/final.json, curve.png'
  )


def _setup():
  jax.config.update('jax_threefry_partitionable', True)


EXPERIMENT = runs.Experiment(
  NAME,
  run,
  validate=ppo.validate_config,
  safe_keys=SAFE_KEYS,
  setup=_setup,
  outputs=(metrics.FILENAME, 'final.json', 'final.csv', 'curve.png'),
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
