"""Discounted returns, and the time-major reverse scans shared with `gae`.

Layout: kernels take `[..., T]` (time last). Internally the leading axes are
flattened to one batch axis and the arrays are moved to time-major `[T, N]`, so
one `lax.scan` over `T` carries the whole batch as a `[N]` vector (no vmap of a
per-trajectory scan). On XLA:CPU this plain `unroll=1` scan measured faster
than unrolled or `associative_scan` variants (see BUILD_NOTES).
"""

import jax
import jax.numpy as jnp

from jaxca.credit import _checks


def to_time_major(x: jax.Array) -> jax.Array:
  """`[..., T]` -> `[T, N]` with N the product of the leading axes (1 for `[T]`)."""
  return x.reshape(-1, x.shape[-1]).T


def from_time_major(x: jax.Array, shape) -> jax.Array:
  """Inverse of `to_time_major` for an array of the original `shape`."""
  return x.T.reshape(shape)


def reverse_linear_scan(a: jax.Array, b: jax.Array, init: jax.Array) -> jax.Array:
  """Solves `y_t = a_t + b_t * y_{t+1}` backwards, `y_T = init`, time-major.

  Args:
    a: [T, N] float32 additive terms.
    b: [T, N] float32 multiplicative terms (or a scalar).
    init: [N] float32 value after the last step.

  Returns:
    [T, N] float32 `y_0 .. y_{T-1}`.
  """
  if jnp.ndim(b) == 0:

    def body(y, a_t):
      y = a_t + b * y
      return y, y

    _, ys = jax.lax.scan(body, init, a, reverse=True)
  else:

    def body(y, xs):
      a_t, b_t = xs
      y = a_t + b_t * y
      return y, y

    _, ys = jax.lax.scan(body, init, (a, b), reverse=True)
  return ys


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
  if mask is None:
    ys = reverse_linear_scan(to_time_major(rewards), to_time_major(discounts), init)
    return from_time_major(ys, shape)
  mask = _checks.check_mask(mask, 'rewards', rewards)
  # Masked step: y_t = 0 + 1 * y_{t+1} (carried through unchanged).
  a = jnp.where(mask, rewards, 0.0)
  b = jnp.where(mask, discounts, 1.0)
  ys = from_time_major(reverse_linear_scan(to_time_major(a), to_time_major(b), init), shape)
  return jnp.where(mask, ys, 0.0)
