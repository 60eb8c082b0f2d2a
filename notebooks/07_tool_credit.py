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
# # Turn-level credit for a tool-using agent: MatchTIR, MARS and turn-level GAE
#
# A tool-using agent acts in turns: it calls a tool, reads the reply, calls again, answers.
# Outcome-only RL (GRPO) gives every turn of a trajectory the same advantage. MatchTIR
# (arXiv 2601.10712) scores each predicted tool call by matching it against the reference
# calls (hard: a one-to-one assignment; soft: optimal transport) and combines the turn-level
# return of these rewards with the trajectory-level advantage; MARS (arXiv 2510.15414) uses a
# turn-level return with agent-specific normalisation; turn-level GAE uses a critic value at
# each turn start. `jaxca.credit.turns` holds the kernels, `jaxca.estimators.turns` the stages.
#
# Sections: (1) the matched rewards of one hand-made trajectory under the official greedy rule,
# the optimal assignment and Sinkhorn OT; (2) the two-turn toy with known true advantages: which
# turn-level estimators are unbiased; (3) the reproduction's results
# (`results/tool_credit_warmstart/`, every arm from one SFT warm start, when committed, else the
# older random-init run `results/tool_credit_protocol/`, else a smoke run whose numbers mean
# nothing).

# %%
import json
import os
import pathlib
import sys
import tempfile


def find_repo_root(start=None):
  """The nearest directory at or above `start` holding jaxca/ and configs/."""
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
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from configs import tool_credit as tc_config  # noqa: E402
from experiments import tool_credit as tc  # noqa: E402
from jaxca import report  # noqa: E402
from jaxca.credit import turns  # noqa: E402

SMOKE = os.environ.get('JAXCA_SMOKE', '0') == '1'
# The warm-started run when committed, else the older random-init one.
RESULTS = next(
  (d for d in (ROOT / 'results' / n for n in ('tool_credit_warmstart', 'tool_credit_protocol'))
   if (d / 'results.md').exists()),
  ROOT / 'results' / 'tool_credit_warmstart',
)  # fmt: skip

# %% [markdown]
# ## 1. Matched rewards of one trajectory
#
# Four predicted calls (name, one argument) against two reference calls. The similarity is
# MatchTIR's `tool_similarity`: 0 for another tool, else (1 + Jaccard of the parameter names +
# equal values) / (2 + number of reference parameters): 1 for an exact call, 2/3 for the right
# tool with a wrong value. The official "Hungarian" rule is greedy; the optimal assignment can
# differ from it; OT spreads each call's mass over the references (rewards <= 1/P).

# %%
pred_names, pred_args = np.asarray([0, 0, 1, 0]), np.asarray([[3], [4], [2], [3]])
ref_names, ref_args = np.asarray([0, 1]), np.asarray([[3], [2]])
sim = np.asarray(turns.call_similarity(pred_names, pred_args, ref_names, ref_args))
rows = {
  'greedy (official)': turns.matched_call_rewards(sim, assignment='greedy'),
  'optimal (KM)': turns.matched_call_rewards(sim, assignment='km'),
  'OT (Sinkhorn, reg 0.1)': turns.matched_call_rewards(sim, assignment='ot'),
}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].imshow(sim, cmap='Blues', vmin=0, vmax=1)
for (i, j), v in np.ndenumerate(sim):
  axes[0].text(j, i, f'{v:.2f}', ha='center', va='center')
axes[0].set_xlabel('reference call')
axes[0].set_ylabel('predicted call')
axes[0].set_title('similarity S')
for k, (name, r) in enumerate(rows.items()):
  axes[1].bar(np.arange(4) + 0.25 * (k - 1), np.asarray(r), 0.25, label=name)
axes[1].axhline(0, color='k', lw=0.5)
axes[1].set_xlabel('predicted call')
axes[1].set_ylabel('reward (unmatched: -0.5)')
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The two-turn toy: which turn-level estimators are unbiased?
#
# Turn 1 from s0 (3 actions): a=0 -> A, a=1 -> B, a=2 ends with reward 0. In A both actions
# give 1; in B action 0 gives 0 and action 1 gives 1. True advantages (Q - V): turn 1
# (+0.5, 0, -0.5), turn 2: 0 in A, (-0.5, +0.5) in B. The batch is the exact population.
# Turn-level GAE with the true values recovers them; MatchTIR's turn level (grouped by turn
# index, as MT-GRPO) pools A and B at turn 2 and is biased; so is MARS's per-agent baseline.

# %%
rewards = np.asarray([[0, 1], [0, 1], [0, 0], [0, 1], [0, 0], [0, 0]], np.float32)
valid = np.asarray([[1, 1]] * 4 + [[1, 0]] * 2, bool)
values = np.asarray([[0.5, 1.0]] * 2 + [[0.5, 0.5]] * 2 + [[0.5, 0.0]] * 2, np.float32)
true = np.asarray([[0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5], [-0.5, 0], [-0.5, 0]])
zeros = np.zeros(6, np.int32)
est = {
  'turn GAE (true V, lambda 1)': turns.turn_gae(rewards, values, valid, 1.0, 1.0)[0],
  'MatchTIR turn level (x2)': 2
  * turns.dual_level_advantages(zeros.astype(np.float32), rewards, valid, zeros, 1, 1.0),
  'MARS (mean, mean)': turns.mars_advantages(rewards, valid, zeros, 1, 1.0),
}
labels = ['A,a0 t2', 'A,a1 t2', 'B,a0 t2', 'B,a1 t2']
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.bar(np.arange(4) - 0.3, true[:4, 1], 0.2, color='k', label='true Q - V')
for k, (name, a) in enumerate(est.items()):
  ax.bar(np.arange(4) - 0.1 + 0.2 * k, np.asarray(a)[:4, 1], 0.2, label=name)
ax.set_xticks(range(4), labels)
ax.axhline(0, color='k', lw=0.5)
ax.set_ylabel('turn-2 advantage')
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The reproduction: outcome-only GRPO vs matched turn credit on ToolArith
#
# From `results/tool_credit_warmstart/` (the default: 5 arms x 4 seeds from one SFT warm start)
# when committed, else `results/tool_credit_protocol/` (the older run from a random init), else
# a smoke run into a temporary directory.

# %%
if (RESULTS / 'results.md').exists():
  workdir = RESULTS
else:
  print(f'No committed results in {RESULTS}; running the smoke config (numbers mean nothing).')
  smoke_dir = tempfile.TemporaryDirectory(prefix='tool_credit_smoke_')  # removed on exit
  workdir = pathlib.Path(smoke_dir.name)
  jax.config.update('jax_disable_most_optimizations', True)
  smoke = tc_config.get_config('smoke')
  tc.validate(smoke)
  print(tc.run(smoke, str(workdir)))
records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
text = (workdir / 'results.md').read_text()
report.show_markdown(text[text.index('## Runs') : text.index('![')])
report.show_markdown(text[text.index('## Reading') :])

# %%
arms = list(dict.fromkeys(r['arm'] for r in records))
seeds = sorted({r['seed'] for r in records})
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for i, arm in enumerate(arms):
  for j, seed in enumerate(seeds):
    pts = [r for r in records if r['arm'] == arm and r['seed'] == seed and 'eval_accuracy' in r]
    for ax, key in zip(axes, ('eval_accuracy', 'eval_precision', 'eval_calls')):
      ax.plot([p['iteration'] for p in pts], [p[key] for p in pts], color=f'C{i}',
              ls='-' if j == 0 else '--', label=arm if j == 0 else None)  # fmt: skip
for ax, name in zip(axes, ('held-out accuracy', 'call precision', 'calls per problem')):
  ax.set_xlabel('RL step')
  ax.set_title(name)
  ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()
