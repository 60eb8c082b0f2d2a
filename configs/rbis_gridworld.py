r"""RBIS paper control experiment: lambda sweep on the Bifurcated Gridworld (arXiv 2301.11321).

Daley et al., "Trajectory-Aware Eligibility Traces for Off-Policy Reinforcement
Learning" (ICML 2023). Online tabular expected-SARSA control with per-start-time traces
(Retrace, Truncated IS, Recursive Retrace, RBIS) x lambda in {0, 0.1, ..., 1}, the
paper's chosen step size per (method, lambda) (ICML config, official repo commit
9512ce0), 1000 seeds shared by every setting; all 44,000 trials run vmapped in one
jitted program.

  python -m experiments.rbis_gridworld --config configs/rbis_gridworld.py   # -> runs/rbis_gridworld
  python -m experiments.rbis_gridworld --config configs/rbis_gridworld.py:smoke --workdir runs/rg
  python -m experiments.rbis_gridworld --config configs/rbis_gridworld.py:num_seeds=100 \
      --workdir runs/rbis_100

Writes to the workdir (default `runs/rbis_gridworld/`; the committed 1000-seed tables are
in `results/`, written with `--workdir results`): rbis_gridworld.csv
(method,lambda,alpha,auc_mean,auc_ci95,num_seeds), rbis_gridworld.md (table),
rbis_gridworld_lambda_sweep.png (AUC vs lambda, 95% CI bands),
rbis_gridworld_curves.png (learning curves at lambda 0.5 / 0.9 / 1.0),
rbis_gridworld_curves.npz (those mean curves) and rbis_gridworld.json (config, wall time).
Partial state is checkpointed to `<workdir>/checkpoint.npz` between chunks; a rerun resumes.

Expected: AUC in the paper's plotted range (~1160-1300; the maximum is about
3001 * 0.9**6 = 1594) and all methods identical at lambda = 0 (one-step expected SARSA,
same seeds and step size). Measured (results/rbis_gridworld.md, 1000 seeds): 1186.6 for
all at lambda = 0; RBIS highest for lambda in 0.1..0.5 (peak 1287.8 at 0.3), Retrace
highest for lambda >= 0.8, Truncated IS lowest at high lambda (1174.6 at 1.0). 285
CPU-seconds; 17 min wall on a 2-core box shared with other jobs.
"""

import ml_collections

from configs import common

LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, num_seeds=1000)
  c = ml_collections.ConfigDict()
  c.env = 'bifurcated_gridworld'
  c.gamma = 0.9
  c.behaviour_eps = 0.2
  c.explore_eps = 1.0  # behaviour epsilon for the first `explore_episodes` episodes
  c.explore_episodes = 5
  c.target_eps = 0.1
  c.eval_eps = 0.05
  # An evaluation episode stops after step index `max_episode_len` (51 actions, as the
  # official `t >= max_episode_len` test); training stops at the first episode end after
  # `timesteps`, or at step index timesteps + max_episode_len + 1.
  c.max_episode_len = 50
  c.q_init_std = 0.01
  c.timesteps = 3000
  c.smoothing_window = 100  # moving average over the last 100 evaluation returns
  c.methods = ('retrace', 'truncated_is', 'recursive_retrace', 'rbis')
  c.lambdas = LAMBDAS
  c.alpha_grid = LAMBDAS  # the lambdas that `alphas` are given for (any of them may be run)
  # Step size per (method, lambda) on the `alpha_grid`: the ICML config's
  # `lambda_sweep_alphas` (chosen by the paper's grid search on separate seeds).
  c.alphas = dict(
    retrace=(0.9,) * 8 + (0.7, 0.7, 0.5),
    truncated_is=(0.9,) * 6 + (0.7, 0.5, 0.5, 0.5, 0.3),
    recursive_retrace=(0.9,) * 8 + (0.7, 0.5, 0.5),
    rbis=(0.9,) * 5 + (0.7, 0.5, 0.5, 0.5, 0.5, 0.3),
  )
  c.num_seeds = arg.num_seeds
  c.seed_offset = 0  # trial i uses jax.random.key(seed_offset + i) for every setting
  # Trace window: start times older than `window` - 1 steps are dropped. Their weight
  # gamma^n beta_{k,t} <= (gamma*lambda)^n <= 0.9^128 = 1.4e-6 (sum of all dropped
  # weights per unit TD error <= 0.9^128 / 0.1 = 1.4e-5); episodes shorter than the
  # window are exact.
  c.window = 128
  c.chunk_steps = 100  # env steps per jitted call (progress bar + checkpoint granularity)
  # Chunks between saves of <workdir>/checkpoint.npz (0 disables; removed after success).
  c.checkpoint_every = 5
  c.curve_lambdas = (0.5, 0.9, 1.0)
  if arg.smoke:
    c.num_seeds = min(arg.num_seeds, 4)
    c.timesteps = 300
    c.lambdas = (0.0, 0.9)
    c.curve_lambdas = (0.9,)
    c.window = 32
    c.chunk_steps = 50
    c.checkpoint_every = 0
  return c
