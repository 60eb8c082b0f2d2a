"""Discounted returns (the recurrence engine lives in `_recurrence`)."""

import jax
import jax.numpy as jnp

from jaxca.credit import _checks
from jaxca.credit._recurrence import linear_recurrence


def discounted_returns(
  rewards: jax.Array,
  discounts: jax.Array,
  bootstrap_value=0.0,
  mask: jax.Array | None = None,
) -> jax.Array:
  """Discounted returns `G_t = r_t + d_t * G_{t+1}`, `G_T = bootstrap_value`.

  Masked steps are transparent: they neither add reward nor discount, so the
  return at a valid step equals the return of the sequence with the masked
  steps deleted; the output at masked steps is 0.

  Args:
    rewards: [..., T] float32; reward received after acting at step t.
    discounts: [..., T] float32; `gamma * (1 - terminated after step t)`.
    bootstrap_value: scalar or [...] float32; value of the state after the last
      step (batch shape of `rewards`). Default 0 (no bootstrap).
    mask: optional [..., T] bool; True where the policy acted.

  Returns:
    [..., T] float32 returns; 0 where `mask` is False.
  """
  _checks.at_least_1d('rewards', rewards)
  rewards = _checks.as_float('rewards', rewards)
  discounts = _checks.as_float('discounts', discounts)
  _checks.same_shape('rewards', rewards, discounts=discounts)
  bootstrap_value = _checks.as_float('bootstrap_value', bootstrap_value)
  if bootstrap_value.ndim == 0:
    bootstrap_value = jnp.broadcast_to(bootstrap_value, rewards.shape[:-1])
  _checks.batch_shape('bootstrap_value', bootstrap_value, 'rewards', rewards)
  shape = rewards.shape
  init = bootstrap_value.reshape(-1)
  flat = lambda x: x.reshape(-1, shape[-1])  # noqa: E731
  if mask is None:
    return linear_recurrence(flat(rewards), flat(discounts), init).reshape(shape)
  mask = _checks.check_mask(mask, 'rewards', rewards)
  # Masked step: y_t = 0 + 1 * y_{t+1} (carried through unchanged).
  a = jnp.where(mask, rewards, 0.0)
  b = jnp.where(mask, discounts, 1.0)
  ys = linear_recurrence(flat(a), flat(b), init).reshape(shape)
  return jnp.where(mask, ys, 0.0)
