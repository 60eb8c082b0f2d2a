"""Dict-based NumPy reference for GiGPO (arXiv 2505.10978) in the verl-agent row layout. No jax.

One row per environment step, with arbitrary hashable ids: `uid` (the task /
episode group), `traj` (the trajectory), `anchor` (any hashable observation
key). Float64 loops over Python dicts.

Conventions (jaxca's, see `jaxca.credit.gigpo`): F = x - mean (mean_norm) or
(x - mean) / (unbiased std + eps) (mean_std_norm); a group with fewer than 2
members gives 0 (verl-agent gives the raw score for a singleton *episode* group).
"""

import collections

import numpy as np


def _norm(values_by_group, std_norm, eps):
  """{group: [values]} -> {group: (mean, std or None)}."""
  stats = {}
  for g, vals in values_by_group.items():
    vals = np.asarray(vals, np.float64)
    if len(vals) < 2:
      stats[g] = None
      continue
    mean = vals.mean()
    std = vals.std(ddof=1)
    stats[g] = (mean, std)
  return stats


def _apply(x, stat, std_norm, eps):
  if stat is None:
    return 0.0
  mean, std = stat
  return (x - mean) / (std + eps) if std_norm else x - mean


def step_returns(rewards, trajs, gamma):
  """Discounted return-to-go of each row within its trajectory (rows in time order)."""
  by_traj = collections.defaultdict(list)
  for i, t in enumerate(trajs):
    by_traj[t].append(i)
  out = np.zeros(len(rewards))
  for idx in by_traj.values():
    run = 0.0
    for i in reversed(idx):
      run = rewards[i] + gamma * run
      out[i] = run
  return out


def episode_advantages(scores, uids, trajs, std_norm, per_trajectory, eps=1e-6):
  """A^E per row; `scores` = the episode return repeated on every row of the trajectory."""
  groups = collections.defaultdict(list)
  seen = set()
  for s, u, t in zip(scores, uids, trajs):
    if per_trajectory and (u, t) in seen:
      continue
    seen.add((u, t))
    groups[u].append(s)
  stats = _norm(groups, std_norm, eps)
  return np.asarray([_apply(s, stats[u], std_norm, eps) for s, u in zip(scores, uids)])


def step_advantages(returns, uids, anchors, std_norm, eps=1e-6):
  """A^S per row: rows of one uid with equal anchors form a step group."""
  groups = collections.defaultdict(list)
  for r, u, a in zip(returns, uids, anchors):
    groups[(u, a)].append(r)
  stats = _norm(groups, std_norm, eps)
  return np.asarray(
    [_apply(r, stats[(u, a)], std_norm, eps) for r, u, a in zip(returns, uids, anchors)]
  )


def partition(keys):
  """The partition of row indices by equal keys, as a set of frozensets."""
  groups = collections.defaultdict(set)
  for i, k in enumerate(keys):
    groups[k].add(i)
  return {frozenset(v) for v in groups.values()}
