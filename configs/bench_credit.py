"""Kernel benchmark for `jaxca.credit` (issue 2 item 7, issue 3 trace rows).

Commands (run from the repository root):

  # full benchmark (a few minutes on 2 CPU cores); writes bench_credit.{md,csv,json}
  python -m experiments.bench_credit --config configs/bench_credit.py \
      --workdir results/bench_credit

  # seconds: tiny shapes, 2 repetitions (what CI runs)
  python -m experiments.bench_credit --config configs/bench_credit.py:smoke   # -> runs/bench_credit

  # one section / fewer shapes, e.g. only GAE at [256, 2048]
  python -m experiments.bench_credit --config configs/bench_credit.py \
      --config.kernels=gae --config.shapes=256x2048 --config.group.modes= \
      --config.offpolicy.methods= --workdir runs/bench_gae

The report (bench_credit.md, also printed) has, for every contender of every row, the time
divided by the row's baseline and the fraction of the copy bandwidth measured in the same run,
and a table of the issue 14 targets with met / not met (at the shapes in config.targets): T1 the
slowest trajectory-aware trace <= 20x (stretch 5x) jaxca retrace at [8, 4096]; T2a vmapped rlax
GAE / `credit.gae(time_major=True)` >= 1.5 and T2b / batch-major `credit.gae` >= 1.0 at
[256, 2048] and [4096, 128]; T2c masked / unmasked GAE <= 1.3; the T=1024 -> 4096 scaling < 8x.

Earlier expected result (issue 2 and 3 targets): `credit.gae` >= 1.5x faster than jitted
`jax.vmap` of rlax's per-trajectory GAE at [256,2048] and [4096,128] and >= 50% of the copy
bandwidth measured in the same run at [4096,128]; `group_relative` on N=65536 with 8192
shuffled groups < 10 ms; the trajectory-aware traces (truncated_is, recursive_retrace, rbis)
cost < 8x going from T=1024 to T=4096 at batch 8 (quadratic would be 16x).
A kernel that is still a placeholder gives 'n/a' rows.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  """Benchmark settings; `arg` is 'smoke' and/or key=value pairs (see configs.common)."""
  args = common.parse_arg(arg, smoke=False)
  c = ml_collections.ConfigDict()
  c.seed = 0
  # 'BxT' pairs, comma separated: every kernel in `kernels` runs at each of them.
  c.shapes = '4096x128,256x2048,64x8192,1x65536'
  # Any of: gae, gae_masked, discounted_returns, group_relative, min_form_returns,
  # min_form_rewards (comma separated; empty = none).
  c.kernels = 'gae,gae_masked,discounted_returns,group_relative,min_form_returns,min_form_rewards'
  c.reps = 20  # timed calls per contender after one warm-up; contenders interleaved
  c.numpy_budget_s = 2.0  # cap on the summed timed seconds of one NumPy loop contender per row
  c.gamma = 0.99
  c.lambda_ = 0.95
  c.termination_prob = 0.01  # per step, for discounts = gamma * (1 - terminated)
  c.mask_keep_prob = 0.9  # gae_masked: fraction of steps where the policy acted
  c.temperature = 0.5  # min_form_rewards
  c.rlax = True  # time rlax baselines when rlax is importable
  c.gae_variants = True  # extra reference GAE contenders: plain time-major lax.scan (+/- transpose)
  c.copy_mb = 256  # bandwidth probe: jitted x + 1 of this many MB, counting read + write
  c.copy_reps = 20

  c.group = ml_collections.ConfigDict()
  c.group.n = 65536  # scores [N] with shuffled int group_ids
  c.group.num_groups = 8192
  c.group.contiguous = '8192x8'  # scores [P, G], groups on the last axis
  c.group.modes = 'grpo,dr_grpo,rloo'  # empty = skip the section

  c.offpolicy = ml_collections.ConfigDict()
  c.offpolicy.batch = 8
  c.offpolicy.ts = '1024,4096,16384'
  c.offpolicy.methods = 'is,q_lambda,tree_backup,retrace,truncated_is,recursive_retrace,rbis'
  c.offpolicy.lambda_ = 0.9
  c.offpolicy.numpy_quadratic_max_t = 4096  # O(T^2) NumPy reference timed only up to this T

  # Where the issue 14 targets are read (rows that were not timed give 'n/a').
  c.targets = ml_collections.ConfigDict()
  c.targets.trace_shape = '8x4096'  # 'BxT' offpolicy row (B = offpolicy.batch, T in ts)
  c.targets.gae_shapes = '256x2048,4096x128'  # gae and gae_masked rows, among shapes
  c.targets.scaling_ts = '1024,4096'  # two of offpolicy.ts

  if args.smoke:
    c.shapes = '4x32'
    c.reps = 2
    c.numpy_budget_s = 0.5
    c.copy_mb = 1
    c.copy_reps = 2
    c.group.n = 64
    c.group.num_groups = 8
    c.group.contiguous = '8x8'
    c.offpolicy.batch = 2
    # One T (the trajectory-aware kernels take seconds to compile), every method the targets
    # read, so every contender and every target line runs (the scaling line is 'n/a').
    c.offpolicy.ts = '32'
    c.offpolicy.methods = 'retrace,truncated_is,recursive_retrace,rbis'
    c.targets.trace_shape = '2x32'
    c.targets.gae_shapes = '4x32'
    c.targets.scaling_ts = '16,32'
  return c
