"""Slow, obviously correct NumPy references for `jaxca.credit.traces` and the RBIS control loop.

No jax import. Trace coefficients come from *closed forms* (a min over restart points,
products), not from the online recursions `jaxca.credit.traces` uses, so agreement checks the
recursions. Everything is float64 and O(T^2) (or worse).
"""

import collections

import numpy as np

METHODS = ('retrace', 'truncated_is', 'recursive_retrace', 'rbis')


def beta_from_start(log_rhos, lambda_, method):
  """beta_{k,t} for one start k, t = k..k+n, from the ratios rho_{k+1..k+n}.

  Args:
    log_rhos: [n] log ratios of the steps after the start (may contain -inf).
    lambda_: trace parameter.
    method: one of METHODS.

  Returns:
    float64 [n + 1], beta[0] = 1.
  """
  x = np.asarray(log_rhos, np.float64)
  lam = float(lambda_)
  out = [1.0]
  for n in range(1, len(x) + 1):
    seg = x[:n]  # log rho_{k+1..k+n}

    def prod(lo):  # prod_{i=lo+1}^{n} rho_i (indices relative to k), in log space
      return float(np.exp(np.sum(seg[lo:])))

    if method == 'retrace':
      b = float(np.prod([lam * min(1.0, np.exp(v)) for v in seg]))
    elif method == 'truncated_is':
      b = lam**n * min(1.0, prod(0))
    elif method == 'recursive_retrace':
      # Unrolled lambda*min(1, rho*beta): min(lambda^n prod_{k+1..t} rho,
      #   min_{j=k+1..t} lambda^(t-j+1) prod_{i=j+1..t} rho_i).
      terms = [lam**n * prod(0)] + [lam ** (n - j + 1) * prod(j) for j in range(1, n + 1)]
      b = min(terms)
    elif method == 'rbis':
      # min_{k<=j<=t} lambda^(j-k) prod_{i=j+1..t} rho_i
      b = min(lam**j * prod(j) for j in range(0, n + 1))
    else:
      raise ValueError(method)
    out.append(b)
  return np.array(out)


def trace_matrix(log_rhos, lambda_, method):
  """beta[k, t] (zero below the diagonal) for an episode with ratios log_rhos[t]."""
  t_len = len(log_rhos)
  beta = np.zeros((t_len, t_len))
  for k in range(t_len):
    beta[k, k:] = beta_from_start(log_rhos[k + 1 :], lambda_, method)
  return beta


def forward_view_updates(deltas, log_rhos, gamma, lambda_, method, window=None):
  """U_k = sum_{t>=k} gamma^(t-k) beta_{k,t} delta_t (terms with t - k >= window dropped)."""
  t_len = len(deltas)
  beta = trace_matrix(log_rhos, lambda_, method)
  out = np.zeros(t_len)
  for k in range(t_len):
    for t in range(k, t_len):
      if window is None or t - k < window:
        out[k] += gamma ** (t - k) * beta[k, t] * deltas[t]
  return out


def epsilon_greedy(q_row, eps):
  is_max = q_row == q_row.max()
  return eps / len(q_row) + (1 - eps) * is_max / is_max.sum()


def inverse_cdf(u, probs):
  return int(np.sum(u >= np.cumsum(probs[:-1])))


def control_trial(
  tables,
  q0,
  uniforms,
  *,
  method,
  lambda_,
  alpha,
  gamma,
  behaviour_eps,
  explore_eps,
  explore_episodes,
  target_eps,
  window,
):
  """Online expected-SARSA control with per-start traces (one trial, training only).

  A plain loop over steps: at every step the betas of all starts of the episode are
  recomputed from the closed forms. Step t uses `uniforms[t]` to sample the action.

  Returns:
    (q_final, episode_end_steps, q_at_episode_ends)
  """
  next_state, reward, terminal, start = tables
  q = np.array(q0, np.float64)
  s, episodes = start, 0
  ep_sa, ep_log_rho = [], []
  ends, snaps = [], []
  for t, u in enumerate(uniforms):
    eps_b = explore_eps if episodes < explore_episodes else behaviour_eps
    mu, pi = epsilon_greedy(q[s], eps_b), epsilon_greedy(q[s], target_eps)
    a = inverse_cdf(u, mu)
    s2, r, term = next_state[s, a], reward[s, a], terminal[s, a]
    delta = r - q[s, a]
    if not term:
      delta += gamma * epsilon_greedy(q[s2], target_eps) @ q[s2]
    ep_sa.append((s, a))
    ep_log_rho.append(np.log(pi[a]) - np.log(mu[a]))
    for k, (sk, ak) in enumerate(ep_sa):
      n = len(ep_sa) - 1 - k  # steps since start k (k counts from the episode start)
      if n >= window:
        continue
      beta = beta_from_start(ep_log_rho[k + 1 :], lambda_, method)[-1]
      q[sk, ak] += alpha * gamma**n * beta * delta
    if term:
      ends.append(t)
      snaps.append(q.copy())
      episodes += 1
      ep_sa, ep_log_rho = [], []
      s = start
    else:
      s = s2
  return q, ends, snaps


def eval_episode(tables, q, s0, uniforms, eps, gamma):
  """One evaluation episode from s0 with len(uniforms) steps at most; (return, final state)."""
  next_state, reward, terminal, start = tables
  s, ret = s0, 0.0
  for t, u in enumerate(uniforms):
    a = inverse_cdf(u, epsilon_greedy(q[s], eps))
    ret += gamma**t * reward[s, a]
    if terminal[s, a]:
      return ret, start
    s = next_state[s, a]
  return ret, s


def smoothed_curve(points, timesteps, window=100):
  """Moving average (deque of the last `window` y's) then per-segment linspace fill."""
  buf = collections.deque(maxlen=window)
  smooth = []
  for x, y in points:
    buf.append(y)
    smooth.append((x, float(np.mean(buf))))
  values = []
  for (x1, y1), (x2, y2) in zip(smooth[:-1], smooth[1:]):
    values.extend(np.linspace(y1, y2, num=x2 - x1))
  return np.array(values[: timesteps + 1])
