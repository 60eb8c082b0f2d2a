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
# # Trajectory-aware eligibility traces: how RBIS cuts a trace and restores it
#
# Daley et al., "Trajectory-Aware Eligibility Traces for Off-Policy Reinforcement Learning"
# (ICML 2023). For a start time `k`, an off-policy trace `beta_{k,t}` scales the TD error
# `delta_t` in the update of `Q(S_k, A_k)`. Per-decision traces (Retrace) multiply one
# factor per step, `lambda * min(1, rho_t)`, so a single unlikely action (small
# `rho = pi / mu`) cuts the trace **for good**. Trajectory-aware traces look at the whole
# history since `k`:
#
# | method | `beta_{k,t}` |
# |---|---|
# | Retrace | `prod lambda * min(1, rho_i)` |
# | Truncated IS | `lambda^n * min(1, prod rho_i)` |
# | Recursive Retrace | `lambda * min(1, rho_t * beta_{k,t-1})` |
# | RBIS | `min(lambda^n, rho_t * beta_{k,t-1})` |
#
# RBIS (recency-bounded importance sampling) lets later actions that the target policy
# likes *more* than the behaviour policy (`rho > lambda`) undo an earlier cut, but never
# beyond TD(lambda)'s `lambda^n`. Sections: (1) traces on a hand-made trajectory with the
# online rules of `jaxca.credit.traces`, checked against the offline kernel
# `jaxca.credit.off_policy_returns`; (2) the paper's lambda sweep, reproduced by
# `experiments/rbis_gridworld.py`.
#
# Set `JAXCA_SMOKE=1` to run quickly (CI does); the sweep plot then reads the committed
# `results/rbis_gridworld.csv`, or runs a tiny smoke sweep (in a temporary directory) if
# that file is missing. The notebook finds the repository root itself, so it runs from
# `notebooks/` (as Jupyter starts it) or from the root (as a script).

# %%
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
sys.path.insert(0, str(ROOT))  # this checkout's jaxca, configs/ and experiments/

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxca import credit  # noqa: E402
from jaxca.credit import traces  # noqa: E402

SMOKE = os.environ.get('JAXCA_SMOKE', '0') == '1'
LAMBDA = 0.9

# %% [markdown]
# ## 1. One behaviour trajectory: a small ratio, then large ones
#
# On-policy-like steps (`rho = 1`), one action the target policy rarely takes
# (`rho = 0.1` at t = 4), then a run of actions it prefers (`rho = 2` for t = 5..10), then
# `rho = 1` again. We follow the trace of the start `k = 0`.

# %%
T = 24
rhos = np.ones(T, np.float32)
rhos[4] = 0.1
rhos[5:11] = 2.0
log_rhos = np.log(rhos)


def online_betas(log_rhos, lambda_, method):
  """beta_{k,t} for all k <= t with the online per-start rules ([k, t])."""

  def body(state, inputs):
    t, x = inputs
    state = traces.start(traces.advance(state, x, lambda_, method), t)
    return state, state.beta

  _, betas = jax.lax.scan(body, traces.empty(len(log_rhos)), (jnp.arange(len(log_rhos)), log_rhos))
  return np.asarray(betas).T


LABELS = {
  'retrace': 'Retrace',
  'truncated_is': 'Truncated IS',
  'recursive_retrace': 'Recursive Retrace',
  'rbis': 'RBIS',
}
betas = {m: online_betas(jnp.asarray(log_rhos), LAMBDA, m) for m in traces.TRACE_METHODS}
for m, b in betas.items():
  print(f'{LABELS[m]:>18}: ' + ' '.join(f'{v:.2f}' for v in b[0, :14]))

# %% [markdown]
# The same coefficients from the offline (forward-view) kernel: with `gamma = 1`, `Q = 0`
# and a single unit reward at step `t`, the target of step 0 is exactly `beta_{0,t}`.

# %%


def offline_beta0(method):
  def one(t):
    rewards = jnp.zeros(T).at[t].set(1.0)
    zeros = jnp.zeros(T)
    g = credit.off_policy_returns(
      zeros, zeros, rewards, jnp.ones(T), jnp.asarray(log_rhos), LAMBDA, method
    )
    return g[0]

  return np.asarray(jax.jit(jax.vmap(one))(jnp.arange(T)))


for m in traces.TRACE_METHODS:
  err = np.max(np.abs(offline_beta0(m) - betas[m][0]))
  print(f'{LABELS[m]:>18}: max |offline - online| = {err:.1e}')
  assert err < 1e-5

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
t = np.arange(T)
ax = axes[0]
for m in traces.TRACE_METHODS:
  ax.plot(t, betas[m][0], marker='o', ms=3, label=LABELS[m])
ax.plot(t, LAMBDA**t, 'k--', lw=1, label=r'$\lambda^{t-k}$ (TD($\lambda$))')
ax.axvspan(3.5, 4.5, color='tab:red', alpha=0.15)
ax.axvspan(4.5, 10.5, color='tab:green', alpha=0.1)
ax.set_xlabel('t')
ax.set_ylabel(r'$\beta_{0,t}$')
ax.set_title(rf'start k = 0, $\lambda$ = {LAMBDA}: $\rho_4$ = 0.1, $\rho_{{5..10}}$ = 2')
ax.legend(fontsize=8)
ax = axes[1]
for m in traces.TRACE_METHODS:
  ax.semilogy(t, np.maximum(betas[m][0], 1e-6), marker='o', ms=3, label=LABELS[m])
ax.semilogy(t, LAMBDA**t, 'k--', lw=1)
ax.set_xlabel('t')
ax.set_title('log scale')
fig.tight_layout()
plt.show()

# %% [markdown]
# Retrace is cut at t = 4 (to `0.1 * lambda^4`) and only decays afterwards. The three
# trajectory-aware traces recover during the `rho = 2` run. RBIS climbs back to exactly
# `lambda^n`, so it again gives the on-policy TD(lambda) weight. Recursive Retrace
# recovers to `lambda` instead, above `lambda^n`: it is not recency-bounded. Truncated IS
# recovers once the *cumulative* ratio is back above 1.
#
# The cut-and-restore happens for every start before the small ratio, not just for k = 0:

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, m in zip(axes, ['retrace', 'rbis']):
  n = t[None, :] - t[:, None]
  rel = np.where(n >= 0, betas[m] / LAMBDA ** np.maximum(n, 0), np.nan)
  im = ax.imshow(rel, vmin=0, vmax=1, cmap='viridis')
  ax.set_title(rf'{LABELS[m]}: $\beta_{{k,t}} / \lambda^{{t-k}}$')
  ax.set_xlabel('t')
axes[0].set_ylabel('start k')
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# ## 2. The paper's control experiment: lambda sweep on the Bifurcated Gridworld
#
# `python -m experiments.rbis_gridworld --config configs/rbis_gridworld.py` runs 4 methods
# x 11 lambdas x 1000 seeds of online expected-SARSA control with these traces, using the
# paper's step sizes, and writes `runs/rbis_gridworld/rbis_gridworld.csv` (AUC of the
# smoothed evaluation return over 3000 steps, mean +- 95% CI); the committed 1000-seed
# sweep is `results/rbis_gridworld.csv`.

# %%
CSV = ROOT / 'results' / 'rbis_gridworld.csv'
if CSV.exists():
  rows = np.genfromtxt(CSV, delimiter=',', names=True, dtype=None, encoding='utf-8')
elif SMOKE:  # a tiny sweep in a temporary directory (never into results/)
  from configs import rbis_gridworld as config_module
  from experiments import rbis_gridworld as experiment

  with tempfile.TemporaryDirectory() as workdir:
    experiment.run(config_module.get_config('smoke'), workdir)
    CSV = pathlib.Path(workdir) / 'rbis_gridworld.csv'
    rows = np.genfromtxt(CSV, delimiter=',', names=True, dtype=None, encoding='utf-8')
else:
  raise FileNotFoundError(
    f'{CSV} is missing: run python -m experiments.rbis_gridworld --config '
    'configs/rbis_gridworld.py --workdir results first.'
  )
print(f'{CSV.name}: {len(rows)} rows, {int(rows["num_seeds"][0])} seeds per setting')
fig, ax = plt.subplots(figsize=(7, 4))
for m in traces.TRACE_METHODS:
  sel = rows[rows['method'] == m]
  if not len(sel):
    continue
  lam, mean, ci = sel['lambda'], sel['auc_mean'], sel['auc_ci95']
  ax.plot(lam, mean, marker='o', ms=3, label=LABELS[m])
  ax.fill_between(lam, mean - ci, mean + ci, alpha=0.25, linewidth=0)
  best = np.argmax(mean)
  print(
    f'{LABELS[m]:>18}: best AUC {mean[best]:.1f} at lambda {lam[best]:.1f}; '
    f'worst {mean.min():.1f}; lambda=1: {mean[-1]:.1f}'
  )
ax.set_xlabel(r'$\lambda$')
ax.set_ylabel('AUC (3001 steps)')
ax.set_title('Bifurcated Gridworld lambda sweep (95% CI)')
ax.legend()
plt.show()
