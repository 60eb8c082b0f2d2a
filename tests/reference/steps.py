"""Slow loops for step-level segment ops and PURE's estimator pipeline (NumPy, no jax)."""

import numpy as np


def to_steps(x, step_ids, num_steps, reduce='sum', mask=None):
  """One row: reduce the values of the tokens of each step (0 for an empty step)."""
  out = np.zeros(num_steps)
  for s in range(num_steps):
    vals = [float(x[t]) for t in range(len(x)) if step_ids[t] == s and (mask is None or mask[t])]
    if not vals:
      continue
    if reduce == 'sum':
      out[s] = sum(vals)
    elif reduce == 'mean':
      out[s] = sum(vals) / len(vals)
    elif reduce == 'max':
      out[s] = max(vals)
    elif reduce == 'min':
      out[s] = min(vals)
    elif reduce == 'count':
      out[s] = len(vals)
  return out


def to_tokens(y, step_ids, fill=0.0):
  out = np.full(len(step_ids), fill, np.float64)
  for t, s in enumerate(step_ids):
    if 0 <= s < len(y):
      out[t] = y[s]
  return out


def pure_pipeline(groups, temperature=0.1, baseline='token', transform='softmin', mask_sep=True):
  """PURE's advantages for hand-made groups, transcribed from its definitions.

  `groups`: list of groups; a group is a list of responses; a response is a list
  of steps; a step is (number of tokens incl. its closing separator, PRM score).
  Follows the official OpenRLHF code path (arXiv 2504.15275, `CJReinforce/PURE`
  main): step scores are min-form weighted (softmax of -score/T over the
  response's steps) and written at each step's closing token; the baseline is
  computed per group over the other responses (RLOO); returns are reverse
  cumulative sums; the returns at closing tokens are zeroed unless `mask_sep`
  is False. Returns a list (per group) of lists (per response) of per-token
  advantage arrays.
  """
  out = []
  for group in groups:
    n = len(group)
    shaped = []
    for resp in group:
      scores = np.array([s for _, s in resp], np.float64)
      if transform == 'softmin':
        z = -scores / temperature
        w = np.exp(z - z.max())
        w /= w.sum()
        shaped.append(w * scores)
      else:
        shaped.append(scores.copy())
    outcome = [float(np.sum(r)) for r in shaped]
    length = [sum(nt for nt, _ in resp) for resp in group]
    advs = []
    for i, resp in enumerate(group):
      others = [j for j in range(n) if j != i]
      r = shaped[i].copy()
      if baseline == 'token':
        b = sum(outcome[j] for j in others) / sum(length[j] for j in others)
        for k, (nt, _) in enumerate(resp):
          r[k] -= b * (nt - 1)  # tokens of the step without its separator
      elif baseline == 'step':
        b = sum(outcome[j] / len(group[j]) for j in others) / len(others)
        r = r - b
      tokens = []
      closers = []
      for k, (nt, _) in enumerate(resp):
        tokens.extend([0.0] * (nt - 1) + [r[k]])
        closers.append(len(tokens) - 1)
      ret = np.zeros(len(tokens))
      acc = 0.0
      for t in reversed(range(len(tokens))):
        acc += tokens[t]
        ret[t] = acc
      if mask_sep:
        ret[closers] = 0.0
      advs.append(ret)
    out.append(advs)
  return out
