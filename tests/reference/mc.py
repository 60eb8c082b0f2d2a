"""Slow, obviously correct loops for jaxca.credit.mc and jaxca.prefixes. No jax import.

One row at a time: token arrays [T], step arrays [S]; masked tokens are removed first and
the outputs put back at their positions (0 / -1 elsewhere).
"""

import numpy as np


def mc_values(rewards, finished, num_samples, unfinished_reward=0.0):
  out = []
  for u in range(len(rewards) // num_samples):
    total = 0.0
    for k in range(num_samples):
      i = u * num_samples + k
      total += float(rewards[i]) if finished[i] else unfinished_reward
    out.append(total / num_samples)
  return np.array(out)


def vineppo_advantages(step_ids, values, outcome, mask):
  """A_i = V_{i+1} - V_i, last R - V_{n-1}; tokens of step i take A_i."""
  t_len = len(step_ids)
  ids = [int(step_ids[t]) for t in range(t_len) if mask[t] and step_ids[t] >= 0]
  n = max(ids) + 1 if ids else 0
  step_adv = []
  for i in range(n):
    after = float(outcome) if i == n - 1 else float(values[i + 1])
    step_adv.append(after - float(values[i]))
  out = np.zeros(t_len)
  for t in range(t_len):
    if mask[t] and step_ids[t] >= 0:
      out[t] = step_adv[step_ids[t]]
  return out


def spo_cutpoints(probs, threshold=0.9, interval=1):
  """The official cutpoints over the valid tokens: [j - 1 for p_j < threshold][::interval]."""
  cands = [j - 1 for j in range(len(probs)) if probs[j] < threshold]
  return cands[::interval]


def spo_chain_advantages(log_probs, cut_values, outcome, mask, threshold=0.9, interval=1):
  """The authors' `_compute_token_advantages` loop on the valid tokens of one row.

  `cut_values[k]` is the value of the k-th cutpoint (the state after token cutpoint k).
  """
  valid = [t for t in range(len(log_probs)) if mask[t]]
  probs = [float(np.exp(log_probs[t])) for t in valid]
  length = len(valid)
  out = np.zeros(len(log_probs))
  cuts = spo_cutpoints(probs, threshold, interval)
  if length == 0 or not cuts:
    return out
  values = [None] * length
  values[-1] = float(outcome)
  base = None
  vals = [float(v) for v in cut_values[: len(cuts)]]
  if cuts[0] == -1:
    base = vals[0]
    cuts, vals = cuts[1:], vals[1:]
  for c, v in zip(cuts, vals):
    values[c] = v
  adv = [None] * length
  for i in range(length):
    if values[i] is not None:
      adv[i] = 0.0 if base is None else values[i] - base
      base = values[i]
  for i in range(length - 1, -1, -1):
    if adv[i] is None:
      adv[i] = adv[i + 1]
  for i in range(length):
    if probs[i] > threshold:
      adv[i] = 0.0
  for i, t in enumerate(valid):
    out[t] = adv[i]
  return out


def spo_segments(log_probs, mask, threshold=0.9, interval=1):
  """Segment k = from the k-th cut token to the token before the next cut; -1 before."""
  valid = [t for t in range(len(log_probs)) if mask[t]]
  probs = [float(np.exp(log_probs[t])) for t in valid]
  cut_tokens = [c + 1 for c in spo_cutpoints(probs, threshold, interval)]
  out = np.full(len(log_probs), -1)
  for i, t in enumerate(valid):
    out[t] = sum(1 for j in cut_tokens if j <= i) - 1
  return out


def step_prefixes(prompt, prompt_mask, response, mask, step_ids, num_steps):
  """Per state i: the valid tokens of the prompt and of the response before step i."""
  seqs, exists = [], []
  for i in range(num_steps):
    where = [t for t in range(len(response)) if mask[t] and step_ids[t] == i]
    exists.append(bool(where))
    start = where[0] if where else len(response)
    seq = [int(prompt[t]) for t in range(len(prompt)) if prompt_mask[t]]
    seq += [int(response[t]) for t in range(start) if mask[t]]
    seqs.append(seq)
  return seqs, exists


def unique_prefixes(tokens, mask):
  """dict-based: key = tuple of valid tokens; (unique keys in first-occurrence order, inverse)."""
  seen = {}
  inverse = []
  for row in range(len(tokens)):
    key = tuple(int(tokens[row, t]) for t in range(tokens.shape[1]) if mask[row, t])
    if key not in seen:
      seen[key] = len(seen)
    inverse.append(seen[key])
  return list(seen), np.array(inverse)


def prob_whiten(adv, log_probs, mask, threshold=0.9, eps=1e-8):
  """Whitening (unbiased variance) over the valid tokens with exp(log_prob) < threshold."""
  adv = np.asarray(adv, np.float64)
  keep = []
  for idx in np.ndindex(adv.shape):
    if mask[idx] and np.exp(float(log_probs[idx])) < threshold:
      keep.append(idx)
  out = np.zeros(adv.shape)
  if not keep:
    return out
  vals = [adv[i] for i in keep]
  mean = sum(vals) / len(vals)
  var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
  for i in keep:
    out[i] = (adv[i] - mean) / np.sqrt(var + eps)
  return out
