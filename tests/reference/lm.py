"""Slow, obviously-correct NumPy loops for jaxca.lm (no jax import)."""

import numpy as np


def last_token_rewards(seq_rewards, mask):
  """[B] rewards, [B, N] bool mask -> [B, N] with the reward at the last True position."""
  seq_rewards = np.asarray(seq_rewards, np.float64)
  mask = np.asarray(mask, bool)
  out = np.zeros(mask.shape, np.float64)
  for b in range(mask.shape[0]):
    last = -1
    for t in range(mask.shape[1]):
      if mask[b, t]:
        last = t
    if last >= 0:
      out[b, last] = seq_rewards[b]
  return out


def target_mask(targets, eos_id, pad_id):
  """True on target tokens up to and including the first EOS, never on PAD."""
  targets = np.asarray(targets)
  out = np.zeros(targets.shape, bool)
  for b in range(targets.shape[0]):
    for t in range(targets.shape[1]):
      out[b, t] = targets[b, t] != pad_id
      if targets[b, t] == eos_id:
        break
  return out
