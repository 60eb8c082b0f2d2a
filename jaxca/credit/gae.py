"""Generalized advantage estimation (GAE), batched and masked.

Convention (index t is the transition s_t, a_t, r_t, s_{t+1}):

  delta_t = r_t + d_t * V_{t+1} - V_t,        V_T = bootstrap_value
  A_t     = delta_t + d_t * lambda_t * A_{t+1},   A_T = 0
  returns = A + values

Mapping to rlax: `rlax.truncated_generalized_advantage_estimation(r_t=rewards,
discount_t=discounts, lambda_=lambda_, values=concat(values, bootstrap_value))`
gives the same advantages per trajectory (pinned by a test). Mapping to verl's
`compute_gae_advantage_return`: `discounts = gamma` on valid tokens,
`bootstrap_value = 0`, `mask = response_mask` (verl does not bootstrap after
the last valid token); verl's masked positions hold the next valid advantage,
ours hold 0.
"""

import jax
import jax.numpy as jnp

from jaxca.credit import _checks
from jaxca.credit import _recurrence


def gae(
  rewards: jax.Array,
  values: jax.Array,
  discounts: jax.Array,
  bootstrap_value: jax.Array,
  lambda_,
  mask: jax.Array | None = None,
  time_major: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Generalized advantage estimates and lambda-returns.

  Masked steps are transparent: `V_{t+1}` is the value of the next *valid*
  step (or `bootstrap_value`) and `A_{t+1}` its advantage, so results at valid
  steps equal those of the sequence with masked steps deleted. Outputs at
  masked steps are 0.

  Implementation: without a mask, the TD errors and `discounts * lambda_` are
  computed in one vectorised pass, then one linear recurrence
  `y_t = a_t + b_t * y_{t+1}` gives the advantages. With a mask and a scalar
  `lambda_`, the mask is folded into the same single recurrence on
  `c_t = V_t + lambda * A_t` (the value-plus-trace carried from the next valid
  step): `c_t = (1 - lambda) V_t + lambda r_t + lambda d_t c_{t+1}` at valid
  steps, `c_t = c_{t+1}` at masked ones, then `A_t = r_t - V_t + d_t c_{t+1}` in
  one vectorised pass. With a mask and a per-step `lambda_`, one `lax.scan`
  carries (next valid value, next valid advantage). Batch-major data uses
  `_recurrence.linear_recurrence` (blocked over time, no transposes);
  time-major data (`time_major=True`) uses a plain reverse `lax.scan` over its
  leading axis, with no transposes either.

  Args:
    rewards: [..., T] float32 ([T, ...] if `time_major`); r_t received after
      acting in s_t.
    values: V(s_t), shaped like `rewards`.
    discounts: shaped like `rewards`; `gamma * (1 - terminated after step t)`; 0
      cuts both the bootstrap and the trace.
    bootstrap_value: [...] float32 (the batch shape of `rewards`, without the
      time axis); V(s_T), the state after the last step (use 0 or d=0 for
      terminated trajectories).
    lambda_: scalar, or shaped like `rewards`, in [0, 1] (a concrete value
      outside raises ValueError); traceable (vmap it to sweep lambda).
    mask: optional bool, shaped like `rewards`; True where the policy acted.
    time_major: False (default): time is the last axis. True: time is the first
      axis, for callers whose data is already `[T, ...]` (e.g. environment
      rollouts); the outputs are then time-major too.

  Returns:
    `(advantages, returns)`, both shaped like `rewards`, float32, `returns =
    advantages + values`; 0 where `mask` is False.
  """
  _checks.at_least_1d('rewards', rewards)
  rewards = _checks.as_float('rewards', rewards)
  values = _checks.as_float('values', values)
  discounts = _checks.as_float('discounts', discounts)
  _checks.same_shape('rewards', rewards, values=values, discounts=discounts)
  bootstrap_value = _checks.as_float('bootstrap_value', bootstrap_value)
  _checks.batch_shape('bootstrap_value', bootstrap_value, 'rewards', rewards, time_major)
  _checks.in_unit_interval('lambda_', lambda_)
  lambda_ = _checks.scalar_or_same('lambda_', lambda_, 'rewards', rewards)
  shape = rewards.shape
  if mask is not None:
    mask = _checks.check_mask(mask, 'rewards', rewards)
  if time_major:
    # Time-major [T, N]: the recurrence is a scan over the leading axis, no transposes.
    flat = lambda x: x.reshape(shape[0], -1)  # noqa: E731
    lam = lambda_ if lambda_.ndim == 0 else flat(lambda_)
    m = None if mask is None else flat(mask)
    adv = _gae_time_major(
      flat(rewards), flat(values), flat(discounts), bootstrap_value.reshape(-1), lam, m
    )
    adv = adv.reshape(shape)
  else:
    adv = _gae_batch_major(rewards, values, discounts, bootstrap_value, lambda_, mask)
  if mask is None:
    return adv, adv + values
  return adv, jnp.where(mask, adv + values, 0.0)


def _gae_batch_major(rewards, values, discounts, bootstrap_value, lambda_, mask):
  """Advantages for [..., T] inputs (time last)."""
  shape = rewards.shape
  flat = lambda x: x.reshape(-1, shape[-1])  # noqa: E731
  init_value = bootstrap_value.reshape(-1)
  # Next-step values: V_{t+1}, with the bootstrap after the last step.
  next_values = jnp.concatenate([values[..., 1:], bootstrap_value[..., None]], axis=-1)

  if mask is None:
    # TD errors and trace coefficients in one vectorised pass, then one linear recurrence.
    deltas = rewards + discounts * next_values - values
    coef = discounts * lambda_
    zeros = jnp.zeros_like(init_value)
    return _recurrence.linear_recurrence(flat(deltas), flat(coef), zeros).reshape(shape)

  if lambda_.ndim == 0:
    # One recurrence on c_t = V_t + lambda * A_t, the mask folded into its coefficients.
    a = jnp.where(mask, (1.0 - lambda_) * values + lambda_ * rewards, 0.0)
    b = jnp.where(mask, lambda_ * discounts, 1.0)
    c = _recurrence.linear_recurrence(flat(a), flat(b), init_value).reshape(shape)
    c_next = jnp.concatenate([c[..., 1:], bootstrap_value[..., None]], axis=-1)
    return jnp.where(mask, rewards - values + discounts * c_next, 0.0)

  # Masked, per-step lambda: one time-major scan carrying (next valid value, next valid
  # advantage). (A batch-major blocked version of this two-carry recurrence measured slower.)
  tm = _recurrence.to_time_major
  adv = _two_carry_scan(tm(rewards), tm(values), tm(discounts), init_value, tm(lambda_), tm(mask))
  return _recurrence.from_time_major(adv, shape)


def _gae_time_major(rewards, values, discounts, bootstrap_value, lambda_, mask):
  """Advantages for time-major [T, N] inputs; `lambda_` scalar or [T, N]; mask [T, N] or None."""
  next_values = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
  if mask is None:
    deltas = rewards + discounts * next_values - values
    zeros = jnp.zeros_like(bootstrap_value)
    return _recurrence.reverse_linear_scan(deltas, discounts * lambda_, zeros)
  if lambda_.ndim == 0:
    return _masked_scan(rewards, values, discounts, bootstrap_value, lambda_, mask)
  return _two_carry_scan(rewards, values, discounts, bootstrap_value, lambda_, mask)


def _masked_scan(rewards, values, discounts, bootstrap_value, lambda_, mask):
  """Masked GAE, scalar lambda, time-major [T, N], in ONE reverse scan.

  Carries c_{t+1} = V + lambda * A of the next valid step (the bootstrap value after the
  last); a valid step emits A_t = r_t - V_t + d_t c_{t+1} and updates
  c_t = (1 - lambda) V_t + lambda r_t + lambda d_t c_{t+1}; a masked step emits 0 and
  passes c through. The same recurrence as the batch-major path, but the inputs are read
  once inside the scan (no separate coefficient, shift and output passes).
  """

  def body(c_next, x):
    r, v, d, m = x
    adv = r - v + d * c_next
    c = jnp.where(m, v + lambda_ * adv, c_next)
    return c, jnp.where(m, adv, 0.0)

  _, adv = jax.lax.scan(body, bootstrap_value, (rewards, values, discounts, mask), reverse=True)
  return adv


def _two_carry_scan(rewards, values, discounts, bootstrap_value, lambda_, mask):
  """Masked GAE with per-step lambda, time-major [T, N]: carries (next valid V, next valid A)."""

  def body(carry, x):
    next_value, next_adv = carry
    r, v, d, m, lam = x
    adv = r + d * next_value - v + d * lam * next_adv
    next_value = jnp.where(m, v, next_value)
    next_adv = jnp.where(m, adv, next_adv)
    return (next_value, next_adv), jnp.where(m, adv, 0.0)

  init = (bootstrap_value, jnp.zeros_like(bootstrap_value))
  xs = (rewards, values, discounts, mask, lambda_)
  _, adv = jax.lax.scan(body, init, xs, reverse=True)
  return adv
