"""Off-policy multistep Q targets: the per-decision trace family and trajectory-aware traces.

One target per step,

  delta_t = r_t + d_t * expected_next_q_t - q_taken_t
  G_k = q_taken_k + sum_{t>=k} (prod_{i=k}^{t-1} d_i) * beta_{k,t} * delta_t,   beta_{k,k} = 1,

with the trace coefficient `beta` chosen by `method` (arXiv 2301.11321; `rho_i = exp(log_rhos_i)`,
`pi_i = target_probs_i`, `n = t - k`):

  'is'                 prod_{i=k+1}^{t} lambda * rho_i
  'q_lambda'           lambda^n                                  (Harutyunyan et al. Q^pi(lambda))
  'tree_backup'        prod_{i=k+1}^{t} lambda * pi_i
  'retrace'            prod_{i=k+1}^{t} lambda * min(1, rho_i)
  'truncated_is'       lambda^n * min(1, prod_{i=k+1}^{t} rho_i)
  'recursive_retrace'  beta_{k,t} = lambda * min(1, rho_t * beta_{k,t-1})
  'rbis'               beta_{k,t} = min(lambda^n, rho_t * beta_{k,t-1})   (Daley et al., ICML 2023)

Algorithms.
  * Per-decision methods (`beta_{k,t} = prod c_i`): one reverse `lax.scan`,
    `U_k = delta_k + d_k * c_{k+1} * U_{k+1}` with `U = G - q` (masked steps carry the state).
  * Trajectory-aware methods: all three have the closed form
        d-and-lambda part * exp(C_t - max(E_k, F_t))
    for prefix sums `C` of a per-step log increment and quantities `E_k` (depending on the
    start only, through the steps before a split point) and `F_t` (the end only, after it):
      rbis:               C = cumsum(log rho - log lambda), lambda^n * exp(C_t - max_{[k,t]} C)
                          (the reflected-random-walk / range-minimum form of the RBIS recursion);
      recursive_retrace:  C = cumsum(log rho + log lambda),
                          exp(C_t - max(C_k, max_{(k,t]} C - log lambda))  (unrolled recursion);
      truncated_is:       C = cumsum(log rho), lambda^n * exp(C_t - max(C_k, C_t)).
    They are computed exactly by divide and conquer over time: every pair k < t is
    counted at the one level where k lies in the left and t in the right half of a block.
    Within a block pair, `max(E_k, F_t)` splits the right half into the `t` with
    `F_t >= E_k` (a suffix once the right half is ordered by F: `F` is a running maximum for
    rbis and recursive_retrace, so already ordered; truncated_is sorts it) and the rest, whose
    sum is a rescaled prefix sum. A binary search per start gives both. Every exponent that
    is evaluated is <= 0 and every stored product of discounts and lambdas is <= 1, so large
    ratios cannot overflow; all sums are local to a block pair, so no global prefix sum of log
    ratios is formed. Cost O(T log^2 T) work, O(log^2 T) depth, no data-dependent loops, and
    the whole thing is differentiable with plain autodiff.
    Implementation: the levels are one `lax.fori_loop` body on fixed-shape [N, P] arrays
    (P = T rounded up to a power of 2), with segmented Hillis-Steele scans restarting at the
    half-block boundaries, so the compiled program does not grow with log T. Masked steps are
    handled by compacting each row (valid steps first, a stable permutation) and scattering
    back.
  * rho = 0 (log_rhos = -inf) and d = 0 both cut every trace that crosses them: for the
    trajectory-aware methods they are folded into a zero "link" weight and the log ratio is
    replaced by 0 before any arithmetic, so -inf never meets +inf.

Caveats.
  * 'is' is the one unbounded method: its products of ratios are formed in linear space and
    overflow to inf when the true target is beyond float32 (no NaN is produced by the
    forward pass for finite inputs, but such targets are meaningless anyway).
  * lambda_ is a traced scalar in [0, 1] (vmap over it for sweeps); lambda_ = 0 is handled
    exactly (one-step expected-SARSA targets).
"""

import math

import jax
import jax.numpy as jnp

from jaxca.credit import _checks

OFF_POLICY_METHODS = (
  'is',
  'q_lambda',
  'tree_backup',
  'retrace',
  'truncated_is',
  'recursive_retrace',
  'rbis',
)
_PER_DECISION = ('is', 'q_lambda', 'tree_backup', 'retrace')


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
  """Off-policy multistep Q-value targets (see the module docstring for the definitions).

  Args:
    q_taken: [..., T] float, Q(s_t, a_t).
    expected_next_q: [..., T] float, sum_a pi(a|s_{t+1}) Q(s_{t+1}, a); at the last step the
      bootstrap (multiplied by the discount, so anything finite after a termination).
    rewards: [..., T] float, reward following a_t.
    discounts: [..., T] float, gamma * (1 - terminated after step t).
    log_rhos: [..., T] float, log pi(a_t|s_t) - log mu(a_t|s_t); -inf (rho = 0) allowed.
    lambda_: scalar float in [0, 1] (traceable).
    method: one of OFF_POLICY_METHODS.
    target_probs: [..., T] float, pi(a_t|s_t); required by 'tree_backup', ignored otherwise.
    mask: optional [..., T] bool, True where the policy acted; masked steps are transparent
      and their targets are 0.

  Returns:
    [..., T] float32 targets G_k.
  """
  _checks.choice('method', method, OFF_POLICY_METHODS)
  q = _checks.as_float('q_taken', q_taken)
  _checks.at_least_1d('q_taken', q)
  nu = _checks.as_float('expected_next_q', expected_next_q)
  r = _checks.as_float('rewards', rewards)
  d = _checks.as_float('discounts', discounts)
  x = _checks.as_float('log_rhos', log_rhos)
  if method == 'tree_backup' and target_probs is None:
    raise ValueError(
      "method='tree_backup' needs `target_probs` (pi(a_t|s_t), same shape as `q_taken`)."
    )
  pi = None if target_probs is None else _checks.as_float('target_probs', target_probs)
  _checks.same_shape(
    'q_taken', q, expected_next_q=nu, rewards=r, discounts=d, log_rhos=x, target_probs=pi
  )
  lam = _checks.as_float('lambda_', lambda_)
  if lam.ndim != 0:
    raise ValueError(
      f'`lambda_` must be a scalar (vmap over it for sweeps); got shape {lam.shape}.'
    )
  mask = _checks.check_mask(mask, 'q_taken', q)

  shape = q.shape
  t_len = shape[-1]
  flat = lambda a: a.reshape((-1, t_len))  # noqa: E731
  q2, nu2, r2, d2, x2, m2 = map(flat, (q, nu, r, d, x, mask))
  # Masked steps are neutralised on the inputs, before any nonlinearity.
  delta = jnp.where(m2, r2 + d2 * nu2 - q2, 0.0)
  d2 = jnp.where(m2, d2, 0.0)
  x2 = jnp.where(m2, x2, 0.0)
  if method in _PER_DECISION:
    pi2 = None if pi is None else jnp.where(m2, flat(pi), 0.0)
    u = _per_decision(delta, d2, x2, pi2, m2, lam, method)
  else:
    u = _trajectory_aware(delta, d2, x2, m2, lam, method)
  return jnp.where(m2, q2 + u, 0.0).reshape(shape)


def _per_decision(delta, d, x, pi, mask, lam, method):
  """U_k = delta_k + d_k c_{k+1} U_{k+1} over the valid steps, one reverse scan. [N, T]."""
  if method == 'is':
    c = lam * jnp.exp(x)
  elif method == 'q_lambda':
    c = jnp.broadcast_to(lam, x.shape)
  elif method == 'tree_backup':
    c = lam * pi
  else:  # retrace: min(1, rho) = exp(min(0, log rho)), finite gradient even for huge ratios
    c = lam * jnp.exp(jnp.minimum(x, 0.0))

  def step(carry, inp):
    # carry = c_{next} * U_{next}, `next` the next valid step (0 after the last one).
    delta_t, d_t, c_t, m_t = inp
    u_t = delta_t + jnp.where(d_t == 0.0, 0.0, d_t * carry)
    new = jnp.where(c_t == 0.0, 0.0, c_t * u_t)
    return jnp.where(m_t, new, carry), u_t

  init = jnp.zeros(delta.shape[:1], jnp.float32)
  _, u = jax.lax.scan(step, init, (delta.T, d.T, c.T, mask.T), reverse=True)
  return u.T


def _compact(mask):
  """Per-row stable permutation putting the valid steps first: position of each step. [N, T]."""
  valid = mask.astype(jnp.int32)
  n_valid = valid.sum(-1, keepdims=True)
  return jnp.where(mask, jnp.cumsum(valid, -1) - 1, n_valid + jnp.cumsum(1 - valid, -1) - 1)


def _trajectory_aware(delta, d, x, mask, lam, method):
  """U = G - q for truncated_is / recursive_retrace / rbis. Inputs [N, T], masked steps zeroed."""
  n_rows, t_len = delta.shape
  rows = jnp.arange(n_rows)[:, None]
  pos = _compact(mask)
  # Compact: valid steps first; the invalid ones become trailing padding with delta = d = 0.
  scatter = lambda a: jnp.zeros_like(a).at[rows, pos].set(a)  # noqa: E731
  delta_c, d_c, x_c = scatter(delta), scatter(d), scatter(x)

  # rho = 0 at step i+1 cuts every trace through it, exactly like d_i = 0.
  zero_next = jnp.concatenate([x_c[:, 1:] == -jnp.inf, jnp.zeros((n_rows, 1), bool)], axis=1)
  link_d = jnp.where(zero_next, 0.0, d_c)
  x_c = jnp.where(x_c == -jnp.inf, 0.0, x_c)

  # lambda = 0: the general branch runs with a harmless lambda and is discarded (double where).
  lam_zero = lam == 0.0
  lam_s = jnp.where(lam_zero, 1.0, lam)
  log_lam = jnp.log(lam_s)
  if method == 'rbis':
    inc, link = x_c - log_lam, link_d * lam_s
  elif method == 'recursive_retrace':
    inc, link = x_c + log_lam, link_d
  else:  # truncated_is
    inc, link = x_c, link_d * lam_s

  p_len = 1 << max(0, math.ceil(math.log2(t_len)))
  pad = ((0, 0), (0, p_len - t_len))
  inc, link, dlt = jnp.pad(inc, pad), jnp.pad(link, pad), jnp.pad(delta_c, pad)
  n_levels = p_len.bit_length() - 1

  def body(level, u):
    return u + _level(inc, link, dlt, level, n_levels, method, log_lam)

  # One level body, looped: the program (and its compile time) does not grow with log T.
  u = jax.lax.fori_loop(0, n_levels, body, dlt) if n_levels else dlt
  u = u[:, :t_len]
  u = jnp.where(lam_zero, delta_c, u)
  return u[rows, pos]  # back to the original positions (masked ones are zeroed by the caller)


def _seg_scan(combine, values, within, size, n_bits, reverse=False):
  """Inclusive scans inside aligned segments of length `size` (a power of 2), last axis.

  Hillis-Steele doubling: `n_bits` static steps of (roll, op, select), so the program is
  small and does not depend on the traced `size`; steps with 2**j >= size change nothing.

  Args:
    combine: associative fn(earlier, later) on tuples of arrays.
    values: tuple of [N, P] arrays.
    within: [P] int, position inside the segment.
    size: traced int, the segment length.
    n_bits: static int, log2 of the largest segment length.
    reverse: scan from the end of each segment.
  """
  values = tuple(values)
  for j in range(n_bits):
    shift = 1 << j
    if reverse:
      other = tuple(jnp.roll(v, -shift, axis=-1) for v in values)
      ok = size - 1 - within >= shift
      new = combine(values, other)
    else:
      other = tuple(jnp.roll(v, shift, axis=-1) for v in values)
      ok = within >= shift
      new = combine(other, values)
    values = tuple(jnp.where(ok, n, v) for n, v in zip(new, values))
  return values


def _elementwise(*ops):
  return lambda a, b: tuple(op(x, y) for op, x, y in zip(ops, a, b))


def _shift(a, amount, fill, edge):
  """a[i - amount] within segments (`fill` where that leaves the segment; `edge` marks it)."""
  return jnp.where(edge, fill, jnp.roll(a, amount, axis=-1))


def _level(inc, link, delta, level, n_levels, method, log_lam):
  """Contributions of all pairs (k in a left half-block, t in the matching right half).

  Level `level` pairs blocks of size s = 2**level: positions [j*2s, j*2s + s) (left half) and
  [j*2s + s, (j+1)*2s) (right half). Arrays are [N, P]; every scan restarts at half boundaries.
  """
  p_len = inc.shape[-1]
  size = jnp.left_shift(1, level)
  idx = jnp.arange(p_len)
  within = idx % size
  first, last = within == 0, within == size - 1
  is_right = (idx // size) % 2 == 1
  add, mul, mx = jnp.add, jnp.multiply, jnp.maximum

  def scan(combine, values, reverse=False):
    return _seg_scan(combine, values, within, size, n_levels, reverse)

  # Everything relative to C_{m-1}, m the first step of the right half.
  # Left: C_k - C_{m-1} = -sum_{i=k+1}^{m-1} inc_i.  Right: C_t - C_{m-1} = sum_{i=m}^{t} inc_i.
  # f_k = prod_{i=k}^{m-1} link_i (left);  e_t = delta_t prod_{i=m}^{t-1} link_i (right); <= 1.
  (suffix, f) = scan(_elementwise(add, mul), (_shift(inc, -1, 0.0, last), link), reverse=True)
  (prefix, pre) = scan(_elementwise(add, mul), (inc, _shift(link, 1, 1.0, first)))
  c = jnp.where(is_right, prefix, -suffix)
  e = pre * delta

  if method == 'truncated_is':
    big_e = big_f = c
  else:
    (run_f,) = scan(_elementwise(mx), (c,))
    if method == 'rbis':
      (big_e,) = scan(_elementwise(mx), (c,), reverse=True)
      big_f = run_f
    else:  # recursive_retrace: E_k = max(C_k, max_{(k, m-1]} C - log lambda)
      (run_e,) = scan(_elementwise(mx), (_shift(c, -1, -jnp.inf, last),), reverse=True)
      big_e = jnp.maximum(c, run_e - log_lam)
      big_f = run_f - log_lam
  h = jnp.where(is_right, e * jnp.exp(c - big_f), 0.0)  # exponent <= 0
  if method == 'truncated_is':
    # Order each right half by F (left halves keep their order: equal keys, stable sort).
    seg = jnp.broadcast_to(idx // size, c.shape)
    key = jnp.where(is_right, big_f, 0.0)
    _, big_f_sorted, h = jax.lax.sort((seg, key, h), num_keys=2, is_stable=True)
    big_f = jnp.where(is_right, big_f_sorted, big_f)

  # t with F_t >= E_k: sum of h (a suffix in F order).  t with F_t < E_k: sum of
  # h_t exp(F_t - E_k) = S_{p-1} exp(F_{p-1} - E_k), S_i = sum_{j<=i} h_j exp(F_j - F_i).
  # alpha_i = exp(F_{i-1} - F_i) <= 1 inside right halves (sorted), 0 at their starts; the
  # exponent is selected before exp so that no unused branch overflows (finite gradients).
  alpha = jnp.exp(jnp.where(is_right & ~first, jnp.roll(big_f, 1, -1) - big_f, -jnp.inf))
  _, s_pref = scan(lambda a, b: (a[0] * b[0], a[1] * b[0] + b[1]), (alpha, h))
  (suf,) = scan(_elementwise(add), (h,), reverse=True)

  # cnt_k = #{t in the matching right half: F_t < E_k}, by binary search (static log2 P steps).
  base = jnp.broadcast_to((idx // size) * size + size, c.shape)  # right half of k's pair
  cnt = jnp.zeros(c.shape, jnp.int32)
  for bit in reversed(range(n_levels)):
    step = 1 << bit
    probe = jnp.minimum(base + cnt + step - 1, p_len - 1)
    ok = (cnt + step <= size) & (jnp.take_along_axis(big_f, probe, -1) < big_e)
    cnt = jnp.where(ok, cnt + step, cnt)
  at = lambda a, i: jnp.take_along_axis(a, jnp.clip(i, 0, p_len - 1), -1)  # noqa: E731
  clipped = jnp.where(cnt < size, at(suf, base + cnt), 0.0)
  gap = jnp.where(cnt > 0, at(big_f, base + cnt - 1) - big_e, 0.0)  # < 0 where used
  unclipped = jnp.where(cnt > 0, at(s_pref, base + cnt - 1) * jnp.exp(gap), 0.0)
  return jnp.where(is_right, 0.0, f * (clipped + unclipped))
