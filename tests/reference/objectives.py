"""Slow, obviously correct NumPy references for jaxca.objectives (policy, corrections, kl).

No jax import. Inputs are [B, T] arrays (tests flatten leading axes); loops go over sequences
and tokens in float64. Objective references return the per-token loss matrix (0 where masked);
tests aggregate it with `tests.reference.aggregation.aggregate`.
"""

import math

import numpy as np


def _clamp(x, lo, hi):
  return min(max(x, lo), hi)


def _log_ratio(lp, old):
  return _clamp(float(lp) - float(old), -20.0, 20.0)


def _surrogate(ratio, a, eps_low, eps_high):
  """max(-a r, -a clip(r)) and whether the clipped branch is the larger one."""
  unclipped = -a * ratio
  clipped = -a * _clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
  return max(unclipped, clipped), clipped > unclipped


def _empty(shape):
  return np.zeros(shape, np.float64)


def ppo_clip(lp, old, adv, mask, eps_low, eps_high, dual_clip_c=None):
  out = _empty(lp.shape)
  for b in range(lp.shape[0]):
    for t in range(lp.shape[1]):
      if not mask[b, t]:
        continue
      a = float(adv[b, t])
      loss, _ = _surrogate(math.exp(_log_ratio(lp[b, t], old[b, t])), a, eps_low, eps_high)
      if dual_clip_c is not None and a < 0:
        loss = min(loss, -a * dual_clip_c)
      out[b, t] = loss
  return out


def trl_two_sided(lp, old, adv, mask, eps_low, eps_high, delta):
  """TRL's INTELLECT-2 two-sided clip: -min(min(r, delta) A, clip(r) A)."""
  out = _empty(lp.shape)
  for b, t in np.ndindex(lp.shape):
    if mask[b, t]:
      a = float(adv[b, t])
      r = math.exp(_log_ratio(lp[b, t], old[b, t]))
      out[b, t] = -min(min(r, delta) * a, _clamp(r, 1.0 - eps_low, 1.0 + eps_high) * a)
  return out


def _seq_mean_log_ratio(lp, old, mask, b):
  vals = [_log_ratio(lp[b, t], old[b, t]) for t in range(lp.shape[1]) if mask[b, t]]
  return sum(vals) / len(vals) if vals else 0.0


def gspo(lp, old, adv, mask, eps_low, eps_high):
  """Value of GSPO and of GSPO-token (they agree in value)."""
  out = _empty(lp.shape)
  for b in range(lp.shape[0]):
    s = math.exp(min(_seq_mean_log_ratio(lp, old, mask, b), 10.0))
    for t in range(lp.shape[1]):
      if mask[b, t]:
        out[b, t], _ = _surrogate(s, float(adv[b, t]), eps_low, eps_high)
  return out


def gspo_grad_seq_mean(lp, old, seq_adv, mask, eps_low, eps_high):
  """d/d lp of GSPO with a sequence advantage, aggregated by seq_mean_token_mean.

  loss = mean over non-empty sequences of l_i(s_i); dl/ds = -A_i unless the clip is active;
  ds_i/d lp_t = s_i / |y_i|.
  """
  grad = _empty(lp.shape)
  n_seqs = sum(1 for b in range(lp.shape[0]) if mask[b].any())
  for b in range(lp.shape[0]):
    n = int(mask[b].sum())
    if n == 0:
      continue
    s = math.exp(_seq_mean_log_ratio(lp, old, mask, b))
    a = float(seq_adv[b])
    _, clipped = _surrogate(s, a, eps_low, eps_high)
    dl_ds = 0.0 if clipped else -a
    for t in range(lp.shape[1]):
      if mask[b, t]:
        grad[b, t] = dl_ds * s / n / n_seqs
  return grad


def cispo(lp, old, adv, mask, eps_low, eps_high):
  out = _empty(lp.shape)
  lo = -math.inf if eps_low is None else 1.0 - eps_low
  hi = math.inf if eps_high is None else 1.0 + eps_high
  for b, t in np.ndindex(lp.shape):
    if mask[b, t]:
      w = _clamp(math.exp(_log_ratio(lp[b, t], old[b, t])), lo, hi)
      out[b, t] = -w * float(adv[b, t]) * float(lp[b, t])
  return out


def sapo(lp, old, adv, mask, tau_pos, tau_neg):
  out = _empty(lp.shape)
  for b, t in np.ndindex(lp.shape):
    if mask[b, t]:
      a = float(adv[b, t])
      tau = tau_pos if a > 0 else tau_neg
      r = math.exp(_log_ratio(lp[b, t], old[b, t]))
      gate = 1.0 / (1.0 + math.exp(-tau * (r - 1.0))) * 4.0 / tau
      out[b, t] = -gate * a
  return out


def gpg(lp, adv, mask):
  out = _empty(lp.shape)
  for b, t in np.ndindex(lp.shape):
    if mask[b, t]:
      out[b, t] = -float(adv[b, t]) * float(lp[b, t])
  return out


def reinforce(lp, old, adv, mask, is_max=None):
  out = _empty(lp.shape)
  for b, t in np.ndindex(lp.shape):
    if mask[b, t]:
      w = math.exp(_log_ratio(lp[b, t], old[b, t]))
      if is_max is not None:
        w = min(w, is_max)
      out[b, t] = -w * float(adv[b, t]) * float(lp[b, t])
  return out


def covariance(lp, adv, mask):
  """(A - mean A)(lp - mean lp) over the valid tokens; dict {(b, t): cov}."""
  valid = [(b, t) for b, t in np.ndindex(lp.shape) if mask[b, t]]
  if not valid:
    return {}
  mean_a = sum(float(adv[i]) for i in valid) / len(valid)
  mean_lp = sum(float(lp[i]) for i in valid) / len(valid)
  return {i: (float(adv[i]) - mean_a) * (float(lp[i]) - mean_lp) for i in valid}


def clip_cov_eligible(lp, old, adv, mask, eps_low, eps_high, lb, ub):
  cov = covariance(lp, adv, mask)
  out = {}
  for i, c in cov.items():
    r = math.exp(_log_ratio(lp[i], old[i]))
    _, clipped = _surrogate(r, float(adv[i]), eps_low, eps_high)
    if not clipped and lb < c < ub:
      out[i] = c
  return out


def num_chosen(ratio, mask):
  return max(int(math.floor(ratio * int(mask.sum()))), 1)


def clip_cov(lp, old, adv, mask, eps_low, eps_high, ratio, lb, ub, chosen=None):
  """`chosen`: the set of dropped tokens; None takes the k eligible of highest covariance."""
  if chosen is None:
    eligible = clip_cov_eligible(lp, old, adv, mask, eps_low, eps_high, lb, ub)
    ranked = sorted(eligible, key=lambda i: -eligible[i])
    chosen = set(ranked[: num_chosen(ratio, mask)])
  out = ppo_clip(lp, old, adv, mask, eps_low, eps_high)
  for i in chosen:
    out[i] = 0.0
  return out


def kl_cov(lp, old, adv, mask, ratio, coef):
  cov = covariance(lp, adv, mask)
  ranked = sorted(cov, key=lambda i: -cov[i])
  chosen = set(ranked[: num_chosen(ratio, mask)]) if cov else set()
  out = _empty(lp.shape)
  for i in cov:
    d = _log_ratio(lp[i], old[i])
    out[i] = -float(adv[i]) * math.exp(d) + (coef * abs(d) if i in chosen else 0.0)
  return out


def gmpo(lp, old, adv, mask, eps_low, eps_high, is_weights=None):
  out = _empty(lp.shape)
  for b in range(lp.shape[0]):
    idx = [t for t in range(lp.shape[1]) if mask[b, t]]
    if not idx:
      continue
    terms, log_w = [], []
    for t in idx:
      d = _log_ratio(lp[b, t], old[b, t])
      a = float(adv[b, t])
      dc = _clamp(d, -eps_low, eps_high)
      if a > 0:
        terms.append(min(d, dc))
      elif a < 0:
        terms.append(max(d, dc))
      else:
        terms.append(0.0)
      if is_weights is not None:
        log_w.append(math.log(float(is_weights[b, t]) + 1e-10))
    ratio = math.exp(sum(terms) / len(idx))
    if is_weights is not None:
      ratio *= math.exp(sum(log_w) / len(idx))
    seq_adv = sum(float(adv[b, t]) for t in idx) / len(idx)
    for t in idx:
      out[b, t] = -seq_adv * ratio
  return out


# ---------------------------------------------------------------- KL estimators


def kl_estimate(lp, ref, mask, estimator, k3_bound=10.0):
  out = _empty(lp.shape)
  for b, t in np.ndindex(lp.shape):
    if not mask[b, t]:
      continue
    d = float(lp[b, t]) - float(ref[b, t])
    if estimator == 'k1':
      out[b, t] = d
    elif estimator == 'k2':
      out[b, t] = 0.5 * d * d
    elif estimator == 'abs':
      out[b, t] = abs(d)
    elif estimator == 'k3':
      e = _clamp(-d, -20.0, 20.0)
      out[b, t] = math.exp(e) - e - 1.0
      if k3_bound is not None:
        out[b, t] = _clamp(out[b, t], -k3_bound, k3_bound)
    else:
      raise ValueError(estimator)
  return out


def verl_kl_penalty(logprob, ref_logprob, name):
  """verl's `kl_penalty` / `kl_penalty_forward` (verl/trainer/ppo/core_algos.py), one token.

  Returns (value, d value / d logprob), the gradient as torch autograd gives it: `clamp` passes
  the gradient only inside [min, max]; names ending in '+' (other than k2) take k2's gradient.
  """
  base = name[:-1] if name.endswith('+') else name
  diff = float(logprob) - float(ref_logprob)
  if base in ('kl', 'k1'):
    value, grad = diff, 1.0
  elif base == 'abs':
    value, grad = abs(diff), float(np.sign(diff))
  elif base in ('mse', 'k2'):
    value, grad = 0.5 * diff * diff, diff
  elif base in ('low_var_kl', 'k3'):
    kl = -diff
    kl_in = -20.0 <= kl <= 20.0
    kl = _clamp(kl, -20.0, 20.0)
    kld = math.exp(kl) - kl - 1.0
    kld_in = -10.0 <= kld <= 10.0
    value = _clamp(kld, -10.0, 10.0)
    # d kld / d kl = exp(kl) - 1, d kl / d logprob = -1.
    grad = -(math.exp(kl) - 1.0) if (kl_in and kld_in) else 0.0
  else:
    raise ValueError(name)
  if name.endswith('+') and base not in ('mse', 'k2'):
    grad = diff
  return value, grad


def adaptive_kl(init_coef, kls, n_steps, target, horizon):
  """Coefficients after each update of the Ziegler et al. (2019) controller."""
  coef, out = float(init_coef), []
  for kl in kls:
    err = _clamp(float(kl) / target - 1.0, -0.2, 0.2)
    coef = coef * (1.0 + err * n_steps / horizon)
    out.append(coef)
  return out


# ---------------------------------------------------------------- rollout correction


def rollout_correction(
  target,
  rollout,
  mask,
  level='token',
  mode='truncate',
  low=None,
  high=2.0,
  apply_weights=True,
  normalize=False,
  kl_threshold=None,
  kl_estimator='k3',
  kl_reduce='mean',
):
  """Returns (weights [B, T] float64, new mask [B, T] bool)."""
  B, T = target.shape
  weights = np.ones((B, T), np.float64)
  keep = mask.copy()
  for b in range(B):
    idx = [t for t in range(T) if mask[b, t]]
    if not idx:
      continue
    diffs = {t: float(target[b, t]) - float(rollout[b, t]) for t in idx}
    for t in idx:
      if level is None:
        break
      if level == 'token':
        log_w = diffs[t]
      elif level == 'sequence':
        log_w = sum(diffs.values())
      else:
        log_w = sum(diffs.values()) / len(idx)
      log_w = _clamp(log_w, -20.0, 20.0)
      w = math.exp(log_w)
      if mode == 'truncate':
        if low is not None:
          w = max(w, low)
        if high is not None:
          w = min(w, high)
      else:
        if (low is not None and log_w < math.log(low)) or (
          high is not None and log_w > math.log(high)
        ):
          keep[b, t] = False
      weights[b, t] = w if apply_weights else 1.0
    if kl_threshold is not None:
      # KL(pi_rollout || pi_train) on the rollout's tokens: estimator of (rollout - target).
      ks = kl_estimate(
        np.array([[rollout[b, t] for t in idx]]),
        np.array([[target[b, t] for t in idx]]),
        np.ones((1, len(idx)), bool),
        kl_estimator,
        k3_bound=None,  # verl's rejection k3 is unclamped
      )[0]
      stat = {'mean': np.mean, 'sum': np.sum, 'max': np.max}[kl_reduce](ks)
      if stat > kl_threshold:
        for t in idx:
          keep[b, t] = False
  weights = np.where(keep, weights, 0.0)
  if normalize and level is not None and apply_weights:
    if level == 'token':
      vals = [weights[b, t] for b, t in np.ndindex(B, T) if keep[b, t]]
    else:
      vals = [weights[b][keep[b]].mean() for b in range(B) if keep[b].any()]
    mean = sum(vals) / len(vals) if vals else 0.0
    if mean > 1e-8:
      weights = weights / mean
  return weights, keep


# ---------------------------------------------------------------- verl transcriptions
# Line-by-line NumPy transcriptions of verl (github.com/verl-project/verl, formerly
# volcengine/verl, at 1dda039, 2026-08-22), float64, single data-parallel rank. Each returns the
# value and its gradient with respect to `log_prob` as torch autograd gives it (detached
# tensors are constants).

_SAFETY_BOUND = 20.0


def verl_agg_loss(loss_mat, loss_mask, loss_agg_mode, loss_scale_factor=None):
  """verl `core_algos.agg_loss` (dp_size 1, no global batch info): (loss, d loss / d loss_mat)."""
  m = loss_mask.astype(np.float64)
  if loss_agg_mode == 'token-mean':
    coef = m / m.sum()
  elif loss_agg_mode in ('seq-mean-token-sum', 'seq-mean-token-sum-norm'):
    seq_mask = (m.sum(-1) > 0).astype(np.float64)
    coef = m * seq_mask[:, None] / seq_mask.sum()
    if loss_agg_mode == 'seq-mean-token-sum-norm':
      coef = coef / (loss_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor)
  elif loss_agg_mode == 'seq-mean-token-mean':
    counts = m.sum(-1)
    seq_mask = (counts > 0).astype(np.float64)
    coef = m / (counts + 1e-8)[:, None] * seq_mask[:, None] / seq_mask.sum()
  else:
    raise ValueError(loss_agg_mode)
  return float(np.sum(loss_mat * coef)), coef


def verl_rollout_is_weights(log_ratio, mask, rollout_is, threshold):
  """verl `rollout_corr_helper.compute_rollout_correction_weights` (no batch normalisation).

  `threshold`: a float (TIS: clamp at the upper bound) or a (lower, upper) pair (IcePop: weight
  0 outside [lower, upper], the token staying in the mask).
  """
  m = mask.astype(np.float64)
  if rollout_is == 'token':
    raw = np.exp(np.clip(log_ratio, -_SAFETY_BOUND, _SAFETY_BOUND))
  elif rollout_is == 'sequence':
    s = np.sum(log_ratio * m, axis=-1, keepdims=True)
    raw = np.broadcast_to(np.exp(np.clip(s, -_SAFETY_BOUND, _SAFETY_BOUND)), log_ratio.shape)
  else:
    raise ValueError(rollout_is)
  raw = raw * m
  if isinstance(threshold, tuple):
    lo, hi = threshold
    return np.where((raw >= lo) & (raw <= hi), raw, 0.0)
  return np.minimum(raw, threshold)


def verl_rollout_rejection_mask(log_ratio, mask, rollout_rs, threshold):
  """verl `rollout_corr_helper.compute_rollout_rejection_mask` for one option.

  `threshold`: (lower, upper) for the k1 options (bounds on exp(k1) = pi_rollout / pi_train),
  an upper bound for k2 / k3.
  """
  m = mask.astype(np.float64)
  safe = np.clip(log_ratio, -_SAFETY_BOUND, _SAFETY_BOUND)
  token = {'k1': -safe, 'k2': 0.5 * safe**2, 'k3': np.exp(safe) - 1.0 - safe}[rollout_rs[-2:]]
  if rollout_rs.startswith('token'):
    stat = token
  elif rollout_rs.startswith('seq_sum'):
    stat = np.sum(token * m, axis=-1, keepdims=True)
  elif rollout_rs.startswith('seq_mean'):
    stat = np.sum(token * m, axis=-1, keepdims=True) / (m.sum(-1, keepdims=True) + 1e-8)
  elif rollout_rs.startswith('seq_max'):
    stat = np.max(np.where(mask, token, -np.inf), axis=-1, keepdims=True)
    stat = np.where(stat == -np.inf, 0.0, stat)
  else:
    raise ValueError(rollout_rs)
  if rollout_rs.endswith('k1'):
    lo, hi = threshold
    keep = (stat >= math.log(lo)) & (stat <= math.log(hi))
  else:
    keep = stat <= threshold
  return mask & np.broadcast_to(keep, mask.shape)


def verl_vanilla_pg(log_prob, old_log_prob, advantages, clip_low, clip_high, clip_ratio_c=3.0):
  """verl `compute_policy_loss_vanilla`'s per-token `pg_losses` and their d / d log_prob."""
  raw = log_prob - old_log_prob
  nakl = np.clip(raw, -20.0, 20.0)
  ratio = np.exp(nakl)
  d_ratio = np.where(np.abs(raw) <= 20.0, ratio, 0.0)
  a = advantages
  pg1, d1 = -a * ratio, -a * d_ratio
  clipped = np.clip(ratio, 1 - clip_low, 1 + clip_high)
  inside = (ratio >= 1 - clip_low) & (ratio <= 1 + clip_high)
  pg2, d2 = -a * clipped, np.where(inside, -a * d_ratio, 0.0)
  clip1 = np.maximum(pg1, pg2)
  dclip1 = np.where(pg1 > pg2, d1, np.where(pg2 > pg1, d2, 0.5 * (d1 + d2)))
  pg3 = -a * clip_ratio_c
  clip2 = np.minimum(pg3, clip1)
  dclip2 = np.where(clip1 < pg3, dclip1, 0.0)
  return np.where(a < 0, clip2, clip1), np.where(a < 0, dclip2, dclip1)


def verl_bypass_mode_loss(
  log_prob,
  rollout_log_prob,
  advantages,
  response_mask,
  *,
  loss_type='ppo_clip',
  rollout_is=None,
  rollout_is_threshold=2.0,
  rollout_rs=None,
  rollout_rs_threshold=None,
  loss_agg_mode='token-mean',
  clip_low=0.2,
  clip_high=0.2,
  clip_ratio_c=3.0,
):
  """verl `core_algos.compute_policy_loss_bypass_mode` (old_log_prob = rollout_log_prob).

  IS weights and the rejection mask are computed against the *current* log-probs (no grad);
  'reinforce' multiplies the weights into `-A log_prob` (`compute_policy_loss_reinforce`),
  'ppo_clip' does not (its ratio is already against the rollout policy) and only uses the
  mask. Returns (loss, d loss / d log_prob).
  """
  log_ratio = log_prob - rollout_log_prob
  weights = None
  if rollout_is is not None and rollout_is_threshold is not None:
    weights = verl_rollout_is_weights(log_ratio, response_mask, rollout_is, rollout_is_threshold)
  mask = response_mask
  if rollout_rs is not None:
    mask = verl_rollout_rejection_mask(log_ratio, response_mask, rollout_rs, rollout_rs_threshold)
  if loss_type == 'reinforce':
    w = np.ones_like(log_prob) if weights is None else weights
    pg, dpg = -advantages * log_prob * w, -advantages * w
  elif loss_type == 'ppo_clip':
    pg, dpg = verl_vanilla_pg(
      log_prob, rollout_log_prob, advantages, clip_low, clip_high, clip_ratio_c
    )
  else:
    raise ValueError(loss_type)
  loss, coef = verl_agg_loss(pg, mask, loss_agg_mode)
  return loss, coef * dpg


def verl_dppo(lp, old, adv, mask, divergence, eps_low, eps_high, is_max=20.0):
  """verl `compute_policy_loss_dppo_tv` / `_dppo_kl`, one token at a time (per-token loss)."""
  out = _empty(lp.shape)
  for b in range(lp.shape[0]):
    for t in range(lp.shape[1]):
      if not mask[b, t]:
        continue
      a, x, x_old = float(adv[b, t]), float(lp[b, t]), float(old[b, t])
      ratio = math.exp(_log_ratio(x, x_old))
      prob, old_prob = math.exp(x), math.exp(x_old)
      if divergence == 'tv':
        valid_pos = (prob - old_prob) <= eps_high
        valid_neg = (prob - old_prob) >= -eps_low
      else:
        binary_kl = old_prob * (x_old - x) + (1 - old_prob) * math.log(
          (1.0 - old_prob + 1e-8) / (1.0 - prob + 1e-8)
        )
        valid_pos = (binary_kl <= eps_high) or (prob <= old_prob)
        valid_neg = (binary_kl <= eps_low) or (prob >= old_prob)
      valid = valid_pos if a > 0 else valid_neg
      out[b, t] = -a * min(ratio, is_max) * x * float(valid)
  return out
