"""Slow, obviously correct NumPy references for jaxca.objectives.losses (no jax import)."""

import numpy as np


def ppo_policy_loss_per_token(log_probs, old_log_probs, advantages, clip_low, clip_high):
  out = np.zeros(log_probs.shape, np.float64)
  for idx in np.ndindex(log_probs.shape):
    ratio = np.exp(float(log_probs[idx]) - float(old_log_probs[idx]))
    a = float(advantages[idx])
    out[idx] = -min(ratio * a, min(max(ratio, 1 - clip_low), 1 + clip_high) * a)
  return out


def aggregate(loss_mat, mask, mode):
  """Loops over sequences (rows of the flattened leading axes) and tokens."""
  flat_l = loss_mat.reshape(-1, loss_mat.shape[-1])
  flat_m = mask.reshape(-1, mask.shape[-1])
  if mode == 'token_mean':
    total, count = 0.0, 0
    for row_l, row_m in zip(flat_l, flat_m):
      for l, m in zip(row_l, row_m):
        if m:
          total += l
          count += 1
    return total / max(count, 1)
  if mode == 'seq_mean_token_mean':
    means = []
    for row_l, row_m in zip(flat_l, flat_m):
      vals = [l for l, m in zip(row_l, row_m) if m]
      if vals:
        means.append(sum(vals) / len(vals))
    return sum(means) / max(len(means), 1)
  if mode == 'seq_mean_token_sum_norm':  # over non-empty sequences, / T
    total, rows = 0.0, 0
    for row_l, row_m in zip(flat_l, flat_m):
      if any(row_m):
        total += sum(l for l, m in zip(row_l, row_m) if m)
        rows += 1
    return total / (max(rows, 1) * flat_l.shape[1])
  if mode == 'token_sum':
    total = 0.0
    for row_l, row_m in zip(flat_l, flat_m):
      total += sum(l for l, m in zip(row_l, row_m) if m)
    return total
  if mode == 'seq_mean_token_sum':
    sums = []
    for row_l, row_m in zip(flat_l, flat_m):
      if any(row_m):
        sums.append(sum(l for l, m in zip(row_l, row_m) if m))
    return sum(sums) / max(len(sums), 1)
  raise ValueError(mode)
