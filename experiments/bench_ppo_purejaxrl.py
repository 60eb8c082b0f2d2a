"""jaxca vs PureJaxRL PPO: one process, same hyper-parameters. See configs/bench_ppo_purejaxrl.py.

Each system's whole training (init + all updates, seeds vmapped) is one jitted
program, AOT-compiled and timed separately, then run once untimed; the timed runs alternate
(jaxca, purejaxrl, jaxca, ...) so both see the same machine load.

PureJaxRL shim (gymnax 1.0): `gymnax.make` inside purejaxrl/ppo.py returns the env
wrapped in gymnax's own `LegacyStepAPIWrapper` (5-value step, done = terminated |
truncated) with `info` reduced to the `discount` entry older gymnax returned
(so PureJaxRL does not pay for stacking the new `final_observation` field);
its wrappers.py imports brax and navix at module level, which get empty stubs.
PureJaxRL's `DEBUG` printing callback is off. Its orthogonal initialiser is swapped for
`jaxca.networks.mlp.orthogonal` (the same values; when vmapped over seeds the QR runs as a
loop), since a vmapped batched QR deadlocks jaxlib 0.10.2 on a 2-core CPU (issue 17); both
systems' timed programs then initialise their seeds the same way.
"""

import importlib.util
import json
import os
import statistics
import sys
import time
import types

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from experiments import ppo_gymnax
from jaxca import runs
from jaxca.networks import mlp

FLAGS = flags.FLAGS


NAME = 'bench_ppo_purejaxrl'


def define_flags():
  """Defined only when run as a script, so tests can import several experiments."""
  runs.define_flags(NAME)


def jaxca_program(cfg, num_seeds):
  """Returns (compiled fn, args, env steps per seed); fn returns final return per seed."""
  init, update, num_updates, spu = ppo_gymnax.build(cfg)

  def one_seed(state, loop_key):
    state, metrics = jax.lax.scan(lambda s, _: update(s, loop_key), state, None, length=num_updates)
    return metrics['episode_return'][-1]

  def train(keys):
    init_keys, loop_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    states = jax.vmap(init)(init_keys)  # vmap-safe orthogonal init (networks.mlp)
    return jax.vmap(one_seed)(states, loop_keys)

  keys = jax.random.split(jax.random.key(cfg.seed), num_seeds)
  return jax.jit(train), (keys,), num_updates * spu


def load_purejaxrl(path):
  """Imports purejaxrl/ppo.py from `path` with the gymnax 1.0 shim; None if absent."""
  src = os.path.join(path, 'purejaxrl')
  if not os.path.exists(os.path.join(src, 'ppo.py')):
    return None
  for name in ('brax', 'brax.envs', 'brax.envs.wrappers', 'brax.envs.wrappers.training', 'navix'):
    stub = sys.modules.setdefault(name, types.ModuleType(name))
    stub.EpisodeWrapper = stub.AutoResetWrapper = object
  sys.path.insert(0, src)
  spec = importlib.util.spec_from_file_location('purejaxrl_ppo', os.path.join(src, 'ppo.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  import gymnax  # pylint: disable=g-import-not-at-top
  from gymnax.wrappers import compat  # pylint: disable=g-import-not-at-top

  class Legacy(compat.LegacyStepAPIWrapper):
    def step(self, key, state, action, params=None):
      obs, state, reward, done, info = super().step(key, state, action, params)
      return obs, state, reward, done, {'discount': info['discount']}

  def make(name):
    env, params = gymnax.make(name)
    return Legacy(env), params

  module.gymnax = types.SimpleNamespace(make=make)
  module.orthogonal = mlp.orthogonal  # same values; vmap-safe (module docstring)
  return module


def purejaxrl_program(module, cfg, num_seeds):
  p, o = cfg.ppo, cfg.optim
  config = dict(
    LR=o.lr, NUM_ENVS=cfg.rollout.num_envs, NUM_STEPS=cfg.rollout.num_steps,
    TOTAL_TIMESTEPS=cfg.train.total_timesteps, UPDATE_EPOCHS=p.num_epochs,
    NUM_MINIBATCHES=p.num_minibatches, GAMMA=p.gamma, GAE_LAMBDA=p.lambda_,
    CLIP_EPS=p.clip_eps, ENT_COEF=p.ent_coef, VF_COEF=p.vf_coef, MAX_GRAD_NORM=o.max_grad_norm,
    ACTIVATION=cfg.network.activation, ENV_NAME=cfg.env.name, ANNEAL_LR=o.anneal, DEBUG=False,
  )  # fmt: skip
  train = module.make_train(config)

  def final_return(key):
    return train(key)['metrics']['returned_episode_returns'][-1].mean()

  keys = jax.random.split(jax.random.PRNGKey(cfg.seed), num_seeds)
  steps = config['NUM_UPDATES'] * config['NUM_STEPS'] * config['NUM_ENVS']
  return jax.jit(jax.vmap(final_return)), (keys,), steps


def compile_and_time(name, fn, args, steps, num_seeds, repeats_out):
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(*args))  # untimed warm-up: first-call allocations

  def run():
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    dt = time.perf_counter() - t
    repeats_out.append(dict(system=name, seeds=num_seeds, seconds=dt, sps=steps * num_seeds / dt))
    return np.asarray(out)

  return compile_s, run


def validate(cfg):
  if not os.path.exists(os.path.join(cfg.purejaxrl_path, 'purejaxrl', 'ppo.py')):
    raise runs.ConfigError(
      f'config.purejaxrl_path={cfg.purejaxrl_path!r} has no purejaxrl/ppo.py; see '
      'configs/bench_ppo_purejaxrl.py for how to fetch PureJaxRL.'
    )
  if not cfg.seed_counts or not cfg.repeats:
    raise runs.ConfigError('config.seed_counts and config.repeats must be non-empty / positive.')


def run(cfg, workdir):
  """Times both systems; writes bench.json / bench.md into `workdir`; returns the summary."""
  jax.config.update('jax_threefry_partitionable', True)
  module = load_purejaxrl(cfg.purejaxrl_path)
  results, timed = dict(devices=str(jax.devices()), seeds={}), []
  for num_seeds in cfg.seed_counts:
    entry = results['seeds'][str(num_seeds)] = {}
    runners = {}
    for name, build in (('jaxca', jaxca_program), ('purejaxrl', None)):
      if name == 'jaxca':
        fn, args, steps = build(cfg.ppo, num_seeds)
      else:
        fn, args, steps = purejaxrl_program(module, cfg.ppo, num_seeds)
      compile_s, runners[name] = compile_and_time(name, fn, args, steps, num_seeds, timed)
      runs.at(f'{name} compiled for {num_seeds} seeds', next_compiles=name == 'jaxca')
      entry[name] = dict(compile_s=compile_s, env_steps_per_seed=steps)
      logging.info('%s, %d seeds: compile %.1f s', name, num_seeds, compile_s)
    for r in range(cfg.repeats):
      for name, run_once in runners.items():
        entry[name]['final_return_per_seed'] = run_once().tolist()
        logging.info('%s', timed[-1])
        runs.at(f'timed run {r + 1} of {cfg.repeats} of {name} with {num_seeds} seeds')
    for name in runners:
      sps = [r['sps'] for r in timed if r['system'] == name and r['seeds'] == num_seeds]
      entry[name].update(sps_timed=sps, sps_median=statistics.median(sps))
      entry[name]['final_return_mean'] = float(np.mean(entry[name]['final_return_per_seed']))
    pairs = [r for r in timed if r['seeds'] == num_seeds]
    ratios = [a['sps'] / b['sps'] for a, b in zip(pairs[::2], pairs[1::2])]
    entry['ratio_jaxca_over_purejaxrl'] = dict(
      timed=ratios, min=min(ratios), median=statistics.median(ratios), max=max(ratios)
    )
    entry['compile_ratio_jaxca_over_purejaxrl'] = (
      entry['jaxca']['compile_s'] / entry['purejaxrl']['compile_s']
    )
  lo, hi = (str(s) for s in (min(cfg.seed_counts), max(cfg.seed_counts)))
  for name in ('jaxca', 'purejaxrl'):
    results[f'{name}_vmap_speedup_{hi}_over_{lo}'] = (
      results['seeds'][hi][name]['sps_median'] / results['seeds'][lo][name]['sps_median']
    )
  text = json.dumps(results, indent=2)
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'bench.json'), 'w') as f:
      f.write(text)
    with open(os.path.join(workdir, 'bench.md'), 'w') as f:
      f.write('| seeds | system | compile s | steps/s (median) | final return (mean) |\n')
      f.write('|---|---|---|---|---|\n')
      for s, entry in results['seeds'].items():
        for name in ('jaxca', 'purejaxrl'):
          e = entry[name]
          f.write(f'| {s} | {name} | {e["compile_s"]:.1f} | {e["sps_median"]:,.0f} | '
                  f'{e["final_return_mean"]:.1f} |\n')  # fmt: skip
      f.write(
        f'\njaxca / PureJaxRL env steps/s over {cfg.repeats} alternating pairs '
        '(min / median / max of the per-pair ratios); compile-time ratio:\n\n'
      )
      for s, entry in results['seeds'].items():
        r = entry['ratio_jaxca_over_purejaxrl']
        f.write(
          f'* {s} seeds: {r["min"]:.3f} / {r["median"]:.3f} / {r["max"]:.3f}; '
          f'compile {entry["compile_ratio_jaxca_over_purejaxrl"]:.2f}x\n'
        )
      f.write(f'\nload average at the end: {os.getloadavg()}\n')
  per = ', '.join(
    f'{s} seeds {e["ratio_jaxca_over_purejaxrl"]["median"]:.2f}x'
    for s, e in results['seeds'].items()
  )
  return (
    f'jaxca PPO env steps/s over PureJaxRL (median of {cfg.repeats} pairs): {per}; '
    f'table in {os.path.join(workdir, "bench.md")}'
  )


EXPERIMENT = runs.Experiment(
  NAME,
  run,
  validate=validate,
  resume_hint='A benchmark does not resume: rerun the same command to start it again. If '
  'every thread idles in block_until_ready, attach gdb (BUILD_NOTES.md > Gotchas, issue 17: '
  'jaxlib 0.10.2 deadlocks on batched LAPACK calls; this benchmark avoids the known one).',
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
