"""Slow loops for the scripted process reward model (NumPy, no jax)."""

import numpy as np


def split_steps(tokens, mask, step_id, eos_id):
  """One row: the steps as lists of content tokens, plus whether the row has an EOS."""
  steps, cur, has_eos = [], [], False
  for t, ok in zip(tokens, mask):
    if not ok:
      break
    if t in (step_id, eos_id):
      steps.append(cur)
      cur = []
      if t == eos_id:
        has_eos = True
        break
    else:
      cur.append(int(t))
  if cur:
    steps.append(cur)  # truncated: the partial last step
  return steps, has_eos


def apply_op(op, a, x, voc, m):
  if op == voc['add']:
    return (x + a) % m
  if op == voc['sub']:
    return (x - a) % m
  return (x * a) % m


def scripted_scores(prompt, tokens, mask, voc, k, m, c, w, f, blind_first):
  """One row: the scripted PRM's score of every step, by the scoring table (length = #steps)."""
  steps, has_eos = split_steps(tokens, mask, voc['step'], voc['eos'])
  x0 = prompt[1] - voc['offset']
  ops = [prompt[2 + 2 * i] for i in range(k)]
  operands = [prompt[3 + 2 * i] - voc['offset'] for i in range(k)]
  scores, j, prev = [], 0, x0
  for content in steps:
    if len(content) == 1 and voc['offset'] <= content[0] < voc['offset'] + m:
      u = content[0] - voc['offset']
      if j >= k:
        s = w
      elif j == 0 and blind_first:
        s = c
      else:
        s = c if u == apply_op(ops[j], operands[j], prev, voc, m) else w
      prev = u
      j += 1
    elif len(content) == 1 and content[0] == voc['think']:
      s = f
    else:
      s = w
    scores.append(s)
  if has_eos and j < k and scores:
    scores[-1] = w
  return np.asarray(scores, np.float64)
