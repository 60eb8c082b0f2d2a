r"""S seeds of one reproduction arm as one vmapped program vs S sequential runs (issue 26, item 3).

  python -m experiments.bench_seeds --config configs/bench_seeds.py --workdir results/bench_seeds
  python -m experiments.bench_seeds --config configs/bench_seeds.py:smoke --workdir /tmp/seeds

The estimator zoo's task, policy, optimizer and loss (configs/estimator_zoo.py: the base recipe
of the arithmetic reproductions, P=32 prompts x G=8, 2 epochs x 2 minibatches) and one of its
arms (`arm`, default GRPO), at random initial weights (the cost of an update does not depend on
them). `jaxca.bench.seeds_batched_vs_sequential` runs `iterations` updates of `num_seeds` seeds
sequentially (what `loop.run_grid` does) and batched under `jax.vmap`, interleaved after an
untimed warm-up; it reports the per-round speed-up min / median / max and checks that both give
the same final states. Target (issue 26): >= 2x at S=4 on the 2-core CPU. Not measured yet.
"""

import ml_collections

from configs import common
from configs import estimator_zoo


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False)
  zoo = estimator_zoo.get_config('smoke' if arg.smoke else None)
  c = ml_collections.ConfigDict()
  for section in ('task', 'policy', 'rl', 'optim', 'loss', 'arms'):
    c[section] = zoo[section].to_dict()
  c.arm = 'grpo'
  c.num_seeds = 4
  c.iterations = 10  # updates per seed in one timed call
  c.num_train = 4096  # problems the batches are drawn from (loop.batch_indices)
  c.reps = 3
  if arg.smoke:
    c.update(num_seeds=2, iterations=2, num_train=64, reps=1)
  return c
