"""Kernel benchmark: jaxca.credit vs vmapped rlax and NumPy. Commands: configs/bench_credit.py.

Composition only: the inputs, baselines, rows, per-row timing and reports are in
`jaxca.benchmarks.credit`, the interleaved timing protocol in `jaxca.bench`; where
runs write (default runs/bench_credit/), errors and the summary line: `jaxca.runs`.
"""

import itertools
import os
import subprocess
import sys

from absl import app
from absl import flags
import jax
import numpy as np
import tqdm

from jaxca import bench
from jaxca import runs
from jaxca.benchmarks import credit as bench_credit

FLAGS = flags.FLAGS
NAME = 'bench_credit'


def define_flags():
  """Defined only when run as a script, so tests can import several experiments."""
  runs.define_flags(NAME)


def validate(cfg):
  """Raises ConfigError for unknown kernels / modes / methods or bad sizes."""
  kernels = bench_credit.items(cfg.kernels)
  unknown = [k for k in kernels if k not in bench_credit.KERNELS]
  if unknown:
    raise runs.ConfigError(
      f'Unknown kernel(s) {unknown} in config.kernels; choose from {list(bench_credit.KERNELS)}.'
    )
  modes = [m for m in bench_credit.items(cfg.group.modes) if m not in ('grpo', 'dr_grpo', 'rloo')]
  if modes:
    raise runs.ConfigError(
      f'Unknown mode(s) {modes} in config.group.modes; choose from grpo, dr_grpo, rloo.'
    )
  methods = bench_credit.items(cfg.offpolicy.methods)
  bad = [m for m in methods if m not in bench_credit.OFF_POLICY_METHODS]
  if bad:
    raise runs.ConfigError(
      f'Unknown method(s) {bad} in config.offpolicy.methods; choose from '
      f'{list(bench_credit.OFF_POLICY_METHODS)}.'
    )
  for key in ('reps', 'copy_reps', 'copy_mb'):
    if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
      raise runs.ConfigError(f'config.{key} must be a positive int; got {cfg[key]!r}.')
  try:
    bench_credit.shapes(cfg.shapes)
    bench_credit.shapes(cfg.group.contiguous)
    [int(t) for t in bench_credit.items(cfg.offpolicy.ts)]
    trace_shape = bench_credit.shapes(cfg.targets.trace_shape)
    gae_shapes = bench_credit.shapes(cfg.targets.gae_shapes)
    scaling_ts = [int(t) for t in bench_credit.items(cfg.targets.scaling_ts)]
  except ValueError as e:
    raise runs.ConfigError(
      'config.shapes / group.contiguous / targets.trace_shape / targets.gae_shapes must be '
      f'"BxT" lists, offpolicy.ts / targets.scaling_ts ints: {e}'
    ) from None
  if len(trace_shape) != 1 or len(trace_shape[0]) != 2 or any(len(s) != 2 for s in gae_shapes):
    raise runs.ConfigError(
      f'config.targets.trace_shape must be one "BxT" and targets.gae_shapes "BxT" pairs; got '
      f'{cfg.targets.trace_shape!r}, {cfg.targets.gae_shapes!r}.'
    )
  if len(scaling_ts) != 2 or scaling_ts[0] <= 0 or scaling_ts[1] % scaling_ts[0]:
    raise runs.ConfigError(
      'config.targets.scaling_ts must be two positive ints "T0,T1" with T1 a multiple of T0; '
      f'got {cfg.targets.scaling_ts!r}.'
    )
  return cfg


def run(cfg, workdir=None):
  """Runs the benchmark; returns (records, summary). Writes md/csv/json when workdir is set."""
  validate(cfg)
  env = bench.environment()
  env.update(_git_state())
  key = jax.random.key(cfg.seed)
  k_std, k_grp, k_off = jax.random.split(key, 3)
  copy_start, t_start = bench.copy_bandwidth(cfg.copy_mb * 2**20, cfg.copy_reps)
  # Rows are generated lazily: each row's thunks close over the inputs of the current shape.
  rows = itertools.chain(
    bench_credit.standard_rows(cfg, k_std),
    bench_credit.group_rows(cfg, k_grp),
    bench_credit.offpolicy_rows(cfg, k_off),
  )
  total = bench_credit.row_count(cfg)
  records = []
  for i, row in enumerate(tqdm.tqdm(rows, desc=NAME, total=total, disable=None)):
    records.extend(bench_credit.run_row(row, cfg))
    runs.at(f'row {i + 1} of {total}', next_compiles=True)  # each row compiles anew
  copy_end, t_end = bench.copy_bandwidth(cfg.copy_mb * 2**20, cfg.copy_reps)
  pooled = bench.Timing(t_start.times_s + t_end.times_s, t_start.first_s)
  copy_gbps = bench.gigabytes_per_second(2 * cfg.copy_mb * 2**20, pooled.median_s)
  for rec in records:
    if 'gbps' in rec:
      rec['frac_copy_bw'] = rec['gbps'] / copy_gbps
  env['loadavg_end'] = bench.environment()['loadavg_1_5_15']
  summary = dict(
    env=env,
    command=_command(),
    copy_gbps=copy_gbps,
    copy_gbps_start=copy_start,
    copy_gbps_end=copy_end,
    copy_spread=pooled.spread,
    config=cfg.to_dict(),
    targets=bench_credit.targets(records, cfg),
  )
  if workdir:
    bench_credit.write(workdir, records, summary)
  return records, summary


def summary_line(records, summary, workdir):
  """Rows timed, the median speed-up over the rlax and NumPy baselines, where the report is."""

  def median(contender):
    xs = [
      r['jaxca_speedup']
      for r in records
      if r['contender'] == contender and r.get('jaxca_speedup') and 'yardstick' not in r['label']
    ]
    return f'{np.median(xs):.1f}x' if xs else 'n/a'

  n = len({(r['section'], r['kernel'], r['shape']) for r in records})
  verdicts = [t['verdict'] for t in summary['targets']]
  return (
    f'{n} kernel rows timed: median speed-up of jaxca over vmapped rlax {median("rlax")}, over '
    f'NumPy loops {median("numpy")}; copy bandwidth {summary["copy_gbps"]:.1f} GB/s; issue 14 '
    f'targets met {verdicts.count("met")} of {len(verdicts)} ({verdicts.count("n/a")} n/a); '
    f'report in {os.path.join(workdir, NAME + ".md")}'
  )


def _git_state():
  """The commit and the uncommitted files under jaxca/ (the kernels actually timed)."""
  try:
    run_git = lambda *a: subprocess.run(
      ['git', *a], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    dirty = run_git('status', '--porcelain', '--', 'jaxca').splitlines()
    return {
      'git_head': run_git('rev-parse', '--short', 'HEAD'),
      'uncommitted_jaxca_files': ' '.join(line.split()[-1] for line in dirty) or 'none',
    }
  except (OSError, subprocess.SubprocessError):
    return {'git_head': None}


def _command():
  return ' '.join(['python -m experiments.bench_credit'] + sys.argv[1:])


def console_lines(summary):
  """What the terminal shows: one line per target. The per-row tables (time / baseline, % of
  the copy bandwidth, rel diff) are in the report file, not on the terminal."""
  return bench_credit.targets_lines(summary['targets'])


def _run(cfg, workdir):
  records, summary = run(cfg, workdir)
  for line in console_lines(summary):
    runs.note(line)
  return summary_line(records, summary, workdir)


EXPERIMENT = runs.Experiment(
  NAME,
  _run,
  validate=validate,
  resume_hint='A benchmark does not resume: rerun the same command to start it again.',
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
