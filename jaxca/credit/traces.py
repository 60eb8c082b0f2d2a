"""Online per-start-time eligibility traces for off-policy control (backward view).

These are the update rules of the trajectory-aware traces of Daley et al. (ICML 2023)
and the per-decision Retrace, written for an *online* learner that keeps one trace
coefficient `beta_{k,t}` per past start time `k` of the current episode (arXiv
2301.11321). At every step `t` the learner

  1. `advance`s every stored start `k < t` with the new step's ratio
     `rho_t = pi(a_t|s_t) / mu(a_t|s_t)` (given as `log_rho`),
  2. `start`s the new start `k = t` with `beta_{t,t} = 1` (the ratio of the action at
     the start time is never used), and
  3. applies `Q(S_k, A_k) += alpha * gamma^(t-k) * beta_{k,t} * delta_t` for all `k`.

The offline (forward-view) sum of these updates is
`sum_t gamma^(t-k) beta_{k,t} delta_t`, the quantity `jaxca.credit.off_policy_returns`
computes in one pass over a fixed trajectory. With `n = t - k`:

| method              | beta_{k,t} (closed form / recursion)                  |
|---------------------|-------------------------------------------------------|
| `retrace`           | `prod_{i=k+1}^t lambda * min(1, rho_i)`               |
| `truncated_is`      | `lambda^n * min(1, prod_{i=k+1}^t rho_i)`             |
| `recursive_retrace` | `beta <- lambda * min(1, rho_t * beta)`               |
| `rbis`              | `beta <- min(lambda^n, rho_t * beta)`                 |

Every coefficient is in `[0, lambda^n]`, so a window of `H` start times drops only
terms of weight `gamma^n beta <= (gamma * lambda)^n <= gamma^H`.

State layout: the trace of a window of `H` start times is a `TraceState` of `[..., H]`
arrays (any leading batch axes; the window is the last axis, in any slot order --
callers typically use a circular buffer). An *empty* slot has `beta = 0` and
`lambda_power = 0`; every rule keeps it at 0. Ratios may be 0 (`log_rho = -inf`: the
target never takes the action; all older traces are cut for good) or large; the rules
work with `min(., 1)`-bounded products and a log-space running sum, so nothing
overflows. `log_rho = +inf` (a zero behaviour probability) is not meaningful and
is not supported.

Pure functions; no jit, no I/O.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

TRACE_METHODS = ('retrace', 'truncated_is', 'recursive_retrace', 'rbis')
_MAX_LOG_RHO = 80.0


class TraceState(NamedTuple):
  """Per-start-time trace state of a window of start times (window = last axis).

  Attributes:
    beta: float32 `[..., H]`, the trace coefficient `beta_{k,t}`; 0 in empty slots.
    lambda_power: float32 `[..., H]`, `lambda^(t-k)`; 0 in empty slots.
    log_ratio_sum: float32 `[..., H]`, `sum_{i=k+1}^t log rho_i` (only advanced by
      `truncated_is`; other methods leave it untouched).
  """

  beta: jax.Array
  lambda_power: jax.Array
  log_ratio_sum: jax.Array


def _check_method(method: str) -> None:
  if method not in TRACE_METHODS:
    raise ValueError(f'Unknown trace method {method!r}; choices: {list(TRACE_METHODS)}.')


def empty(window: int, batch_shape: tuple[int, ...] = ()) -> TraceState:
  """An all-empty trace state of shape `batch_shape + (window,)`."""
  if window < 1:
    raise ValueError(f'`window` must be >= 1; got {window}.')
  zeros = jnp.zeros(tuple(batch_shape) + (window,), jnp.float32)
  return TraceState(beta=zeros, lambda_power=zeros, log_ratio_sum=zeros)


def advance(state: TraceState, log_rho, lambda_, method: str) -> TraceState:
  """Advances every stored start `k < t` by step `t`'s ratio.

  Args:
    state: the trace state, `[..., H]` arrays holding `beta_{k,t-1}` etc.
    log_rho: float32 `[...]` (or broadcastable to the batch shape), `log rho_t`
      of the action taken at step `t`; `-inf` allowed.
    lambda_: float32 scalar or `[...]`, the trace parameter in `[0, 1]`.
    method: one of `TRACE_METHODS` (static; checked at trace time).

  Returns:
    The state holding `beta_{k,t}` for the same slots (empty slots stay empty).
  """
  _check_method(method)
  log_rho = jnp.asarray(log_rho, jnp.float32)[..., None]
  lambda_ = jnp.asarray(lambda_, jnp.float32)
  lam = lambda_[..., None] if lambda_.ndim else lambda_
  lambda_power = state.lambda_power * lam
  log_ratio_sum = state.log_ratio_sum
  if method == 'truncated_is':
    # Log-space running sum: the raw product may over/underflow, min(1, .) of it cannot.
    # Empty slots (lambda_power = 0) give exactly 0 whatever their stale sum.
    log_ratio_sum = log_ratio_sum + log_rho
    clipped = jnp.exp(jnp.minimum(log_ratio_sum, 0.0))
    beta = jnp.where(lambda_power > 0, lambda_power * clipped, 0.0)
  else:
    # rho from a clipped exponent: e^80 * beta is finite for beta <= 1, and rho = 0 gives 0.
    # Clipping only matters when rho > e^80 and beta < e^-80 (below float32's normal range).
    rho = jnp.exp(jnp.minimum(log_rho, _MAX_LOG_RHO))
    if method == 'retrace':
      beta = state.beta * (lam * jnp.minimum(rho, 1.0))
    elif method == 'recursive_retrace':
      beta = lam * jnp.minimum(rho * state.beta, 1.0)
    else:  # rbis: min(lambda^n, rho * beta)
      beta = jnp.minimum(lambda_power, rho * state.beta)
  return TraceState(beta=beta, lambda_power=lambda_power, log_ratio_sum=log_ratio_sum)


def start(state: TraceState, slot) -> TraceState:
  """Stores a new start time `k = t` in window slot `slot` (evicting its old entry).

  Args:
    state: `[..., H]` trace state.
    slot: int32 scalar slot index in `[0, H)`, shared by the whole batch.

  Returns:
    The state with `beta = lambda_power = 1` and `log_ratio_sum = 0` at `slot`.
  """

  def put(x, value):
    column = jnp.full(x.shape[:-1] + (1,), value, x.dtype)
    return jax.lax.dynamic_update_index_in_dim(x, column, slot, axis=-1)

  return TraceState(
    beta=put(state.beta, 1.0),
    lambda_power=put(state.lambda_power, 1.0),
    log_ratio_sum=put(state.log_ratio_sum, 0.0),
  )


def clear(state: TraceState, where=True) -> TraceState:
  """Empties every slot where `where` (bool, broadcastable batch shape) is True.

  Used at episode ends: traces never cross a termination. Only `beta` and
  `lambda_power` are zeroed (that is what makes a slot empty for every rule);
  `log_ratio_sum` is reset by `start`.
  """
  where = jnp.asarray(where)
  keep = ~where[..., None] if where.ndim else ~where
  return state._replace(
    beta=jnp.where(keep, state.beta, 0.0),
    lambda_power=jnp.where(keep, state.lambda_power, 0.0),
  )


def step(state: TraceState, slot, log_rho, lambda_, gamma, method: str):
  """One online step on a circular window: `advance`, then `start` at `slot`, then weights.

  With a circular buffer of `H` slots and `slot = t % H`, slot `j` holds the start time
  `k` with `t - k = (slot - j) mod H`; the new start `k = t` evicts the start `t - H`.

  Args:
    state: `[..., H]` trace state holding `beta_{k,t-1}`.
    slot: int32 scalar, `t % H`.
    log_rho: float32 `[...]`, `log rho_t` of the action taken at step `t`.
    lambda_: float32 scalar or `[...]`, trace parameter.
    gamma: float32 scalar, discount (shared by the batch).
    method: one of `TRACE_METHODS`.

  Returns:
    `(state, weights)`: the advanced state and float32 `[..., H]` weights
    `gamma^(t-k) beta_{k,t}` (0 in empty slots), so that the online update of step `t`
    is `Q(S_k, A_k) += alpha * weights[k] * delta_t`.
  """
  state = start(advance(state, log_rho, lambda_, method), slot)
  window = state.beta.shape[-1]
  ages = (slot - jnp.arange(window)) % window
  weights = state.beta * jnp.power(jnp.asarray(gamma, jnp.float32), ages.astype(jnp.float32))
  return state, weights
