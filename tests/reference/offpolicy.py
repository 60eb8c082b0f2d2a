"""Slow, obviously correct NumPy definition of the off-policy trace family. No jax import.

Straight from the definitions in SPECS.md §1.2 / issue 3: an O(T^2) double loop over
(start time k, current time t), float64, every trace coefficient built by its own
recursion (not by the closed forms the kernels use). Masked steps are deleted
before anything is computed and output 0.
"""

import numpy as np

METHODS = ('is', 'q_lambda', 'tree_backup', 'retrace', 'truncated_is', 'recursive_retrace', 'rbis')


def _trace_coefficients(log_rhos, lambda_, method, target_probs=None):
  """beta[k, t] for one trajectory (float64 [T, T], zero below the diagonal).

  Args:
    log_rhos: [T] log pi(a_t|s_t) - log mu(a_t|s_t); -inf means rho = 0.
    lambda_: scalar trace parameter.
    method: one of METHODS.
    target_probs: [T] pi(a_t|s_t), only for 'tree_backup'.
  """
  x = np.asarray(log_rhos, np.float64)
  t_len = len(x)
  lam = float(lambda_)
  with np.errstate(over='ignore'):
    rho = np.exp(x)
  pi = None if target_probs is None else np.asarray(target_probs, np.float64)
  beta = np.zeros((t_len, t_len))
  for k in range(t_len):
    b = 1.0
    beta[k, k] = 1.0
    for t in range(k + 1, t_len):
      n = t - k
      if method == 'is':
        b = b * lam * rho[t] if b != 0.0 else 0.0
      elif method == 'q_lambda':
        b = lam**n
      elif method == 'tree_backup':
        b = b * lam * pi[t]
      elif method == 'retrace':
        b = b * lam * min(1.0, rho[t])
      elif method == 'truncated_is':
        # The cumulative ratio, clipped at 1 (summed in log space so that it cannot overflow).
        b = lam**n * min(1.0, np.exp(min(0.0, float(np.sum(x[k + 1 : t + 1])))))
      elif method == 'recursive_retrace':
        b = lam * min(1.0, rho[t] * b) if b != 0.0 else 0.0
      elif method == 'rbis':
        b = min(lam**n, rho[t] * b) if b != 0.0 else 0.0
      else:
        raise ValueError(method)
      beta[k, t] = b
  return beta


def _one(q, nu, r, d, x, lam, method, pi):
  t_len = len(q)
  delta = r + d * nu - q
  beta = _trace_coefficients(x, lam, method, pi)
  out = np.zeros(t_len)
  for k in range(t_len):
    acc = 0.0
    disc = 1.0  # prod_{i=k}^{t-1} d_i
    for t in range(k, t_len):
      coef = disc * beta[k, t]
      if coef != 0.0:  # a term that is switched off does not exist (0 * inf = 0 here)
        acc += coef * delta[t]
      disc *= d[t]
    out[k] = q[k] + acc
  return out


def off_policy_returns(
  q_taken,
  expected_next_q,
  rewards,
  discounts,
  log_rhos,
  lambda_,
  method,
  target_probs=None,
  mask=None,
):
  """G_k = q_k + sum_{t>=k} (prod_{i=k}^{t-1} d_i) beta_{k,t} delta_t, any leading axes."""
  arrs = [np.asarray(a, np.float64) for a in (q_taken, expected_next_q, rewards, discounts)]
  x = np.asarray(log_rhos, np.float64)
  shape = x.shape
  pi = None if target_probs is None else np.asarray(target_probs, np.float64)
  mask = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
  out = np.zeros(shape)
  for idx in np.ndindex(shape[:-1]):
    keep = np.flatnonzero(mask[idx])
    rows = [a[idx][keep] for a in arrs]
    row_pi = None if pi is None else pi[idx][keep]
    out[idx + (keep,)] = _one(*rows, x[idx][keep], lambda_, method, row_pi)
  return out
