"""Slow loops for jaxca.credit.macro (MA-RLHF macro actions), and transcriptions of the
official code (ernie-research/MA-RLHF, applications/DeepSpeed-Chat/dschat/rlhf/ppo_trainer.py).

No jax import. One row at a time; masked tokens are removed first and outputs put back.
"""

import numpy as np


def _valid(mask):
  return [t for t in range(len(mask)) if mask[t]]


def _put(per_valid, mask, fill):
  out = np.full(len(mask), fill, dtype=np.asarray(per_valid).dtype if len(per_valid) else float)
  for k, t in enumerate(_valid(mask)):
    out[t] = per_valid[k]
  return out


def ngram_ids(mask, n):
  return _put([k // n for k in range(len(_valid(mask)))], mask, -1)


def separator_ids(tokens, mask, separators):
  ids, cur = [], 0
  for t in _valid(mask):
    ids.append(cur)
    if tokens[t] in separators:
      cur += 1
  return _put(ids, mask, -1)


def perplexity_ids(log_probs, mask):
  lp = [float(log_probs[t]) for t in _valid(mask)]
  ids = [None] * len(lp)
  # starts: 0, and every k with lp[k+1] < lp[k]
  starts = {0} | {k for k in range(len(lp) - 1) if lp[k + 1] < lp[k]}
  cur = -1
  for k in range(len(lp)):
    if k in starts:
      cur += 1
    ids[k] = cur
  return _put(ids, mask, -1)


def macro_gae(rewards, values, step_ids, gamma, lam, mask, value_at='start', reward_agg='sum'):
  """Macro rewards / values, then the trlx-style GAE loop over macros, broadcast to tokens."""
  macros = {}
  for t in _valid(mask):
    if step_ids[t] >= 0:
      macros.setdefault(int(step_ids[t]), []).append(t)
  order = sorted(macros)
  r = [sum(rewards[t] for t in macros[i]) for i in order]
  if reward_agg == 'mean':
    r = [x / len(macros[i]) for x, i in zip(r, order)]
  if value_at == 'start':
    v = [float(values[macros[i][0]]) for i in order]
  else:
    v = [float(np.mean([values[t] for t in macros[i]])) for i in order]
  adv = official_get_advantages_and_returns(v, r, gamma, lam)
  out_a, out_g = np.zeros(len(mask)), np.zeros(len(mask))
  for k, i in enumerate(order):
    for t in macros[i]:
      out_a[t], out_g[t] = adv[0][k], adv[1][k]
  return out_a, out_g


# ----------------------------------------------------------------------------- transcriptions


def official_fixed_ngram_selection(mask, ngram, start=0):
  """`fixed_ngram_selection` for one row (mask [T], start = prompt length - 1)."""
  current_count = 0
  ma_length = [start]
  for i in range(len(mask[start:]) - 1):
    current_count += int(mask[start + i])
    if current_count == ngram:
      ma_length.append(start + i + 1)
      current_count = 0
  ma_length.append(len(mask) - 1)
  return ma_length


def official_ppl_selection(ppl, mask, start=0):
  """`ppl_selection` for one row."""
  ma_length = []
  for i in range(len(ppl) - 1):
    if ppl[i + 1] > ppl[i]:
      ma_length.append(start + i)
  if start not in ma_length:
    ma_length = [start] + ma_length
  ma_length.append(len(mask) - 1)
  return ma_length


def official_segments(ma_lengths, length):
  """The official split: diff(ma_lengths) + [1] token counts -> macro id of each token."""
  split = list(np.diff(ma_lengths)) + [1]
  ids = []
  for k, n in enumerate(split):
    ids += [k] * int(n)
  assert len(ids) == length, (ids, length)
  return np.array(ids)


def official_get_advantages_and_returns(values, rewards, gamma, lam, start=0):
  """`get_advantages_and_returns` (from trlx) on one row of macro values / rewards."""
  lastgaelam = 0.0
  advantages_reversed = []
  length = len(rewards)
  for t in reversed(range(start, length)):
    nextvalues = values[t + 1] if t < length - 1 else 0.0
    delta = rewards[t] + gamma * nextvalues - values[t]
    lastgaelam = delta + gamma * lam * lastgaelam
    advantages_reversed.append(lastgaelam)
  advantages = np.array(advantages_reversed[::-1])
  returns = advantages + np.array(values[start:])
  return advantages, returns


def official_modeling_macro_action_equal(variables, ids):
  """`modeling_macro_action` with `value_function='equal'` (mask all ones): mean per macro."""
  return [
    float(np.mean([variables[t] for t in range(len(ids)) if ids[t] == k])) for k in sorted(set(ids))
  ]
