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
# # PURE: why summed process rewards get hacked and min-form credit does not
#
# Cheng et al., "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model
# Needs for Reasoning" (arXiv 2504.15275). A process reward model (PRM) scores every step
# of a response. Summing those scores into a return ("sum-form") pays a policy for every
# extra step the PRM likes; PURE's min-form credit (a softmin over the steps, temperature
# 0.1) makes the return about the *worst* step, so padding a response with liked steps
# gains nothing.
#
# Here the task is arithmetic chains (K = 3 steps, mod 10) with a filler step `THINK ;`
# that the scripted PRM (`jaxca.prm.scripted_prm`) scores +0.9, above a correct value
# step (+0.6). Sections: (1) the per-token credit of a few hand-written responses under
# sum-form and min-form, computed by the `pure` estimator stage; (2) the committed run of
# `experiments/pure_credit.py` (arms A1-A4, 2 seeds): table, figures F1-F3 and samples.
#
# Set `JAXCA_SMOKE=1` to run quickly (CI does). The notebook finds the repository root
# itself, so it runs from `notebooks/` (as Jupyter starts it) or from the root.

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

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxca import estimators  # noqa: E402
from jaxca import prm as prm_lib  # noqa: E402
from jaxca import report  # noqa: E402
from jaxca.tasks import arith  # noqa: E402
from jaxca.types import Trajectory  # noqa: E402

SMOKE = os.environ.get('JAXCA_SMOKE', '0') == '1'
# The default run under the reproduction protocol.
RESULTS = ROOT / 'results' / 'pure_credit_protocol_v2'

# %% [markdown]
# ## 1. Per-token credit of one group of responses
#
# One prompt (x0 = 2, then +3, *7, -1: the chain 5, 5, 4) and four responses: the correct
# one, a correct one padded with three THINK steps, a wrong one, and a wrong one padded
# with THINK steps. The blind PRM-B scores each step; the `pure` stage turns the scores
# into advantages (token RLOO baseline over the group, separators and EOS masked to 0, no
# KL, no VR, before whitening). Compare the first token, where the policy chooses between
# a value and THINK: under sum-form the THINK opening of the padded correct response gets
# more credit than the value opening of the plain one; under min-form the two are close
# (both responses' worst step is +c) and the token baseline charges the longer one.

# %%
task = arith.make_task(num_steps=3, modulus=10, ops='invertible', filler_rate=0.2,
                       max_response_len=16)  # fmt: skip
voc = task.vocab
texts = [
  '5 ; 5 ; 4 <eos>',
  'THINK ; THINK ; 5 ; THINK ; 5 ; 4 <eos>',
  '5 ; 3 ; 2 <eos>',
  'THINK ; 5 ; THINK ; 3 ; THINK ; 2 <eos>',
]
n = task.response_len
resp = np.zeros((len(texts), n), np.int32)
for i, t in enumerate(texts):
  r = voc.encode(t)
  resp[i, : len(r)] = r
mask = resp != voc.pad_id
prompts = np.repeat(voc.encode('<bos> 2 + 3 * 7 - 1 =')[None], len(texts), 0)
scores = prm_lib.scripted_prm(task).score(None, prompts, resp, mask)
steps = task.parse_steps(resp, mask)
traj = Trajectory(
  rewards=jnp.zeros(resp.shape), mask=jnp.asarray(mask), step_ids=steps.step_ids,
  step_rewards=scores, group_ids=jnp.zeros(len(texts), jnp.int32), num_groups=1,
)  # fmt: skip
est = estimators.make('pure', verifiable=False, kl_in_reward=False)
credit_maps = {}
for name, tid in (('sum-form', 0.0), ('min-form (softmin, T=0.1)', 1.0)):
  hp = dict(est.hparams, terms=(dict(est.hparams['terms'][0], transform_id=np.float32(tid)),))
  credit_maps[name] = np.asarray(est(traj, hp).advantages)
  first = credit_maps[name][:, 0]  # the first decision: a value or THINK
  print(f'{name}: advantage of the first token per response {np.round(first, 2)}')

fig, axes = plt.subplots(2, 1, figsize=(10, 5))
for ax, (name, adv) in zip(axes, credit_maps.items()):
  lim = np.abs(adv).max()
  im = ax.imshow(np.where(mask, adv, np.nan), cmap='coolwarm', vmin=-lim, vmax=lim, aspect='auto')
  fig.colorbar(im, ax=ax, label='advantage')
  for i in range(len(texts)):
    for t in range(n):
      if mask[i, t]:
        ax.text(t, i, voc.decode([resp[i, t]]), ha='center', va='center', fontsize=7)
  ax.set(title=f'{name}: per-token advantage', yticks=range(len(texts)), xticks=[])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The committed run (the default arms, 4 seeds)
#
# A1 = verifiable rewards only (RLOO on solved - 1, every prompt), A2 = sum-form PRM,
# A3 = min-form PRM, A4 = min-form PRM + verifiable rewards on 10% of prompts. The
# experiment writes `results.md` with the table and its own "expected vs observed"
# verdicts on H1-H4.

# %%
if (RESULTS / 'results.md').exists():
  text = (RESULTS / 'results.md').read_text()
  report.show_markdown(text[: 2500 if SMOKE else None])
else:
  print(f'{RESULTS} is missing: run `python -m experiments.pure_credit --config '
        f'configs/pure_credit.py --workdir results/pure_credit` first.')  # fmt: skip

# %%
for name in ('f1_curves.png', 'f2_goodhart.png', 'f3_step_accuracy.png'):
  path = RESULTS / name
  if path.exists():
    img = plt.imread(path)
    plt.figure(figsize=(12, 6) if name.startswith('f1') else (6, 4.5))
    plt.imshow(img)
    plt.axis('off')
    plt.title(name)
    plt.show()

# %% [markdown]
# Greedy responses of the final policies on four held-out prompts (`samples.json`): look
# for THINK padding in the sum-form arm.

# %%
if (RESULTS / 'samples.json').exists():
  samples = json.loads((RESULTS / 'samples.json').read_text())
  for run_name, lines in samples.items():
    print(run_name)
    for line in lines[: 2 if SMOKE else None]:
      print('   ', line)
