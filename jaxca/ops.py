"""Tiny masked reductions shared by kernels, estimators and losses.

Masks are bool and broadcastable to `x`; True marks a valid entry. Reductions
over an empty mask return 0 (never NaN), and masking happens with `jnp.where`
on the inputs, so gradients through masked entries are exactly 0.
"""

import jax
import jax.numpy as jnp


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Sum of `x` where `mask` is True."""
  mask = jnp.broadcast_to(mask, x.shape)
  return jnp.sum(jnp.where(mask, x, 0.0), axis=axis)


def masked_count(mask: jax.Array, axis=None, dtype=jnp.float32) -> jax.Array:
  """Number of True entries (as `dtype`)."""
  return jnp.sum(mask, axis=axis, dtype=dtype)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Mean of `x` over valid entries; 0 where nothing is valid."""
  mask = jnp.broadcast_to(mask, x.shape)
  total = jnp.sum(jnp.where(mask, x, 0.0), axis=axis)
  return total / jnp.maximum(jnp.sum(mask, axis=axis, dtype=x.dtype), 1.0)


def masked_var(x: jax.Array, mask: jax.Array, axis=None, unbiased: bool = False) -> jax.Array:
  """Variance of `x` over valid entries (N or, if `unbiased`, N-1 in the denominator).

  Returns 0 when fewer than 1 (or 2, if `unbiased`) entries are valid.
  """
  mask = jnp.broadcast_to(mask, x.shape)
  x = jnp.where(mask, x, 0.0)  # before the square: finite gradients for inf/NaN padding
  n = jnp.sum(mask, axis=axis, dtype=x.dtype)
  mean = jnp.sum(jnp.where(mask, x, 0.0), axis=axis, keepdims=True) / jnp.maximum(
    jnp.sum(mask, axis=axis, dtype=x.dtype, keepdims=True), 1.0
  )
  sq = jnp.sum(jnp.where(mask, jnp.square(x - mean), 0.0), axis=axis)
  denom = n - 1.0 if unbiased else n
  return jnp.where(denom > 0, sq / jnp.maximum(denom, 1.0), 0.0)


def masked_whiten(
  x: jax.Array,
  mask: jax.Array,
  *,
  shift_mean: bool = True,
  unbiased: bool = True,
  eps: float = 1e-8,
) -> jax.Array:
  """(x - mean) / sqrt(var + eps) over the valid entries of the whole array; 0 where masked.

  Defaults follow verl/tunix `masked_whiten` (unbiased variance, rsqrt(var + 1e-8)).
  With `shift_mean=False` the mean is added back (OpenRLHF/TRL style scaling only).
  A single valid entry has variance 0 and is mapped to 0 (or to itself without the shift).
  """
  mask = jnp.broadcast_to(mask, x.shape)
  x = jnp.where(mask, x, 0.0)
  mean = masked_mean(x, mask)
  var = masked_var(x, mask, unbiased=unbiased)
  out = (x - mean) * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    out = out + mean
  return jnp.where(mask, out, 0.0)
