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


def pure_full(step_ids, mask, step_rewards, group_ids, solved, has_ref, log_probs, ref_log_probs,
              hp, mask_sep=True):  # fmt: skip
  """PURE's whole reward pipeline on [B, T] arrays, row by row (before whitening).

  hp: temperature, transform ('sum' | 'softmin' | 'strict_min'), baseline ('none' | 'token' |
  'step' | 'seq'), prm_coef, vr_coef, vr_all, kl_coef. Steps are the distinct step ids of a
  row's valid tokens; a step's closer is its last valid token; `solved` [B] is the verifier's
  outcome, `has_ref` [B] whether the prompt has a reference answer.
  """
  b, t_len = mask.shape
  rows = []
  for i in range(b):
    ks = sorted({int(step_ids[i, t]) for t in range(t_len) if mask[i, t] and step_ids[i, t] >= 0})
    closers = [max(t for t in range(t_len) if mask[i, t] and step_ids[i, t] == k) for k in ks]
    ntok = [sum(1 for t in range(t_len) if mask[i, t] and step_ids[i, t] == k) for k in ks]
    pr = np.array([hp['prm_coef'] * float(step_rewards[i, k]) for k in ks], np.float64)
    if hp['transform'] == 'softmin' and len(pr):
      z = -pr / hp['temperature']
      w = np.exp(z - z.max())
      shaped = w / w.sum() * pr
    elif hp['transform'] == 'strict_min' and len(pr):
      g = [min(pr[k:]) for k in range(len(pr))] + [0.0]
      shaped = np.array([g[k] - g[k + 1] for k in range(len(pr))])
    else:
      shaped = pr.copy()
    rows.append(dict(ks=ks, closers=closers, ntok=ntok, shaped=shaped,
                     outcome=float(np.sum(shaped)), length=int(np.sum(mask[i]))))  # fmt: skip
  out = np.zeros((b, t_len))
  for i in range(b):
    row = rows[i]
    if row['length'] == 0:
      continue
    others = [j for j in range(b) if j != i and group_ids[j] == group_ids[i] and rows[j]['length']]
    r = row['shaped'].copy()
    if hp['baseline'] == 'token':
      den = sum(rows[j]['length'] for j in others)
      base = sum(rows[j]['outcome'] for j in others) / den if den else 0.0
      r = r - base * (np.array(row['ntok']) - 1)
    elif hp['baseline'] == 'step':
      base = np.mean([rows[j]['outcome'] / len(rows[j]['ks']) for j in others]) if others else 0.0
      r = r - base
    elif hp['baseline'] == 'seq':
      mean = np.mean([rows[j]['outcome'] for j in others]) if others else row['outcome']
      r = np.zeros_like(r)
      r[-1] = row['outcome'] - mean if others else 0.0
    tok = np.zeros(t_len)
    for k, t in enumerate(row['closers']):
      tok[t] += r[k]

    def v(j):
      return (solved[j] - 1.0) if (has_ref[j] or hp['vr_all'] > 0.5) else 0.0

    v_hat = v(i) - np.mean([v(j) for j in others]) if others else 0.0
    last = max(t for t in range(t_len) if mask[i, t])
    tok[last] += hp['vr_coef'] * v_hat
    for t in range(t_len):
      if mask[i, t]:
        tok[t] -= hp['kl_coef'] * (log_probs[i, t] - ref_log_probs[i, t])
    acc = 0.0
    for t in reversed(range(t_len)):
      if mask[i, t]:
        acc += tok[t]
        out[i, t] = acc
    if mask_sep:
      out[i, row['closers']] = 0.0
  return out


def _torch_softmax(z):
  """torch.softmax over the last axis, NaN for a row of all -inf as torch gives."""
  with np.errstate(invalid='ignore'):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def pure_official_softmin(process_reward, reward_mask, temperature=0.1):
  """PURE's `turn_process_reward_logits_to_reward` (openrlhf/utils/utils.py, CJReinforce/PURE
  at 41f9363) after its logits -> `p1 - p0` line: min-form weights on [B, K] step scores."""
  process_reward = np.where(reward_mask, process_reward, 0.0)
  weight = _torch_softmax(-np.where(reward_mask, process_reward, np.inf) / temperature)
  with np.errstate(invalid='ignore'):
    return weight * process_reward


def pure_official_step_baseline(process_rewards, reward_masks, num_steps, n_samples_per_prompt):
  """PURE's `process_experiences` (openrlhf/trainer/ppo_utils/experience_maker.py, same
  commit), `--reward_baseline step`: [B, T] token process rewards (non-zero at step closers),
  [B, T] bool closers, [B] step counts; groups are consecutive rows."""
  n = n_samples_per_prompt
  pr = process_rewards.reshape(-1, n, process_rewards.shape[1])
  outcome_rewards = pr.sum(-1)
  masks = reward_masks.reshape(-1, n, reward_masks.shape[1])
  with np.errstate(invalid='ignore', divide='ignore'):
    average_process_reward = outcome_rewards / num_steps.reshape(-1, n)
    baseline = (average_process_reward.sum(-1, keepdims=True) - average_process_reward) / (n - 1)
    out = np.where(masks, pr - baseline[..., None], 0.0)  # masked_fill(~reward_masks, 0)
  return out.reshape(process_rewards.shape)
