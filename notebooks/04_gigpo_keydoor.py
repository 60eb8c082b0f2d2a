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
# # GiGPO on KeyDoor: anchor-state step groups vs GRPO vs turn-index groups
#
# GiGPO (Feng et al., arXiv 2505.10978) adds to GRPO's episode-level advantage a
# step-level one: the discounted return from a turn, normalised among the turns of the
# same task's G rollouts that start from the **same observation** (an anchor state).
# MT-GRPO-style turn-level credit (arXiv 2505.11821) normalises per **turn index**
# instead, which pools different states (and only the trajectories that survived to that
# turn).
#
# Sections: (1) the committed results of `experiments/gigpo_keydoor.py` (table, F4, F5);
# (2) one batch of rollouts on KeyDoor and its per-turn credit map: episode advantage,
# anchor-state step advantage and turn-index step advantage for the G rollouts of one
# task. Set `JAXCA_SMOKE=1` for a quick run (CI does). The notebook finds the repository
# root itself and writes nothing into `results/`.

# %%
import json
import os
import pathlib
import sys


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
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from jaxca import report  # noqa: E402
from jaxca.credit import gigpo  # noqa: E402
from jaxca.envs import keydoor  # noqa: E402
from jaxca.lm import multiturn  # noqa: E402
from jaxca.networks import transformer  # noqa: E402

SMOKE = os.environ.get('JAXCA_SMOKE', '0') == '1'
# The default run under the reproduction protocol.
RESULTS = ROOT / 'results' / 'gigpo_keydoor_warmstart'

# %% [markdown]
# ## 1. Committed results
#
# `results.md` holds the table and the confirm/refute verdict written by the run; F4 is
# eval success against training episodes, F5 the step-group-size histograms.

# %%
if (RESULTS / 'results.md').exists():
  text = (RESULTS / 'results.md').read_text()
  start = text.find('## Expected vs observed')
  report.show_markdown(text[start : text.find('## Table')])
  rows = [json.loads(line) for line in open(RESULTS / 'metrics.jsonl')]
  print(f'{len(rows)} metric records; keys: {sorted(rows[-1])[:12]} ...')
else:
  print(f'no committed results at {RESULTS}')

# %%
figs = [RESULTS / 'F4.png', RESULTS / 'F5.png']
figs = [f for f in figs if f.exists()]
if figs:
  fig, axes = plt.subplots(1, len(figs), figsize=(8 * len(figs), 5))
  for ax, f in zip(np.atleast_1d(axes), figs):
    ax.imshow(plt.imread(f))
    ax.axis('off')
  plt.show()

# %% [markdown]
# ## 2. One batch and its per-turn credit
#
# A randomly initialised policy (as every arm starts) plays G rollouts of a few tasks. For
# one task we show, per rollout (rows) and turn (columns), the anchor state id, the
# episode advantage A^E, GiGPO's step advantage A^S (anchor-state groups) and the
# turn-index step advantage (mean_std_norm, gamma 0.95).

# %%
if SMOKE:
  env = keydoor.make(size=4, num_walls=0, horizon=8, num_layouts=4)
  width, depth = 32, 1
else:
  env = keydoor.make()
  width, depth = 64, 2
G, P = 8, 4
pcfg = dict(width=width, depth=depth, num_heads=2, max_len=128, dtype='float32', value_head=False)
policy = transformer.make_policy(ml_collections.ConfigDict(pcfg), vocab_size=env.vocab_size)
params = policy.init(jax.random.key(0))
tasks = env.sample_tasks(jax.random.key(1), P)
roll = jax.jit(lambda p, k, t: multiturn.rollout(policy, p, k, env, t, group_size=G))
s = jax.device_get(roll(params, jax.random.key(2), tasks))
gid = jnp.arange(P * G) // G
steps = jnp.asarray(s.active)
a_e = gigpo.episode_advantages(s.returns, gid, P, steps, 1.0, 0.0)
keys_state = gigpo.anchor_keys(gid, s.anchors)
keys_turn = gigpo.anchor_keys(gid, s.anchors, use_state=0.0, use_turn=1.0)
a_state = gigpo.step_advantages(s.rewards, steps, keys_state, 0.95, 1.0)
a_turn = gigpo.step_advantages(s.rewards, steps, keys_turn, 0.95, 1.0)
sizes = gigpo.group_sizes(gigpo.step_group_ids(keys_state, steps), steps).reshape(steps.shape)
task = int(np.argmax(np.asarray(s.returns).reshape(P, G).std(1)))  # a task with mixed outcomes
rows = slice(task * G, (task + 1) * G)
print("returns of the task's rollouts:", np.asarray(s.returns)[rows])
print('anchor ids (-1 = episode over):')
print(np.asarray(s.anchors)[rows])

# %%
panels = [
  ('A^E (episode)', np.where(steps, np.asarray(a_e)[:, None], np.nan)),
  ('A^S anchor-state groups', np.where(steps, a_state, np.nan)),
  ('A^S turn-index groups', np.where(steps, a_turn, np.nan)),
  ('anchor group size', np.where(steps, sizes, np.nan)),
]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
for ax, (title, x) in zip(axes, panels):
  im = ax.imshow(x[rows], aspect='auto', cmap='coolwarm' if 'A' in title else 'viridis')
  ax.set_title(title, fontsize=9)
  ax.set_xlabel('turn')
  ax.set_ylabel('rollout')
  fig.colorbar(im, ax=ax)
plt.tight_layout()
plt.show()

# %% [markdown]
# Anchor groups give a non-zero step advantage only where rollouts of the task revisit the
# same (cell, key) state; singleton groups (size 1) give 0. Turn-index groups compare every
# rollout alive at a turn, whatever its state.
