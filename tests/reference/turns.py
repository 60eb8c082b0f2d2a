"""NumPy / SciPy transcriptions of the MatchTIR and MARS definitions (dict-based loops). No jax.

MatchTIR (arXiv 2601.10712, github.com/quchangle1/MatchTIR): calls are dicts
`{'name': str, 'arguments': {param: value}}` (predicted) and `{'name': str, 'parameters':
{param: value}}` (reference), as the official `tool_similarity`, `hungarian_assignment`,
`assign_rewards_hungarian`, `assign_rewards_ot` and `compute_grpo_outcome_advantage` read
them. MARS (arXiv 2510.15414, github.com/thu-nics/MARS): `score_normalize`,
`compute_reinforce_return` and `normalize_unique_values` per player, at the turn level.
"""

import collections

import numpy as np
from scipy import optimize


def match_score(list1, list2):
  """Frequency-aware overlap of two name lists (the official `match_score`)."""
  if list1 == list2:
    return 1.0
  if not list1 or not list2:
    return 0.0
  c1, c2 = collections.Counter(list1), collections.Counter(list2)
  inter = sum(min(c1[k], c2[k]) for k in c1.keys() & c2.keys())
  most = len(list1) + len(list2) - inter
  return inter / most if most > 0 else 0.0


def tool_similarity(pred, gt):
  score, most = 0.0, 1.0
  if pred['name'].lower() == gt['name'].lower():
    score += 1.0
    pd, gp = pred['arguments'], gt['parameters']
    score += match_score(list(gp.keys()), list(pd.keys()))
    most += 1.0 + len(gp)
    score += sum(1.0 for k, v in gp.items() if k in pd and pd[k] == v)
  return score / most


def greedy(scores):
  """The official `hungarian_assignment`: pairs by descending score, each side once, > 0."""
  p = len(scores)
  g = len(scores[0]) if p else 0
  pairs = sorted(((scores[i][j], i, j) for i in range(p) for j in range(g)), reverse=True)
  assign, used = [None] * p, set()
  for s, i, j in pairs:
    if assign[i] is None and j not in used and s > 0:
      assign[i] = j
      used.add(j)
  return assign


def km(scores):
  """Maximum-weight matching (SciPy's Kuhn-Munkres); pairs of score <= 0 unmatched."""
  s = np.asarray(scores, np.float64)
  assign = [None] * s.shape[0]
  if s.size == 0:
    return assign
  rows, cols = optimize.linear_sum_assignment(s, maximize=True)
  for i, j in zip(rows, cols):
    if s[i, j] > 0:
      assign[i] = int(j)
  return assign


def hard_rewards(preds, gts, penalty, rule=greedy):
  """`assign_rewards_hungarian` (with `rule` = greedy, the official; or km)."""
  if not preds:
    return []
  scores = [[tool_similarity(p, g) for g in gts] for p in preds]
  assign = rule(scores) if gts else [None] * len(preds)
  return [penalty if a is None else scores[i][a] for i, a in enumerate(assign)]


def sinkhorn_knopp(a, b, cost, reg, iters=5000):
  """POT's `ot.sinkhorn` (method 'sinkhorn'): alternate scalings of K = exp(-C / reg)."""
  k = np.exp(-np.asarray(cost, np.float64) / reg)
  u, v = np.ones(len(a)) / len(a), np.ones(len(b)) / len(b)
  for _ in range(iters):
    v = b / (k.T @ u)
    u = a / (k @ v)
  return u[:, None] * k * v[None, :]


def ot_rewards(preds, gts, reg=0.1):
  """`assign_rewards_ot`: sum_j T_ij S_ij with uniform marginals and cost -S."""
  if not preds:
    return []
  if not gts:
    return [0.0] * len(preds)  # the official code fails here; jaxca gives 0
  s = np.asarray([[tool_similarity(p, g) for g in gts] for p in preds], np.float64)
  t = sinkhorn_knopp(np.ones(len(preds)) / len(preds), np.ones(len(gts)) / len(gts), -s, reg)
  return list((t * s).sum(axis=1))


def turn_means(call_rewards, call_turns, num_turns):
  """`compute_process_KM`'s per-turn mean of the call rewards."""
  total, count = [0.0] * num_turns, [0] * num_turns
  for r, t in zip(call_rewards, call_turns):
    total[t] += r
    count[t] += 1
  return [total[i] / count[i] if count[i] else 0.0 for i in range(num_turns)]


def dual_level(scores, turn_rewards, index, lam=0.9, eps=1e-6):
  """`compute_grpo_outcome_advantage`: scores [B], turn_rewards list of per-row lists."""
  by_id = collections.defaultdict(list)
  for i, s in enumerate(scores):
    by_id[index[i]].append(s)
  stat = {}
  for k, vals in by_id.items():
    stat[k] = (0.0, 1.0) if len(vals) == 1 else (np.mean(vals), np.std(vals, ddof=1))
  group = [(s - stat[index[i]][0]) / (stat[index[i]][1] + eps) for i, s in enumerate(scores)]
  disc_all = []
  for rs in turn_rewards:
    disc, acc = [0.0] * len(rs), 0.0
    for t in reversed(range(len(rs))):
      acc = rs[t] + lam * acc
      disc[t] = acc
    disc_all.append(disc)
  by_key = collections.defaultdict(list)
  for i, disc in enumerate(disc_all):
    for j, d in enumerate(disc):
      by_key[f'{index[i]}-{j}'].append(d)
  kstat = {}
  for k, vals in by_key.items():
    kstat[k] = (0.0, 1.0) if len(vals) == 1 else (np.mean(vals), np.std(vals, ddof=1))
  out = []
  for i, disc in enumerate(disc_all):
    row = []
    for j, d in enumerate(disc):
      m, s = kstat[f'{index[i]}-{j}']
      row.append((group[i] + (d - m) / (s + eps)) / 2)
    out.append(row)
  return out


def _score_normalize(values, method):
  vals = np.asarray(values, np.float64)
  if method == 'none' or len(vals) == 0:
    return vals
  mean = vals.mean()
  if method == 'mean':
    return vals - mean
  std = np.sqrt(((vals - mean) ** 2).sum() / (len(vals) - 1)) if len(vals) > 1 else 0.0
  return (vals - mean) / (std + 1e-6) if std > 1e-6 else np.zeros_like(vals)


def _unique_normalize(values, method):
  vals = np.asarray(values, np.float64)
  if method == 'none':
    return vals
  uniq = np.unique(vals)
  if len(uniq) <= 1:
    return np.zeros_like(vals)
  mean, std = uniq.mean(), uniq.std(ddof=1)
  if std == 0:
    return np.zeros_like(vals)
  table = {u: (u - mean) if method == 'mean' else (u - mean) / (std + 1e-6) for u in uniq}
  return np.asarray([table[v] for v in vals])


def mars(turn_rewards, agents, gamma=1.0, reward_norm='mean', adv_norm='mean'):
  """MARS at the turn level: turn_rewards a list of per-row lists, agents [B] ids."""
  out = [None] * len(turn_rewards)
  normed = [None] * len(turn_rewards)
  for a in set(agents):
    rows = [i for i in range(len(agents)) if agents[i] == a]
    flat = _score_normalize([r for i in rows for r in turn_rewards[i]], reward_norm)
    k = 0
    for i in rows:
      normed[i] = list(flat[k : k + len(turn_rewards[i])])
      k += len(turn_rewards[i])
  rets = []
  for rs in normed:
    acc, ret = 0.0, [0.0] * len(rs)
    for t in reversed(range(len(rs))):
      acc = rs[t] + gamma * acc
      ret[t] = acc
    rets.append(ret)
  for a in set(agents):
    rows = [i for i in range(len(agents)) if agents[i] == a]
    flat = _unique_normalize([r for i in rows for r in rets[i]], adv_norm)
    k = 0
    for i in rows:
      out[i] = list(flat[k : k + len(rets[i])])
      k += len(rets[i])
  return out


def turn_gae(rewards, values, gamma, lam):
  """GAE over one row's turns (lists), V after the last turn 0: (advantages, returns)."""
  n = len(rewards)
  adv, last = [0.0] * n, 0.0
  for t in reversed(range(n)):
    nxt = values[t + 1] if t + 1 < n else 0.0
    delta = rewards[t] + gamma * nxt - values[t]
    last = delta + gamma * lam * last
    adv[t] = last
  return adv, [a + v for a, v in zip(adv, values)]
