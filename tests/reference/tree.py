"""Slow, obviously correct loops for jaxca.credit.tree (one tree at a time). No jax import.

Trees are parent lists (node 0 the root, parents[0] = -1). The TreeRL 'shipped' reference
walks the official code's steps literally: leave-one-out leaf outcomes, accumulation up the
parent chain, sqrt reweighting over selected leaves, then root-to-leaf paths with the zero
fill-in and `value + state_value` (THUDM/TreeRL tree_node.py / parallel_mcts.py).
"""

import math

import numpy as np


def children(parents):
  out = {i: [] for i in range(len(parents))}
  for i, p in enumerate(parents):
    if p >= 0:
      out[int(p)].append(i)
  return out


def effective(parents, valid):
  eff = []
  for i in range(len(parents)):
    ok, j = True, i
    while j >= 0:
      ok = ok and bool(valid[j])
      j = int(parents[j])
    eff.append(ok)
  return eff


def leaves(parents, valid):
  eff = effective(parents, valid)
  ch = children(parents)
  return [i for i in range(len(parents)) if eff[i] and not any(eff[c] for c in ch[i])]


def subtree_leaves(parents, valid, n):
  out = []
  for leaf in leaves(parents, valid):
    j = leaf
    while j >= 0:
      if j == n:
        out.append(leaf)
        break
      j = int(parents[j])
  return out


def node_values(parents, r, valid, aggregate='leaves'):
  eff = effective(parents, valid)
  ch = children(parents)
  lv = set(leaves(parents, valid))
  n = len(parents)
  values, counts = np.zeros(n), np.zeros(n)

  def rec(i):
    if i in lv:
      return float(r[i])
    kids = [c for c in ch[i] if eff[c]]
    return sum(rec(c) for c in kids) / len(kids)

  for i in range(n):
    if not eff[i]:
      continue
    below = subtree_leaves(parents, valid, i)
    counts[i] = len(below)
    if aggregate == 'leaves':
      values[i] = sum(float(r[j]) for j in below) / len(below)
    else:
      values[i] = rec(i)
  return values, counts


def treerl_paper(parents, r, valid):
  v, c = node_values(parents, r, valid)
  eff = effective(parents, valid)
  out = np.zeros(len(parents))
  for i in range(1, len(parents)):
    if eff[i]:
      p = int(parents[i])
      out[i] = ((v[i] - v[0]) + (v[i] - v[p])) / math.sqrt(c[i])
  return out


def treerl_shipped(parents, r, valid, selected=None):
  """The official pipeline, step by step, on one tree; per-node results read off the paths."""
  n = len(parents)
  eff = effective(parents, valid)
  lv = leaves(parents, valid)
  if selected is None:
    selected = np.ones(n, bool)
  acc = np.zeros(n)
  terminal = np.zeros(n)
  sel = np.zeros(n)
  # leaf_normalize: leave-one-out mean of the other leaves
  total, k = sum(float(r[i]) for i in lv), len(lv)
  for i in lv:
    val = float(r[i]) - (total - float(r[i])) / (k - 1) if k > 1 else 0.0
    acc[i] = val
    terminal[i] += 1
    j = int(parents[i])
    while j >= 0:  # leaf_backpropagate
      terminal[j] += 1
      acc[j] += val
      j = int(parents[j])
  for i in lv:  # selected_backpropagate
    if selected[i]:
      j = i
      while j >= 0:
        sel[j] += 1
        j = int(parents[j])
  for i in range(n):  # compute_weighted_update('sqrt')
    if eff[i] and sel[i] > 0:
      acc[i] = acc[i] / math.sqrt(sel[i])
  out = np.full(n, np.nan)
  out[0] = 0.0
  for leaf in lv:
    path = []  # path_from_root_to_node: root excluded
    j = leaf
    while int(parents[j]) >= 0:
      p = int(parents[j])
      child_value = acc[j] / terminal[j]
      parent_value = acc[p] / terminal[p]
      path.append(dict(node=j, value=child_value - parent_value, state=child_value))
      j = p
    path = path[::-1]
    for i in range(1, len(path)):  # fill_in_paths
      if abs(path[i]['value']) < 1e-8:
        path[i]['value'] = path[i - 1]['value']
    for step in path:  # use_state_value_reward
      got = step['value'] + step['state']
      if not np.isnan(out[step['node']]):
        assert abs(out[step['node']] - got) < 1e-9
      out[step['node']] = got
  return np.where(np.isnan(out), 0.0, out)


def spo_tree(parents, r, valid, method='rloo', eps=1e-8):
  v, _ = node_values(parents, r, valid, aggregate='children')
  eff = effective(parents, valid)
  ch = children(parents)
  out = np.zeros(len(parents))
  for i in range(1, len(parents)):
    if not eff[i]:
      continue
    p = int(parents[i])
    adv = v[i] - v[p]
    if method == 'grpo':
      sib = [v[c] for c in ch[p] if eff[c]]
      adv = adv / (np.std(sib) + eps)
    out[i] = adv
  return out


def subtree_step_rewards(parents, r, valid, relative=True):
  v, _ = node_values(parents, r, valid)
  eff = effective(parents, valid)
  out = np.zeros(len(parents))
  for i in range(1, len(parents)):
    if eff[i]:
      out[i] = v[i] - v[int(parents[i])] if relative else v[i]
  return out
