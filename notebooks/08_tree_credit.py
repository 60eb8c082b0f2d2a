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
# # Tree rollouts and tree credit (SPO-tree, TreeRL, TreePS-RAG)
#
# A rollout tree shares prefixes between a prompt's responses: each node is a segment of
# tokens, each root-to-leaf path a response, and a node's value is the mean outcome of the
# leaves below it, so every segment gets process credit from outcomes alone. SPO-tree (Guo et
# al. 2025, arXiv 2505.23564) gives a segment `V(node) - V(parent)`; TreeRL (Hou et al. 2025,
# arXiv 2506.11902) adds the global advantage against the root and divides by the square
# root of the number of leaves; TreePS-RAG (arXiv 2601.06922) reads step rewards off subtree
# outcomes. `jaxca.tree_sampling.sample_tree` samples such trees inside jit (the KV cache of a
# node is copied to its children); `experiments/tree_credit.py` compares them with independent
# samples (GRPO, SPO-chain, VinePPO) at equal generated tokens.
#
# Sections: (1) one sampled tree, its shared prefixes and its token cost; (2) the four credit
# rules on one hand-made tree; (3) the committed learning curves (`results/tree_credit/`).
# `JAXCA_SMOKE=1` (CI) changes nothing here but skips missing results. The notebook finds the
# repository root itself, so it runs from `notebooks/` or from the root.

# %%
import json
import os
import pathlib
import sys


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
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from jaxca import tasks  # noqa: E402
from jaxca import tree_sampling  # noqa: E402
from jaxca.credit import tree  # noqa: E402
from jaxca.networks import transformer  # noqa: E402

RESULTS = ROOT / 'results' / 'tree_credit'

# %% [markdown]
# ## 1. One tree per prompt
#
# Branching (2, 2, 2) at the first three step boundaries of a 4-step arithmetic chain (2
# tokens per step; the last segment holds steps 3 and 4): 8 leaves, like GRPO's 8 samples,
# but the first steps are shared, so the tree samples at most 2 x 2 + 4 x 2 + 8 x 4 = 44
# tokens instead of 64. Every level branches: an only child's child-minus-parent credit is 0,
# so its tokens would get none and its parent's tokens its blame (section 2, node 6). An
# untrained policy here: the point is the structure (node ids of each token, shared
# prefixes), not the answers.

# %%
task = tasks.make('arith', num_steps=4, modulus=10, ops='invertible')
cfg = ml_collections.ConfigDict(
  dict(width=32, depth=1, num_heads=2, max_len=32, dtype='float32', value_head=False)
)
policy = transformer.make_policy(cfg, vocab_size=task.vocab.size)
params = policy.init(jax.random.key(0))
batch = task.generate(0, 2)
prompts = jnp.asarray(batch['prompts'])
branching, segment_len = (2, 2, 2), (2, 2, 4)
s = jax.jit(
  lambda key: tree_sampling.sample_tree(
    policy, params, key, prompts, prompts != task.vocab.pad_id, branching=branching,
    segment_len=segment_len, eos_id=task.vocab.eos_id, pad_id=task.vocab.pad_id,
  )
)(jax.random.key(1))  # fmt: skip
print('parents:', np.asarray(s.parents))
for leaf in range(8):
  print(
    f'leaf {leaf}: nodes {np.asarray(s.node_ids[leaf])}  {task.vocab.decode(s.responses[leaf])}'
  )
print('tokens sampled per tree:', np.asarray(s.generated), '(8 independent samples: <= 64 each)')

# %% [markdown]
# ## 2. Four credit rules on one tree
#
# Root 0 (the prompt) with two first steps 1, 2; node 1 has three children (leaves 3, 4, 5),
# node 2 one child 6 with two leaves 7, 8. Outcomes: leaves 3 and 5 right, 4 wrong; 7 right,
# 8 wrong. The step after node 1 is usually right, so node 1 earns credit; TreeRL's global
# term also rewards what beats the prompt's mean. Node 6 is node 2's only child: V(6) = V(2),
# so its child-minus-parent credit (SPO-tree, TreePS-RAG) is 0 and node 2's segment carries
# what node 6's tokens did; this is why experiments.tree_credit branches at every level.

# %%
parents = np.array([-1, 0, 0, 1, 1, 1, 2, 6, 6], np.int32)
r = np.array([0, 0, 0, 1, 0, 1, 0, 1, 0], np.float32)
values, counts = tree.node_values(parents, r)
rules = {
  'V (leaf mean)': values,
  'SPO-tree': tree.spo_tree_advantages(parents, r),
  'TreeRL (paper)': tree.treerl_advantages(parents, r),
  'TreeRL (shipped)': tree.treerl_advantages(parents, r, variant='shipped'),
  'TreePS-RAG step': tree.subtree_step_rewards(parents, r),
}
print('node      ' + ' '.join(f'{i:>6d}' for i in range(len(parents))))
for name, x in rules.items():
  print(f'{name:<17}' + ' '.join(f'{v:6.2f}' for v in np.asarray(x)))
fig, ax = plt.subplots(figsize=(10, 3.5))
nodes = np.arange(1, len(parents))
for i, (name, x) in enumerate(list(rules.items())[1:]):
  ax.bar(nodes + 0.2 * (i - 1.5), np.asarray(x)[1:], width=0.2, label=name)
ax.axhline(0, color='k', lw=0.5)
ax.set_xticks(nodes)
ax.set_xlabel('node')
ax.set_ylabel('segment credit')
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 3. Learning curves at equal generated tokens
#
# Held-out greedy exact match against generated tokens (policy samples + MC completions; a
# tree's shared prefixes count once) and the step-error AUC of each arm's advantages.

# %%
records = []
if (RESULTS / 'metrics.jsonl').exists():
  records = [json.loads(x) for x in (RESULTS / 'metrics.jsonl').read_text().splitlines()]
if records:
  arms = list(dict.fromkeys(r['arm'] for r in records))
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  for i, a in enumerate(arms):
    pts = [x for x in records if x['arm'] == a and x['seed'] == records[0]['seed']]
    ev = [x for x in pts if 'eval_exact_match' in x]
    axes[0].plot([x['tokens'] for x in ev], [x['eval_exact_match'] for x in ev], f'C{i}', label=a)
    au = [x for x in pts if np.isfinite(x.get('step_error_auc', np.nan))]
    axes[1].plot([x['tokens'] for x in au], [x['step_error_auc'] for x in au], f'C{i}')
  axes[0].set_ylabel('held-out exact match')
  axes[1].set_ylabel('step-error AUC')
  for ax in axes:
    ax.set_xlabel('generated tokens')
  axes[0].legend()
  plt.show()
else:
  print(f'No committed results in {RESULTS}; run experiments/tree_credit.py first.')
