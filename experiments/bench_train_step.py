"""Train-step throughput (tokens/s) of the arith_rl loop. Commands: configs/bench_train_step.py."""

import json
import os

from absl import app
from absl import flags
import jax

from experiments import arith_rl
from jaxca import bench
from jaxca import lm
from jaxca import runs
from jaxca import sampling

FLAGS = flags.FLAGS


NAME = 'bench_train_step'


def define_flags():
  """Defined only when run as a script, so tests can import several experiments."""
  runs.define_flags(NAME)


def run(config, workdir=None) -> dict:
  """Times the contenders; writes results.json / results.md to `workdir` if given."""
  c = config.arith
  parts = arith_rl.build(c)
  task = parts.task
  key = jax.random.key(0)
  sft_state = jax.jit(parts.sft_init)(key)
  rl_state = jax.jit(parts.rl_init)(sft_state['params'])
  p, g, b = c.rl.prompts_per_step, c.rl.group_size, c.warmstart.batch_size
  rl_batch = {k: jax.numpy.asarray(v) for k, v in task.generate(1, p).items()}
  sft_batch = {k: jax.numpy.asarray(v) for k, v in task.generate(2, b).items()}
  rl_fn = jax.jit(parts.rl_update)
  sft_fn = jax.jit(parts.sft_update)
  voc = task.vocab

  def sample(params, prompts, key):
    return sampling.sample(
      parts.policy,
      params,
      key,
      prompts,
      lm.prompt_mask(task, prompts),
      num_samples=g,
      max_new_tokens=task.response_len,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
    )

  sample_fn = jax.jit(sample)
  thunks = {
    'rl_iteration': lambda: rl_fn(rl_state, rl_batch, key),
    'sample_only': lambda: sample_fn(rl_state['params'], rl_batch['prompts'], key),
    'sft_step': lambda: sft_fn(sft_state, sft_batch),
  }
  timings = bench.interleaved(thunks, config.reps, progress=runs.at)
  length = task.prompt_len + task.response_len
  tokens = {'rl_iteration': p * g * length, 'sample_only': p * g * length, 'sft_step': b * length}
  rows = {
    name: dict(
      median_ms=t.median_ms,
      first_call_s=t.first_s,
      spread=t.spread,
      reps=t.reps,
      tokens=tokens[name],
      tokens_per_s=tokens[name] / t.median_s,
    )
    for name, t in timings.items()
  }
  result = dict(
    rows=rows,
    environment=bench.environment(),
    policy=c.policy.to_dict(),
    estimator=c.credit.estimator,
    prompts=p,
    group_size=g,
    num_epochs=c.rl.num_epochs,
    num_minibatches=c.rl.num_minibatches,
  )
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(result, f, indent=1, default=str)
    lines = [
      f'# arith_rl train-step throughput ({c.credit.estimator}, P={p}, G={g}, '
      f'width {c.policy.width}, depth {c.policy.depth}, {c.policy.dtype})',
      '',
      f'Load average at the end: {result["environment"].get("loadavg_1_5_15")}.',
      '',
      '| contender | median [ms] | tokens / call | tokens/s | first call (compile) [s] |',
      '|---|---|---|---|---|',
    ]
    for name, r in rows.items():
      lines.append(
        f'| {name} | {r["median_ms"]:.1f} | {r["tokens"]} | '
        f'{r["tokens_per_s"]:.0f} | {r["first_call_s"]:.1f} |'
      )
    with open(os.path.join(workdir, 'results.md'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  return result


def _run(config, workdir):
  rows = run(config, workdir)['rows']
  speeds = ', '.join(f'{k} {v["tokens_per_s"]:,.0f}' for k, v in rows.items())
  return f'tokens/s: {speeds}; results in {os.path.join(workdir, "results.md")}'


EXPERIMENT = runs.Experiment(
  NAME,
  _run,
  validate=lambda config: arith_rl.validate(config.arith),
  setup=lambda: jax.config.update('jax_threefry_partitionable', True),
  resume_hint='A benchmark does not resume: rerun the same command to start it again.',
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
