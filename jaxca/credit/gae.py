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
) -> tuple[jax.Array, jax.Array]:
  """Generalized advantage estimates and lambda-returns.

  Masked steps are transparent: `V_{t+1}` is the value of the next *valid*
  step (or `bootstrap_value`) and `A_{t+1}` its advantage, so results at valid
  steps equal those of the sequence with masked steps deleted. Outputs at
  masked steps are 0.

  Implementation: without a mask, the TD errors and `discounts * lambda_` are
  computed in one vectorised pass, then `_recurrence.linear_recurrence` solves the
  one-multiply-add-per-step recurrence batch-major (no transposes),
  `DEFAULT_BLOCK` time steps per loop iteration, with the same floating-point
  operations as a sequential loop. With a mask, one time-major `lax.scan`
  carries (next valid value, next valid advantage).

  Args:
    rewards: [..., T] float32; r_t received after acting in s_t.
    values: [..., T] float32; V(s_t).
    discounts: [..., T] float32; `gamma * (1 - terminated after step t)`; 0 cuts
      both the bootstrap and the trace.
    bootstrap_value: [...] float32 (batch shape of `rewards`); V(s_T), the state
      after the last step (use 0 or d=0 for terminated trajectories).
    lambda_: scalar or [..., T] float32 in [0, 1] (a concrete value outside raises
      ValueError); traceable (vmap it to sweep lambda).
    mask: optional [..., T] bool; True where the policy acted.

  Returns:
    `(advantages, returns)`, both [..., T] float32, `returns = advantages +
    values`; 0 where `mask` is False.
  """
  _checks.at_least_1d('rewards', rewards)
  rewards = _checks.as_float('rewards', rewards)
  values = _checks.as_float('values', values)
  discounts = _checks.as_float('discounts', discounts)
  _checks.same_shape('rewards', rewards, values=values, discounts=discounts)
  bootstrap_value = _checks.as_float('bootstrap_value', bootstrap_value)
  _checks.batch_shape('bootstrap_value', bootstrap_value, 'rewards', rewards)
  _checks.in_unit_interval('lambda_', lambda_)
  lambda_ = _checks.scalar_or_same('lambda_', lambda_, 'rewards', rewards)
  shape = rewards.shape
  flat = lambda x: x.reshape(-1, shape[-1])  # noqa: E731
  init_value = bootstrap_value.reshape(-1)
  zeros = jnp.zeros_like(init_value)

  if mask is None:
    # TD errors and trace coefficients in one vectorised pass, then one linear recurrence.
    last = jax.lax.broadcasted_iota(jnp.int32, (1,) * (len(shape) - 1) + shape[-1:], len(shape) - 1)
    next_values = jnp.pad(values[..., 1:], [(0, 0)] * (len(shape) - 1) + [(0, 1)])
    next_values = jnp.where(last == shape[-1] - 1, bootstrap_value[..., None], next_values)
    deltas = rewards + discounts * next_values - values
    coef = discounts * lambda_
    adv = _recurrence.linear_recurrence(flat(deltas), flat(coef), zeros).reshape(shape)
    return adv, adv + values

  mask = _checks.check_mask(mask, 'rewards', rewards)
  # Masked: one time-major scan carrying (next valid value, next valid advantage).
  # (A batch-major blocked version of this two-carry recurrence measured slower.)
  tm = _recurrence.to_time_major
  per_step_lambda = lambda_.ndim != 0
  xs = (tm(rewards), tm(values), tm(discounts), tm(mask))
  if per_step_lambda:
    xs = xs + (tm(lambda_),)

  def body(carry, x):
    next_value, next_adv = carry
    if per_step_lambda:
      r, v, d, m, lam = x
    else:
      r, v, d, m = x
      lam = lambda_
    adv = r + d * next_value - v + d * lam * next_adv
    next_value = jnp.where(m, v, next_value)
    next_adv = jnp.where(m, adv, next_adv)
    return (next_value, next_adv), jnp.where(m, adv, 0.0)

  _, adv = jax.lax.scan(body, (init_value, zeros), xs, reverse=True)
  adv = _recurrence.from_time_major(adv, shape)
  return adv, jnp.where(mask, adv + values, 0.0)
