r"""Side-by-side benchmark: jaxca PPO (experiments/ppo_gymnax) vs PureJaxRL's purejaxrl/ppo.py.

PureJaxRL is never committed. Fetch it and copy its two files outside the repo:

  mkdir -p /tmp/purejaxrl/purejaxrl
  G=<git dir of a luchris429/purejaxrl clone>   # e.g. the `fetch` tool's mirror
  for f in ppo.py wrappers.py; do
    git --git-dir=$G show HEAD:purejaxrl/$f > /tmp/purejaxrl/purejaxrl/$f
  done
  python -m experiments.bench_ppo_purejaxrl --config configs/bench_ppo_purejaxrl.py \
      --workdir runs/bench_ppo_purejaxrl
  python -m experiments.bench_ppo_purejaxrl --config configs/bench_ppo_purejaxrl.py:smoke

Both programs get the same hyper-parameters (PureJaxRL's CartPole defaults, taken
from configs/ppo_gymnax.py), run in one process, alternately, compile excluded
(AOT `lower().compile()` timed separately). Writes bench.json and bench.md to the
workdir (default runs/bench_ppo_purejaxrl). If `purejaxrl_path` does not hold
purejaxrl/ppo.py the script says so (a config error, exit 2) without measuring.

Expected: jaxca steps/s >= PureJaxRL steps/s at 1 seed (ratio >= 1); see
BUILD_NOTES.md > Results for the measured numbers and machine.
"""

import ml_collections

from configs import common
from configs import ppo_gymnax


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, repeats=3)
  c = ml_collections.ConfigDict()
  c.purejaxrl_path = '/tmp/purejaxrl'  # checkout root holding purejaxrl/ppo.py
  c.repeats = arg.repeats  # alternating timed runs per system and seed count
  c.seed_counts = (1, 64)  # seeds vmapped in one program, measured in turn
  c.ppo = ppo_gymnax.get_config()  # the shared hyper-parameters (jaxca form)
  if arg.smoke:
    c.repeats = 1
    c.seed_counts = (1, 2)
    c.ppo.rollout.num_steps = 16
    c.ppo.train.total_timesteps = 4 * 16 * 4
    c.ppo.train.num_chunks = 1
  return c
