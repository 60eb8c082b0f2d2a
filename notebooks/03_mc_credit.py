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
# # Monte-Carlo step values (VinePPO, SPO-chain) vs a value network vs GRPO
#
# VinePPO (Kazemnejad et al. 2024, arXiv 2410.01679) replaces PPO's value network by
# Monte-Carlo estimates: the value of the state before reasoning step i is the mean reward of
# K completions sampled from it, and step i's advantage is `V(s_{i+1}) - V(s_i)` (the last
# step: `R - V(s_{n-1})`). SPO-chain (Guo et al. 2025, arXiv 2505.23564) cuts the response
# before low-probability tokens instead of at step boundaries, and trains only on those
# tokens. `experiments/mc_credit.py` compares both with PPO-GAE (a separate critic) and GRPO
# on 4-step arithmetic chains.
#
# Sections: (1) the committed learning curves and tables (`results/mc_credit/`); (2) the value
# probe (does the critic rank alternative next steps?); (3) a per-token credit map: the
# advantages VinePPO, SPO-chain and GRPO give to the tokens of a few sampled responses.
#
# `JAXCA_SMOKE=1` (CI) uses a tiny untrained policy in section 3. The notebook finds the
# repository root itself, so it runs from `notebooks/` or from the root.

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

from jaxca import estimators  # noqa: E402
from jaxca import lm  # noqa: E402
from jaxca import prefixes  # noqa: E402
from jaxca import report  # noqa: E402
from jaxca import sampling  # noqa: E402
from jaxca import tasks  # noqa: E402
from jaxca import types  # noqa: E402
from jaxca.credit import mc  # noqa: E402
from jaxca.lm import providers as providers_lib  # noqa: E402
from jaxca.networks import transformer  # noqa: E402

SMOKE = os.environ.get('JAXCA_SMOKE', '0') == '1'
# The default run under the reproduction protocol.
RESULTS = ROOT / 'results' / 'mc_credit_protocol'

# %% [markdown]
# ## 1. Learning curves (Figure F6) and Table A
#
# Accuracy against iterations, generated tokens (policy + Monte-Carlo) and training
# wall-clock. The MC arms generate many more tokens per iteration; shared prefill (each
# state prefilled once, its KV cache repeated to the K completions) keeps their wall-clock
# per iteration within a small factor of GRPO's.

# %%
records = []
if (RESULTS / 'metrics.jsonl').exists():
  records = [json.loads(x) for x in (RESULTS / 'metrics.jsonl').read_text().splitlines()]
if records:
  arms = list(dict.fromkeys(r['arm'] for r in records))
  seeds = sorted({r['seed'] for r in records})
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for i, a in enumerate(arms):
    for s in seeds:
      pts = [r for r in records if r['arm'] == a and r['seed'] == s and 'eval_exact_match' in r]
      for ax, key in zip(axes, ('iteration', 'tokens', 'wall')):
        ax.plot(
          [r[key] for r in pts],
          [r['eval_exact_match'] for r in pts],
          color=f'C{i}',
          ls='-' if s == seeds[0] else '--',
          label=a if s == seeds[0] else None,
        )
  for ax, lab in zip(axes, ('iteration', 'generated tokens', 'training wall-clock (s)')):
    ax.set_xlabel(lab)
  axes[0].set_ylabel('held-out exact match')
  axes[0].legend()
  plt.show()
  text = (RESULTS / 'results.md').read_text()
  report.show_markdown(text[text.index('## Table A') : text.index('![F6]')])
else:
  print(f'No committed results in {RESULTS}; run experiments/mc_credit.py first.')

# %% [markdown]
# ## 2. The value probe (Table B)
#
# For the PPO-GAE critic at a few checkpoints: how well it predicts MC-128 values of held-out
# states, how often it orders two alternative next steps like their MC-128 Q-values, and how
# well `-A_i` flags the first wrong step. MC-K rows are the same with K completions.

# %%
if (RESULTS / 'probe.json').exists():
  probe = json.loads((RESULTS / 'probe.json').read_text())
  for ck, res in probe.items():
    for name, r in res.items():
      if not name.startswith('_'):
        print(
          f'iter {ck:>3} {name:>6}: MAE {r["mae"]:.3f}  rank-acc {r["rank_acc"]:.2f}  '
          f'step-error AUC {r["step_error_auc"]:.2f}'
        )
else:
  print('No committed probe results.')

# %% [markdown]
# ## 3. A per-token credit map
#
# Sample a few responses, estimate the Monte-Carlo value of every state (VinePPO: the states
# before each step; SPO: the states before each low-probability token), and show the token
# advantages of VinePPO, SPO-chain (before whitening) and GRPO. A smoke run uses a tiny
# untrained policy on 2-step chains; otherwise a 4-step policy is warm started by a short SFT.

# %%
K = 2 if SMOKE else 4
task = tasks.make('arith', num_steps=K, modulus=10, ops='invertible')
cfg = ml_collections.ConfigDict(
  dict(
    width=32 if SMOKE else 128,
    depth=1 if SMOKE else 2,
    num_heads=2 if SMOKE else 4,
    max_len=task.prompt_len + 2 * task.response_len,
    dtype='float32',
    value_head=False,
  )
)
policy = transformer.make_policy(cfg, vocab_size=task.vocab.size)
params = policy.init(jax.random.key(0))
if not SMOKE:  # a short warm start so the policy is sometimes right
  import optax

  tx = optax.adam(1e-3)
  state = lm.init_from_params(params, tx)
  update = jax.jit(lm.make_sft_update(policy, task, tx))
  data = task.generate(0, 64 * 200, split='train')
  for i in range(200):
    sl = slice(64 * i, 64 * (i + 1))
    state, _ = update(state, {'prompts': data['prompts'][sl], 'targets': data['targets'][sl]})
  params = state['params']

G, NUM_MC = 4, 2 if SMOKE else 16
batch = {k: np.asarray(v) for k, v in task.generate(1, 2, split='test').items()}
pm = lm.prompt_mask(task, jnp.asarray(batch['prompts']))
s = sampling.sample(
  policy,
  params,
  jax.random.key(1),
  jnp.asarray(batch['prompts']),
  pm,
  num_samples=G,
  max_new_tokens=task.response_len,
  eos_id=task.vocab.eos_id,
  pad_id=task.vocab.pad_id,
)
rows = {k: np.repeat(v, G, axis=0) for k, v in batch.items()}
n = task.response_len
outcome = np.asarray(task.outcome(s.responses, s.mask, rows))
complete = jax.jit(
  lambda t, m, r: providers_lib.mc_complete_and_score(
    policy, task, params, jax.random.key(2), t, m, r, num_samples=NUM_MC, max_new_tokens=n
  )
)


def mc_grid(step_ids):
  tok, smask, exists = mc.step_prefixes(
    s.tokens[:, : task.prompt_len], s.valid[:, : task.prompt_len], s.responses, s.mask, step_ids, n
  )
  return prefixes.mc_step_values(complete, tok, smask, exists, rows, num_samples=NUM_MC).values


step_ids = task.parse_steps(s.responses, s.mask).step_ids
rewards = lm.last_token_rewards(jnp.asarray(outcome), s.mask)
traj = types.Trajectory(
  rewards=rewards,
  mask=s.mask,
  log_probs=s.log_probs,
  step_ids=step_ids,
  mc_values=jnp.asarray(mc_grid(step_ids)),
  group_ids=jnp.arange(2 * G) // G,
  num_groups=2,
  groups_contiguous=True,
)
spo_ids = mc.spo_segments(s.log_probs, s.mask, 0.9, 1)
maps = {
  'VinePPO': estimators.make('vineppo')(traj).advantages,
  'SPO-chain': estimators.make('spo_chain')(
    traj.replace(mc_values=jnp.asarray(mc_grid(spo_ids)))
  ).advantages,
  'GRPO': estimators.make('grpo')(traj).advantages,
}
fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
for ax, (name, adv) in zip(axes, maps.items()):
  a = np.where(np.asarray(s.mask), np.asarray(adv), np.nan)
  im = ax.imshow(a, cmap='coolwarm', vmin=-1, vmax=1, aspect='auto')
  fig.colorbar(im, ax=ax, label='advantage')
  for b in range(a.shape[0]):
    for t in range(n):
      if s.mask[b, t]:
        ax.text(
          t,
          b,
          task.vocab.decode(np.asarray(s.responses[b, t : t + 1])),
          ha='center',
          va='center',
          fontsize=7,
        )
  ax.set_yticks(range(a.shape[0]))
  ax.set_yticklabels([f'R={int(r)}' for r in outcome])
  ax.set_title(name)
  ax.set_xlabel('response token')
plt.tight_layout()
plt.show()
