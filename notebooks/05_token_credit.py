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
# # Token-level credit signals against oracle credit: entropy, planning tokens, attention
#
# Three families of heuristics claim to find the tokens that deserve credit: entropy marks
# "forking" tokens (GTPO / GRPO-S, arXiv 2508.04349), planning tokens deserve amplified credit
# (HICRA, arXiv 2509.03646), and attention finds "anchor" tokens that later tokens keep
# looking at (FAI) and "preplan" tokens that look far back (WAAD) (arXiv 2510.13554). On
# arithmetic chains the decisive token of a wrong response is known: the first wrong value.
# `experiments/token_credit.py` scores each signal against the oracle credit
# `A*_t = V(y<=t) - V(y<t)` from Monte-Carlo values at every token boundary (Part A) and
# trains GRPO / GTPO / GRPO-S / HICRA for a short while under one DAPO-style loss (Part B).
#
# Sections: (1) the committed tables and figures (`results/token_credit/`); (2) a per-token
# credit map of a few responses: entropy, FAI, WAAD, the GTPO weight and A*, from the
# committed Part A arrays, or recomputed with the smoke config (`JAXCA_SMOKE=1`, CI: a tiny
# untrained policy). The notebook finds the repository root itself.

# %%
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
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from configs import token_credit as token_credit_config  # noqa: E402
from experiments import token_credit_probe as probe  # noqa: E402
from jaxca import arms  # noqa: E402
from jaxca import report  # noqa: E402

SMOKE = os.environ.get('JAXCA_SMOKE', '0') == '1'
# The default run under the reproduction protocol.
RESULTS = ROOT / 'results' / 'token_credit_protocol'

# %% [markdown]
# ## 1. Committed results: Tables C and D, F7, Part B
#
# Table C summarises each token class (value token of step k, STEP, EOS); Table D scores each
# credit map against |A*| (rank correlation, whether its top token is the first error, the
# overlap of its top 20% with the top 20% of |A*|, and how much of its extra credit lands on
# format tokens).

# %%
if (RESULTS / 'results.md').exists():
  text = (RESULTS / 'results.md').read_text()
  report.show_markdown(
    text[text.index('### Checkpoint: warm start') : text.index('### Checkpoint: GRPO')]
  )
  report.show_markdown(text[text.index('## Expected vs observed') :])
  for name in ('f7_heatmaps.png', 'f_part_b.png'):
    if (RESULTS / name).exists():
      plt.figure(figsize=(12, 8 if name.startswith('f7') else 4))
      plt.imshow(plt.imread(RESULTS / name))
      plt.axis('off')
      plt.show()
else:
  print(f'No committed results in {RESULTS}; run experiments/token_credit.py first.')

# %% [markdown]
# ## 2. A per-token credit map
#
# Rows: entropy H_t, FAI (global heads), WAAD (local heads, W=4), the GTPO entropy bonus
# |r~_t - r_i| and the oracle A*_t; the green box marks the first wrong value token. Without
# committed arrays (or in smoke mode) Part A is recomputed on an untrained smoke-size policy.

# %%
config = token_credit_config.get_config('smoke')
task, policy = arms.task_and_policy(config)
path = RESULTS / 'part_a_warm.npz'
if path.exists() and not SMOKE:
  d = dict(np.load(path))
  config = token_credit_config.get_config()
  task, policy = arms.task_and_policy(config)
else:
  test = {k: np.asarray(v) for k, v in task.generate(1, 8, split='test').items()}
  test = {k: v for k, v in test.items() if k in task.batch_keys}
  params = policy.init(jax.random.key(0))
  d, _ = probe.Diagnoser(config, task, policy).run(params, test, jax.random.key(1))

picks = list(np.flatnonzero(d['first_error'] >= 0)[:3]) + list(np.flatnonzero(d['correct'])[:1])
picks = picks or [0]
fig, axes = plt.subplots(len(picks), 1, figsize=(8, 1.8 * len(picks)), squeeze=False)
for ax, b in zip(axes[:, 0], picks):
  n = int(d['mask'][b].sum())
  rows = [d['entropy'][b], d['fai_global'][b], d['waad'][1][b], d['gtpo_weight'][b], d['a_star'][b]]
  mat = np.stack(rows)[:, :n]
  mat = mat / np.maximum(np.abs(mat).max(axis=1, keepdims=True), 1e-9)
  im = ax.imshow(mat, cmap='RdBu_r', vmin=-1, vmax=1, aspect='auto')
  fig.colorbar(im, ax=ax, label='value / max |value| of its row')
  ax.set_yticks(range(5))
  ax.set_yticklabels(['H', 'FAI', 'WAAD', 'GTPO w', 'A*'], fontsize=7)
  ax.set_xticks(range(n))
  ax.set_xticklabels(task.vocab.decode(d['responses'][b][:n], skip_pad=False).split())
  if d['first_error'][b] >= 0:
    e = d['first_error'][b]
    ax.add_patch(plt.Rectangle((e - 0.5, -0.5), 1, 5, fill=False, ec='lime', lw=2))
fig.tight_layout()
plt.show()
rows = probe.table_d_rows(d, config)
for name, r in rows.items():
  if not name.startswith('_'):
    print(f'{name:>15}: hit@1 {r["hit1"]:.2f}  top-20% precision {r["precision"]:.2f}')
