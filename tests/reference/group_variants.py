"""Slow loops for jaxca.estimators.group, and transcriptions of the libraries' definitions.

No jax import. Rows are lists of floats; `ids` the group of each row; `valid` whether a row
has a valid token (rows without one are left out of every statistic and get 0 in jaxca's
loops; the transcriptions see only the valid rows, as the tests pass them).
"""

import math

import numpy as np


def _members(ids, valid, i):
  return [j for j in range(len(ids)) if ids[j] == ids[i] and valid[j]]


def _mean(xs):
  return sum(xs) / len(xs)


def _std_unbiased(xs):
  mu = _mean(xs)
  return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1))


def grpo(scores, ids, valid, eps):
  """jaxca `grpo`: (r - mean) / (std + eps) over the valid rows; groups of < 2 give 0."""
  out = np.zeros(len(scores))
  for i in range(len(scores)):
    g = [scores[j] for j in _members(ids, valid, i)]
    if valid[i] and len(g) >= 2:
      out[i] = (scores[i] - _mean(g)) / (_std_unbiased(g) + eps)
  return out


def gdpo(components, ids, valid, eps, weights=None):
  """sum_c w_c grpo(component c)."""
  comps = np.asarray(components, np.float64)
  w = np.ones(comps.shape[1]) if weights is None else np.asarray(weights, np.float64)
  out = np.zeros(comps.shape[0])
  for c in range(comps.shape[1]):
    out += w[c] * grpo(list(comps[:, c]), ids, valid, eps)
  return out


def maxrl(scores, ids, valid, eps):
  """(r - mean) / (mean + eps) with >= 2 valid rows and mean > 0, else 0."""
  out = np.zeros(len(scores))
  for i in range(len(scores)):
    g = [scores[j] for j in _members(ids, valid, i)]
    if valid[i] and len(g) >= 2 and _mean(g) > 0:
      out[i] = (scores[i] - _mean(g)) / (_mean(g) + eps)
  return out


def nemo(scores, ids, valid, eps):
  """Leave-one-out baseline and std; division only where that std > 0."""
  out = np.zeros(len(scores))
  for i in range(len(scores)):
    others = [scores[j] for j in _members(ids, valid, i) if j != i]
    if not valid[i] or not others:
      continue
    base = _mean(others)
    std = _std_unbiased(others) if len(others) >= 2 else 0.0
    out[i] = scores[i] - base
    if std > 0:
      out[i] /= std + eps
  return out


def verl(scores, ids, valid, eps):
  """jaxca grpo, but a singleton group gives r / (1 + eps)."""
  out = grpo(scores, ids, valid, eps)
  for i in range(len(scores)):
    if valid[i] and len(_members(ids, valid, i)) == 1:
      out[i] = scores[i] / (1.0 + eps)
  return out


# ----------------------------------------------------------------------------- transcriptions
# NumPy transcriptions of the public definitions (each on the valid rows only, with `index`
# the group of each row), kept line for line so a reader can check them against the source.


def verl_compute_grpo_outcome_advantage(scores, index, epsilon=1e-6):
  """verl/trainer/ppo/core_algos.py `compute_grpo_outcome_advantage` (scores, not tokens)."""
  scores = np.array(scores, np.float64)
  id2score, id2mean, id2std = {}, {}, {}
  for i in range(len(scores)):
    id2score.setdefault(index[i], []).append(scores[i])
  for idx, xs in id2score.items():
    if len(xs) == 1:
      id2mean[idx], id2std[idx] = 0.0, 1.0
    else:
      id2mean[idx], id2std[idx] = np.mean(xs), np.std(xs, ddof=1)
  return np.array(
    [(scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon) for i in range(len(scores))]
  )


def verl_compute_gdpo_outcome_advantage(components, index, weights=None, epsilon=1e-6):
  """verl `compute_gdpo_outcome_advantage` before its final `masked_whiten` (one token per row)."""
  comps = np.asarray(components, np.float64)
  w = np.ones(comps.shape[1]) if weights is None else np.asarray(weights)
  return sum(
    w[k] * verl_compute_grpo_outcome_advantage(comps[:, k], index, epsilon)
    for k in range(comps.shape[1])
  )


def trl_group_advantages(rewards, num_generations, eps=1e-4):
  """TRL GRPOTrainer `_generate_and_score_completions`, `scale_rewards='group'`."""
  r = np.asarray(rewards, np.float64)
  grouped = r.reshape(-1, num_generations)
  mean = np.repeat(grouped.mean(1), num_generations)
  std = (
    np.repeat(grouped.std(1, ddof=1), num_generations) if num_generations > 1 else np.zeros_like(r)
  )
  return (r - mean) / (std + eps)


def nemo_calculate_baseline_and_std_per_prompt(prompts, rewards, leave_one_out=True):
  """nemo_rl/algorithms/utils.py `calculate_baseline_and_std_per_prompt`, all rows valid."""
  rewards = np.asarray(rewards, np.float64)
  baseline, std = np.zeros_like(rewards), np.zeros_like(rewards)
  for p in sorted(set(prompts)):
    idx = np.array([i for i in range(len(prompts)) if prompts[i] == p])
    mat = (1 - np.eye(len(idx))) if leave_one_out else np.ones((len(idx), len(idx)))
    if len(idx) <= 1:
      baseline[idx] = rewards[idx]
      continue
    num_valid = len(idx) - int(leave_one_out)
    b = mat @ rewards[idx] / num_valid
    sq = mat @ rewards[idx] ** 2 / num_valid
    with np.errstate(divide='ignore', invalid='ignore'):
      s = np.sqrt((sq - b**2) * (np.float64(num_valid) / (num_valid - 1)))
    baseline[idx], std[idx] = b, np.nan_to_num(s, nan=0.0)
  return baseline, std


def nemo_grpo_advantage(prompts, rewards, epsilon=1e-6):
  """NeMo-RL `GRPOAdvantageEstimator.compute_advantage` (LOO, normalize_rewards=True)."""
  rewards = np.asarray(rewards, np.float64)
  baseline, std = nemo_calculate_baseline_and_std_per_prompt(prompts, rewards)
  adv = rewards - baseline
  nz = std > 0
  adv[nz] = adv[nz] / (std[nz] + epsilon)
  return adv


def skyrl_compute_maxrl_advantage(scores, index, epsilon=1e-6):
  """SkyRL `compute_maxrl_advantage` (module skyrl_train.utils.ppo_utils) (scores, not tokens)."""
  scores = np.array(scores, np.float64)
  id2score, id2mean = {}, {}
  for i in range(len(scores)):
    id2score.setdefault(index[i], []).append(scores[i])
  for idx, xs in id2score.items():
    id2mean[idx] = 0.0 if len(xs) == 1 else np.mean(xs)
  out = np.zeros_like(scores)
  for i in range(len(scores)):
    if len(id2score[index[i]]) > 1:
      out[i] = (scores[i] - id2mean[index[i]]) / (id2mean[index[i]] + epsilon)
    else:
      out[i] = scores[i] - id2mean[index[i]]
  return out
