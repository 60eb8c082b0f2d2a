r"""Train-step throughput of the arith_rl loop: tokens/s of one RL iteration and one SFT step.

  python -m experiments.bench_train_step --config configs/bench_train_step.py \
      --workdir runs/bench_train_step
  python -m experiments.bench_train_step --config configs/bench_train_step.py:smoke \
      --workdir runs/bench_train_step_smoke

Contenders (each jitted once, timed in interleaved rounds after compilation, median):
  * rl_iteration: the whole RL iteration of experiments/arith_rl.py (sample G per prompt,
    verifier reward, estimator, teacher-forced old log-probs, PPO epochs/minibatches);
  * sample_only: just the sampling part (KV cache);
  * sft_step: one supervised warm-start step.
tokens/s counts prompt + response tokens of the B = P * G sequences per iteration.

Expected: numbers only (no target); on a shared 2-core CPU they vary with load, so the
results record the load average. See BUILD_NOTES.md for a measured table.
"""

import ml_collections

from configs import arith_rl
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, estimator='grpo')
  c = ml_collections.ConfigDict()
  base = arith_rl.get_config(
    f'smoke,estimator={arg.estimator}' if arg.smoke else f'estimator={arg.estimator}'
  )
  c.arith = base  # the arith_rl config whose train step is timed
  c.reps = 10
  if arg.smoke:
    c.reps = 2
  return c
