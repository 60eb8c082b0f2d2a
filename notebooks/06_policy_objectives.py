# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Policy objectives: PPO-clip, clip-higher, GSPO and CISPO from one warm start
#
# Today's LLM-RL recipes differ less in the advantage than in the surrogate they maximise:
# PPO-clip (arXiv 1707.06347), DAPO's clip-higher (an upper clip range of 0.28 instead of 0.2,
# arXiv 2503.14476), GSPO's sequence-level ratio with a very narrow clip range (3e-4 / 4e-4,
# arXiv 2507.18071) and CISPO's REINFORCE with a clipped, stop-gradient importance weight
# (MiniMax-M1, arXiv 2506.13585). `experiments/policy_objectives.py` holds everything else
# fixed (one SFT warm start, GRPO advantages, batches, sampling keys, optimiser) and varies
# only the objective (`jaxca.objectives`).
#
# Sections: (1) how each objective weights one token's gradient as a function of the ratio
# r = pi / pi_old (computed with `jax.grad` through the kernels); (2) the comparison's results:
# `results/policy_objectives/` when committed, else a smoke run (seconds, a tiny policy: the
# numbers mean nothing, the plumbing is what runs). The notebook finds the repository root.

# %%
import json
import os
import pathlib
import sys
import tempfile


def find_repo_root(start=None):
  """The nearest directory at or above `start` holding jaxca/ and configs/.

  `start` defaults to the notebook's own folder: `__file__` when run as a script,
  `__vsc_ipynb_file__` in VS Code, `JPY_SESSION_NAME` under a Jupyter server; else the
  working directory (where Jupyter starts a kernel: the notebook's folder).
  """
  here = [globals().get(n) for n in ('__file__', '__vsc_ipynb_file__')]
  here = [p for p in here + [os.environ.get('JPY_SESSION_NAME')] if p and os.path.exists(p)]
  start = pathlib.Path(start or (os.path.dirname(here[0]) if here else os.getcwd())).resolve()
  for path in (start, *start.parents):
    if (path / 'jaxca' / '__init__.py').exists() and (path / 'configs').is_dir():
      return path
  raise FileNotFoundError(f'no jaxca checkout (jaxca/ and configs/) at or above {start}')


ROOT = find_repo_root()
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from configs import policy_objectives as po_config  # noqa: E402
from experiments import policy_objectives as po  # noqa: E402
from jaxca import objectives  # noqa: E402
from jaxca import report  # noqa: E402

SMOKE = os.environ.get('JAXCA_SMOKE', '0') == '1'
# The default run under the reproduction protocol.
RESULTS = ROOT / 'results' / 'policy_objectives_protocol'

# %% [markdown]
# ## 1. The gradient weight of one token
#
# For a token with advantage A and ratio r, every objective's gradient is
# `-w(r) A grad log pi` for some weight w(r): PPO-clip gives w = r inside the clip range and 0
# outside it on the side that would push r further (r > 1 + eps_high for A > 0, r < 1 - eps_low
# for A < 0); clip-higher only moves the upper edge; CISPO never zeroes a gradient, it caps the
# weight at 1 + eps_high and has no lower bound; GSPO clips the *sequence* ratio
# s = exp(mean_t log r_t). Below: a sequence of 4 tokens where only the first token's ratio
# moves (the others have r = 1), so GSPO sees s = r^(1/4); weights are read off the gradient
# of each arm's loss (token-mean over the 4 tokens, rescaled per token).

# %%
config = po_config.get_config()
T = 4
r = np.linspace(0.5, 1.6, 200)  # no grid point on a clip edge (a tie splits the gradient)


def weights(loss_fn, ratios, adv):
  """-(d loss / d log pi_0) * T / A for the first token of a T-token sequence, per ratio."""
  old = jnp.zeros((1, T))
  mask = jnp.ones((1, T), bool)
  advs = jnp.full((1, T), adv)

  def f(lp0):
    lp = old.at[0, 0].set(lp0)
    return loss_fn(lp, old, advs, mask)[0]

  grads = jax.jit(jax.vmap(jax.grad(f)))(jnp.log(jnp.asarray(ratios, jnp.float32)))
  return -np.asarray(grads) * T / adv


fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, adv in zip(axes, (1.0, -1.0)):
  for i, arm in enumerate(config.run_arms):
    fn = objectives.from_config(po.arm_loss(config, arm))
    w = weights(fn, r, adv)
    ax.plot(r, w, color=f'C{i}', lw=(4, 2.5, 1.5, 1.5)[i % 4], label=config.arms[arm].label)
  ax.axvline(1.0, color='k', lw=0.5)
  ax.set_xlabel('ratio r = pi / pi_old of token 0')
  ax.set_title(f'A {"> 0" if adv > 0 else "< 0"}')
  ax.grid(alpha=0.3)
axes[0].set_ylabel('gradient weight w(r) on grad log pi')
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# GSPO's weight is r^(1/4) (the sequence ratio, times the 1/4 share of the token in the mean),
# rescaled here per token, and drops to 0 as soon as the sequence ratio leaves
# [1 - 3e-4, 1 + 4e-4] on the pushing side: almost any off-policy step clips it. That is why
# the experiment reports each arm's clip fraction next to its accuracy.

# %% [markdown]
# ## 2. The comparison: accuracy vs step and vs wall clock
#
# From `results/policy_objectives_protocol/` (the default: 4 objectives + the noise floor x 4
# seeds), else from a smoke run into a temporary directory.

# %%
if (RESULTS / 'results.md').exists():
  workdir = RESULTS
else:
  print(f'No committed results in {RESULTS}; running the smoke config (numbers mean nothing).')
  smoke_dir = tempfile.TemporaryDirectory(prefix='policy_objectives_smoke_')  # removed on exit
  workdir = pathlib.Path(smoke_dir.name)
  jax.config.update('jax_disable_most_optimizations', True)  # compile time dominates a smoke run
  smoke = po_config.get_config('smoke')
  po.validate(smoke)
  print(po.run(smoke, str(workdir)))
records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
text = (workdir / 'results.md').read_text()
report.show_markdown(text[text.index('## Runs') : text.index('![')])
report.show_markdown(text[text.index('## Reading') :])

# %%
arms = list(dict.fromkeys(r['arm'] for r in records))
seeds = sorted({r['seed'] for r in records})
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for i, arm in enumerate(arms):
  for j, seed in enumerate(seeds):
    pts = [r for r in records if r['arm'] == arm and r['seed'] == seed and 'eval_exact_match' in r]
    for ax, key in zip(axes, ('iteration', 'wall')):
      ax.plot(
        [p[key] for p in pts],
        [p['eval_exact_match'] for p in pts],
        color=f'C{i}',
        ls='-' if j == 0 else '--',
        marker='o',
        ms=3,
        label=arm if j == 0 else None,
      )
axes[0].set_xlabel('RL step')
axes[1].set_xlabel('training wall clock, s (compile and evaluation excluded)')
axes[0].set_ylabel('held-out greedy exact match')
for ax in axes:
  ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.suptitle('solid: first seed, dashed: second seed')
fig.tight_layout()
plt.show()
