"""Slow, obviously correct NumPy loops for the credit kernels. No jax import.

All functions take ONE trajectory (1-D arrays, time on axis 0) and compute in
float64. Masked steps are skipped (transparent) and output 0.
"""

import numpy as np


def gae(rewards, values, discounts, bootstrap_value, lambda_, mask=None):
  """jaxca convention: returns (advantages, returns) for one trajectory."""
  t_len = len(rewards)
  mask = np.ones(t_len, bool) if mask is None else np.asarray(mask)
  lam = np.broadcast_to(np.asarray(lambda_, np.float64), (t_len,))
  adv = np.zeros(t_len)
  ret = np.zeros(t_len)
  next_value, next_adv = float(bootstrap_value), 0.0
  for t in reversed(range(t_len)):
    if not mask[t]:
      continue
    delta = rewards[t] + discounts[t] * next_value - values[t]
    next_adv = delta + discounts[t] * lam[t] * next_adv
    next_value = float(values[t])
    adv[t] = next_adv
    ret[t] = next_adv + values[t]
  return adv, ret


def gae_rlax_form(r_t, discount_t, lambda_, values):
  """rlax's convention: `values` has K+1 entries V(s_0..s_K); returns A[0:K]."""
  k = len(r_t)
  lam = np.broadcast_to(np.asarray(lambda_, np.float64), (k,))
  adv = np.zeros(k)
  acc = 0.0
  for t in reversed(range(k)):
    delta = r_t[t] + discount_t[t] * values[t + 1] - values[t]
    acc = delta + discount_t[t] * lam[t] * acc
    adv[t] = acc
  return adv


def discounted_returns(rewards, discounts, bootstrap_value=0.0, mask=None):
  t_len = len(rewards)
  mask = np.ones(t_len, bool) if mask is None else np.asarray(mask)
  out = np.zeros(t_len)
  g = float(bootstrap_value)
  for t in reversed(range(t_len)):
    if not mask[t]:
      continue
    g = rewards[t] + discounts[t] * g
    out[t] = g
  return out


def group_relative(scores, group_ids, mode, eps=1e-6, valid=None):
  """Loop over groups given by `group_ids` (1-D); returns advantages."""
  scores = np.asarray(scores, np.float64)
  valid = np.ones(len(scores), bool) if valid is None else np.asarray(valid)
  out = np.zeros(len(scores))
  for g in set(np.asarray(group_ids).tolist()):
    members = [i for i in range(len(scores)) if group_ids[i] == g and valid[i]]
    n = len(members)
    if n < 2:
      continue
    vals = [scores[i] for i in members]
    mean = sum(vals) / n
    std = np.sqrt(sum((x - mean) ** 2 for x in vals) / (n - 1))
    for i in members:
      if mode == 'grpo':
        out[i] = (scores[i] - mean) / (std + eps)
      elif mode == 'dr_grpo':
        out[i] = scores[i] - mean
      elif mode == 'rloo':
        others = [scores[j] for j in members if j != i]
        out[i] = scores[i] - sum(others) / len(others)
      else:
        raise ValueError(mode)
  return out


def min_form_returns(rewards, mask=None):
  t_len = len(rewards)
  mask = np.ones(t_len, bool) if mask is None else np.asarray(mask)
  out = np.zeros(t_len)
  for t in range(t_len):
    if mask[t]:
      out[t] = min(rewards[s] for s in range(t, t_len) if mask[s])
  return out


def min_form_rewards(rewards, temperature, mask=None):
  t_len = len(rewards)
  mask = np.ones(t_len, bool) if mask is None else np.asarray(mask)
  idx = [t for t in range(t_len) if mask[t]]
  out = np.zeros(t_len)
  if not idx:
    return out
  logits = np.array([-rewards[t] / temperature for t in idx], np.float64)
  w = np.exp(logits - logits.max())
  w = w / w.sum()
  for k, t in enumerate(idx):
    out[t] = w[k] * rewards[t]
  return out
