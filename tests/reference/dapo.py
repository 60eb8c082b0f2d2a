"""Slow, obviously correct NumPy references for jaxca.lm.dapo (no jax import)."""

import numpy as np


def overlong_penalty(lengths, max_len, buffer_len, penalty_factor):
  out = np.zeros(len(lengths), np.float64)
  for i, n in enumerate(lengths):
    if n <= max_len - buffer_len:
      out[i] = 0.0
    elif n <= max_len:
      out[i] = ((max_len - buffer_len) - n) / buffer_len * penalty_factor
    else:
      out[i] = -penalty_factor
  return out


def informative_groups(seq_rewards, group_size):
  keep = []
  for start in range(0, len(seq_rewards), group_size):
    first = seq_rewards[start]
    keep.append(any(r != first for r in seq_rewards[start : start + group_size]))
  return np.array(keep, bool)
