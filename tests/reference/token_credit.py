"""Slow, obviously correct NumPy loops for jaxca.credit.token_credit. No jax import.

Layout: per-token arrays [N, T], per-response arrays [N], `group_ids [N]`; float64 loops over
groups, responses, positions, heads, queries and keys.
"""

import math

import numpy as np


def _zscore(pool, values, eps):
  """{key: value} z-scored over the pool with the unbiased std; 0 for pools under 2."""
  out = {}
  if len(pool) < 2:
    return {key: 0.0 for key in pool}
  vals = np.array([values[key] for key in pool], np.float64)
  mean = vals.mean()
  std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
  for key in pool:
    out[key] = (values[key] - mean) / (std + eps)
  return out


def gtpo_rewards(entropies, correct, mask, group_ids, alpha1=1.0, alpha2=0.1, eps=1e-6):
  n, t_len = entropies.shape
  out = np.zeros((n, t_len))
  for g in set(np.asarray(group_ids).tolist()):
    members = [i for i in range(n) if group_ids[i] == g]
    for t in range(t_len):
      pos = [i for i in members if correct[i] and mask[i, t]]
      neg = [i for i in members if not correct[i] and mask[i, t]]
      for i in pos:
        share = (entropies[i, t] + eps) / sum(entropies[k, t] + eps for k in pos)
        out[i, t] = alpha1 + alpha2 * share * len(pos)
      for j in neg:
        share = (1 / (entropies[j, t] + eps)) / sum(1 / (entropies[k, t] + eps) for k in neg)
        out[j, t] = -alpha1 - alpha2 * share * len(neg)
  return out


def gtpo_advantages(
  entropies,
  correct,
  mask,
  group_ids,
  alpha1=1.0,
  alpha2=0.1,
  pooling='joint',
  eps=1e-6,
  std_eps=1e-6,
):
  rewards = gtpo_rewards(entropies, correct, mask, group_ids, alpha1, alpha2, eps)
  n, t_len = entropies.shape
  out = np.zeros((n, t_len))
  values = {(i, t): rewards[i, t] for i in range(n) for t in range(t_len)}
  for g in set(np.asarray(group_ids).tolist()):
    tokens = [(i, t) for i in range(n) for t in range(t_len) if group_ids[i] == g and mask[i, t]]
    if pooling == 'joint':
      pools = [tokens]
    else:
      pools = [[k for k in tokens if correct[k[0]]], [k for k in tokens if not correct[k[0]]]]
    for pool in pools:
      for key, a in _zscore(pool, values, std_eps).items():
        out[key] = a
  return out


def grpo_s_rewards(entropies, correct, mask, group_ids, beta1=1.0, beta2=0.1, eps=1e-6):
  n = len(correct)
  hbar = {}
  for i in range(n):
    valid = [entropies[i, t] for t in range(entropies.shape[1]) if mask[i, t]]
    if valid:
      hbar[i] = sum(valid) / len(valid)
  out = np.zeros(n)
  for g in set(np.asarray(group_ids).tolist()):
    pos = [i for i in hbar if group_ids[i] == g and correct[i]]
    neg = [i for i in hbar if group_ids[i] == g and not correct[i]]
    for i in pos:
      out[i] = beta1 + beta2 * len(pos) * (hbar[i] + eps) / sum(hbar[k] + eps for k in pos)
    for j in neg:
      inv = 1 / (hbar[j] + eps)
      out[j] = -beta1 - beta2 * len(neg) * inv / sum(1 / (hbar[k] + eps) for k in neg)
  return out


def grpo_s_advantages(
  entropies,
  correct,
  mask,
  group_ids,
  beta1=1.0,
  beta2=0.1,
  pooling='joint',
  eps=1e-6,
  std_eps=1e-6,
):
  rewards = grpo_s_rewards(entropies, correct, mask, group_ids, beta1, beta2, eps)
  n, t_len = entropies.shape
  adv = np.zeros(n)
  for g in set(np.asarray(group_ids).tolist()):
    members = [i for i in range(n) if group_ids[i] == g and mask[i].any()]
    if pooling == 'joint':
      pools = [members]
    else:
      pools = [[i for i in members if correct[i]], [i for i in members if not correct[i]]]
    for pool in pools:
      for i, a in _zscore(pool, dict(enumerate(rewards)), std_eps).items():
        adv[i] = a
  out = np.zeros((n, t_len))
  for i in range(n):
    for t in range(t_len):
      if mask[i, t]:
        out[i, t] = adv[i]
  return out


def top_fraction_mask(scores, mask, fraction):
  """Per row: the ceil(fraction * n) highest valid scores, earlier position first on ties."""
  out = np.zeros(scores.shape, bool)
  for i in range(scores.shape[0]):
    valid = [t for t in range(scores.shape[1]) if mask[i, t]]
    k = math.ceil(fraction * len(valid) - 1e-3)
    for t in sorted(valid, key=lambda t: (-scores[i, t], t))[:k]:
      out[i, t] = True
  return out


def hicra(advantages, planning, mask, alpha=0.2):
  out = np.zeros(advantages.shape)
  for i in range(advantages.shape[0]):
    for t in range(advantages.shape[1]):
      if not mask[i, t]:
        continue
      a = advantages[i, t]
      out[i, t] = a * (1 + alpha) if planning[i, t] and a > 0 else a
      if planning[i, t] and a < 0:
        out[i, t] = a * (1 - alpha)
  return out


def hicra_official(advantages, entropies, mask, group_ids, alpha=0.2, top_fraction=0.3):
  n, t_len = advantages.shape
  top = top_fraction_mask(entropies, mask, top_fraction)
  out = np.zeros((n, t_len))
  for i in range(n):
    members = [k for k in range(n) if group_ids[k] == group_ids[i]]
    mean_len = sum(int(mask[k].sum()) for k in members) / len(members)
    long = int(mask[i].sum()) > mean_len
    for t in range(t_len):
      if mask[i, t]:
        a = advantages[i, t]
        out[i, t] = a * (1 + alpha) if (top[i, t] and long and a > 0) else a
  return out


def _head_mean(attention, heads):
  b, h, t_len, _ = attention.shape
  chosen = [k for k in range(h) if heads is None or heads[k]]
  out = np.zeros((b, t_len, t_len))
  if chosen:
    for k in chosen:
      out += attention[:, k]
    out /= len(chosen)
  return out


def mean_attention_distance(attention, query_mask, key_mask):
  b, h, t_len, _ = attention.shape
  out = np.zeros(h)
  queries = [(i, t) for i in range(b) for t in range(t_len) if query_mask[i, t]]
  for k in range(h):
    total = 0.0
    for i, t in queries:
      total += sum(attention[i, k, t, s] * (t - s) for s in range(t + 1) if key_mask[i, s])
    out[k] = total / len(queries) if queries else 0.0
  return out


def fai(attention, mask, heads=None, query_mask=None):
  query_mask = mask if query_mask is None else query_mask
  abar = _head_mean(attention, heads)
  b, t_len = mask.shape
  out = np.zeros((b, t_len))
  for i in range(b):
    for s in range(t_len):
      later = [t for t in range(s + 1, t_len) if query_mask[i, t]]
      if mask[i, s] and later:
        out[i, s] = sum(abar[i, t, s] for t in later) / len(later)
  return out


def waad(attention, mask, heads=None, window=4):
  abar = _head_mean(attention, heads)
  b, t_len = mask.shape
  out = np.zeros((b, t_len))
  for i in range(b):
    for t in range(t_len):
      if mask[i, t]:
        out[i, t] = sum(abar[i, t, s] * min(t - s, window) for s in range(t + 1) if mask[i, s])
  return out
