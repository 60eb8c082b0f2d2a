"""Tiny masked reductions shared by kernels, estimators and losses.

Masks are bool and broadcastable to `x`; True marks a valid entry. Reductions
over an empty mask return 0 (never NaN), and masking happens with `jnp.where`
on the inputs, so gradients through masked entries are exactly 0.
"""

import jax
import jax.numpy as jnp
import numpy as np


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


STEP_REDUCTIONS = ('sum', 'mean', 'max', 'min', 'count')


def to_steps(
  x: jax.Array, step_ids: jax.Array, num_steps: int, reduce: str = 'sum', mask=None
) -> jax.Array:
  """Segment reduction of token values `[..., T]` into steps `[..., S]`.

  `out[..., s] = reduce over {t : step_ids[..., t] == s (and mask[..., t])} of
  x[..., t]`. Tokens with `step_ids < 0` or `>= num_steps` belong to no step. An
  empty step gives 0 (for every reduction, never +-inf or NaN); 'count' gives the
  number of tokens of each step (as `x.dtype`) and ignores the values of `x`.

  Args:
    x: [..., T] values (any leading axes).
    step_ids: [..., T] integer step index of each token, -1 for none.
    num_steps: static int S.
    reduce: one of `STEP_REDUCTIONS`.
    mask: optional [..., T] bool; False tokens are left out.

  Returns:
    [..., S] with the dtype of `x`.
  """
  if reduce not in STEP_REDUCTIONS:
    raise ValueError(f'Unknown reduce {reduce!r}; choose from {list(STEP_REDUCTIONS)}.')
  x = jnp.asarray(x)
  step_ids = jnp.asarray(step_ids)
  if step_ids.shape != x.shape or not jnp.issubdtype(step_ids.dtype, jnp.integer):
    raise ValueError(
      f'`step_ids` must be an integer array with the shape of `x` {x.shape}; '
      f'got {step_ids.dtype}{step_ids.shape}.'
    )
  s = int(num_steps)
  inside = (step_ids >= 0) & (step_ids < s)
  if mask is not None:
    inside = inside & jnp.broadcast_to(mask, x.shape)
  # One flat segment reduction: row r, step j -> segment r * (S + 1) + j; slot S is the bin
  # of tokens in no step.
  lead = x.shape[:-1]
  rows = int(np.prod(lead, dtype=np.int64)) if lead else 1
  seg = jnp.where(inside, step_ids, s).astype(jnp.int32)
  seg = seg.reshape(rows, -1) + (s + 1) * jnp.arange(rows, dtype=jnp.int32)[:, None]
  seg = seg.reshape(-1)
  n = rows * (s + 1)
  count = jax.ops.segment_sum(inside.reshape(-1).astype(x.dtype), seg, num_segments=n)
  if reduce == 'count':
    out = count
  elif reduce in ('sum', 'mean'):
    out = jax.ops.segment_sum(jnp.where(inside, x, 0).reshape(-1), seg, num_segments=n)
    if reduce == 'mean':
      out = out / jnp.maximum(count, 1)
  else:
    op = jax.ops.segment_max if reduce == 'max' else jax.ops.segment_min
    out = op(x.reshape(-1), seg, num_segments=n)
    out = jnp.where(count > 0, out, 0)
  return out.reshape(lead + (s + 1,))[..., :s]


def to_tokens(y: jax.Array, step_ids: jax.Array, fill=0) -> jax.Array:
  """Broadcasts step values `[..., S]` back to tokens: `out[..., t] = y[..., step_ids[..., t]]`.

  Tokens with `step_ids < 0` or `>= S` get `fill`.

  Args:
    y: [..., S] step values.
    step_ids: [..., T] integer step index of each token (leading axes as `y`).
    fill: value for tokens in no step.

  Returns:
    [..., T] with the dtype of `y`.
  """
  y = jnp.asarray(y)
  step_ids = jnp.asarray(step_ids)
  if step_ids.shape[:-1] != y.shape[:-1] or not jnp.issubdtype(step_ids.dtype, jnp.integer):
    raise ValueError(
      f'`step_ids` [..., T] must be integer with the leading axes of `y` {y.shape}; '
      f'got {step_ids.dtype}{step_ids.shape}.'
    )
  s = y.shape[-1]
  inside = (step_ids >= 0) & (step_ids < s)
  got = jnp.take_along_axis(y, jnp.where(inside, step_ids, 0), axis=-1)
  return jnp.where(inside, got, jnp.asarray(fill, y.dtype))


def step_closers(step_ids: jax.Array, num_steps: int, mask=None) -> jax.Array:
  """[..., T] bool: True at the last token of each step (its "closer").

  Args:
    step_ids: [..., T] integer step index of each token, -1 for none.
    num_steps: static int S.
    mask: optional [..., T] bool; False tokens are in no step.
  """
  step_ids = jnp.asarray(step_ids)
  pos = jnp.broadcast_to(jnp.arange(step_ids.shape[-1], dtype=jnp.int32), step_ids.shape)
  inside = (step_ids >= 0) & (step_ids < num_steps)
  if mask is not None:
    inside = inside & mask
  last = to_steps(jnp.where(inside, pos, -1), step_ids, num_steps, 'max', mask=inside)
  return inside & (to_tokens(last, jnp.where(inside, step_ids, -1), fill=-1) == pos)
