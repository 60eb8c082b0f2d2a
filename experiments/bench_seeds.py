"""S seeds of one reproduction arm: one vmapped program vs S sequential runs.

Commands and what is reported: configs/bench_seeds.py. The measurement is
`jaxca.bench.seeds_batched_vs_sequential`; this builds the estimator zoo's update for one arm
and the batches each seed would see (`loop.batch_indices`, as `loop.run_arm` draws them).
"""

import json
import os
import time

from absl import app
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxca import arms
from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import runs
from jaxca import train as train_lib

NAME = 'bench_seeds'


def validate(config):
  if config.arm not in config.arms:
    raise runs.ConfigError(f'config.arm must be one of {sorted(config.arms)}; got {config.arm!r}.')
  for key in ('num_seeds', 'iterations', 'reps'):
    if not config[key] >= 1:
      raise runs.ConfigError(f'config.{key} must be >= 1; got {config[key]}.')
  if config.num_train < config.rl.prompts:
    raise runs.ConfigError(f'config.num_train must be >= rl.prompts ({config.rl.prompts}).')
  return config


def build(config):
  """(update step, start state, batches [S, T, ...], keys [S], hparams): composition only."""
  task, policy = arms.task_and_policy(config)
  estimator = estimators.from_config(ml_collections.ConfigDict(config.arms[config.arm]).credit)
  rl = config.rl
  tx = train_lib.make_optimizer(config.optim)
  step = lm.make_rl_update(
    policy,
    task,
    estimator,
    tx,
    group_size=rl.group_size,
    num_epochs=rl.num_epochs,
    num_minibatches=rl.num_minibatches,
    temperature=rl.temperature,
    reward='outcome',
    loss_cfg=config.loss.to_dict(),
  )
  state0 = lm.init_from_params(policy.init(jax.random.key(0)), tx)
  train = task.generate(0, config.num_train)
  idx = np.asarray(
    [
      [loop.batch_indices(s, t + 1, config.num_train, rl.prompts) for t in range(config.iterations)]
      for s in range(config.num_seeds)
    ]
  )
  batches = {k: np.asarray(train[k])[idx] for k in task.batch_keys}
  keys = jax.vmap(jax.random.key)(jnp.arange(config.num_seeds))
  hparams = jax.tree.map(jnp.asarray, estimator.hparams)
  return step, state0, batches, keys, hparams


def run(config, workdir=None) -> dict:
  load_start, t_start = bench.load_average(), time.time()
  out = bench.seeds_batched_vs_sequential(*build(config), reps=config.reps, progress=runs.at)
  result = dict(
    arm=config.arm,
    seeds=out['seeds'],
    iterations=out['iterations'],
    speedup=out['speedup'],
    max_abs_diff=out['max_abs_diff'],
    **{
      who: dict(
        times_s=list(out[who].times_s), median_s=out[who].median_s, first_call_s=out[who].first_s
      )
      for who in ('sequential', 'batched')
    },  # fmt: skip
    load_1min_before_after=[load_start, bench.load_average()],
    environment=bench.environment(),
  )
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(result, f, indent=1, default=str)
    r = result['speedup']
    with open(os.path.join(workdir, 'results.md'), 'w') as f:
      f.write(
        f'# {config.arm}: {out["seeds"]} seeds x {out["iterations"]} updates, batched (vmap) vs '
        f'sequential\n\n{loop.header(NAME, t_start, load_start)}\n\n'
        f'sequential {out["sequential"].median_s:.2f} s, batched '
        f'{out["batched"].median_s:.2f} s (medians of {config.reps}); speed-up per round min / '
        f'median / max: {r["min"]:.2f} / {r["median"]:.2f} / {r["max"]:.2f}. First calls '
        f'(compile): {out["sequential"].first_s:.1f} / {out["batched"].first_s:.1f} s. Largest '
        f'final-state difference: {out["max_abs_diff"]:.2g}. 1-min load before / after: '
        f'{load_start:.2f} / {result["load_1min_before_after"][1]:.2f}; devices '
        f'{result["environment"]["devices"]}.\n'
      )
  return result


def _run(config, workdir):
  r = run(config, workdir)
  return (
    f'{r["seeds"]} seeds batched: {r["speedup"]["median"]:.2f}x over sequential (median per '
    f'round); see {workdir}/results.md'
  )


EXPERIMENT = runs.Experiment(
  NAME,
  _run,
  validate=validate,
  setup=lambda: jax.config.update('jax_threefry_partitionable', True),
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
