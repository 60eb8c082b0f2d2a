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
  'rbis'               beta_{k,t} = min(lambda^n, rho_t * beta_{k,t-1})   (arXiv 2301.11321)

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
  * 'rbis' and 'recursive_retrace' by default (`differentiable=False`) use an exact O(T)
    forward-only algorithm instead: for a fixed start k the maximising point of the max
    above is piecewise constant in t and changes at the successive "next greater" keys,
    which are the contents of a monotonic stack when the starts are swept backwards in time;
    pushing a start pops and merges (with factors <= 1) the segments it dominates. Each
    start is pushed once and popped at most once, so the sweep is O(T) amortised, one
    `lax.while_loop` over the starts for a group of rows in lockstep. Keys are compared only
    through sums of local increments, and every evaluated exponent is <= 0. A while loop is
    not reverse-differentiable, so these targets are returned as constants
    (`jax.lax.stop_gradient`), which is how TD learners use them; `differentiable=True`
    selects the divide and conquer (differentiable with plain autodiff, O(T log^2 T)).
  * 'truncated_is' by default (`differentiable=False`) uses an exact O(T log T) forward-only
    algorithm (`_sorted_levels`): its clipping compares the start with each end point only
    (not a running maximum), a two-dimensional dominance sum over (time, C) with no stack
    structure. The same binary split of time counts every pair once, but each block is
    taken in its order by C: the orders of all blocks come top-down from one sort of C (a
    stable split by the child bit per level), and a left element's sums over the right
    child become, in that order, a decaying linear recurrence (decays exp(C_prev - C) <= 1)
    and a suffix sum; all levels run together in scans over positions. C is a compensated
    (double-float) prefix sum, so differences keep float32 relative accuracy. Returned as
    constants like the stack path; `differentiable=True` selects the divide and conquer.
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

import jax
import jax.numpy as jnp

from jaxca.credit import _checks
from jaxca.credit import _divide_and_conquer
from jaxca.credit import _monotonic_stack
from jaxca.credit import _sorted_levels

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
  differentiable=False,
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
    differentiable: only for the trajectory-aware methods ('truncated_is', 'rbis',
      'recursive_retrace'). False (default): the forward-only fast path (O(T) monotonic
      stack for rbis / recursive_retrace, O(T log T) sorted levels for truncated_is), whose
      targets are constants under autodiff (zero gradient, as with `jax.lax.stop_gradient`):
      the default because every learner uses these returns as stop-gradient TD targets.
      True: the O(T log^2 T) divide and conquer, differentiable with respect to every
      input. Both compute the same values. The other methods are always differentiable.

  Returns:
    [..., T] float32 targets G_k.
  """
  _checks.choice('method', method, OFF_POLICY_METHODS)
  if not isinstance(differentiable, bool):
    raise TypeError(
      f'`differentiable` must be a Python bool (static); got {type(differentiable).__name__}.'
    )
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
  elif method in _monotonic_stack.METHODS and not differentiable:
    args = jax.lax.stop_gradient((delta, d2, x2, lam))
    u = _monotonic_stack.trajectory_aware(*args[:3], m2, args[3], method)
    q2 = jax.lax.stop_gradient(q2)
  elif method == 'truncated_is' and not differentiable:
    args = jax.lax.stop_gradient((delta, d2, x2, lam))
    u = _sorted_levels.truncated_is(*args[:3], m2, args[3])
    q2 = jax.lax.stop_gradient(q2)
  else:
    u = _divide_and_conquer.trajectory_aware(delta, d2, x2, m2, lam, method)
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
