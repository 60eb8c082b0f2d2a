"""Trace-time input validation shared by the credit kernels.

Every check names the offending argument and what was expected, and none of
them broadcasts silently. They look only at shapes and dtypes, so they cost
nothing under jit and see per-example shapes under vmap.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def as_float(name: str, x) -> jnp.ndarray:
  """Converts `x` to a float32 array; rejects bool/int/complex inputs by name."""
  arr = jnp.asarray(x)
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    raise TypeError(f'`{name}` must be a floating-point array; got dtype {arr.dtype}.')
  return arr.astype(jnp.float32) if arr.dtype != jnp.float32 else arr


def at_least_1d(name: str, x) -> None:
  if jnp.ndim(x) < 1:
    raise ValueError(f'`{name}` must have a time axis (rank >= 1); got a scalar.')


def same_shape(ref_name: str, ref, **others) -> None:
  """Every array in `others` must have exactly the shape of `ref`."""
  shape = tuple(np.shape(ref))
  for name, x in others.items():
    if x is None:
      continue
    if tuple(np.shape(x)) != shape:
      raise ValueError(
        f'`{name}` has shape {tuple(np.shape(x))} but `{ref_name}` has shape {shape}; '
        'they must match exactly (no broadcasting).'
      )


def batch_shape(name: str, x, ref_name: str, ref, time_major: bool = False) -> None:
  """`x` must have the batch shape of `ref` (its shape without the time axis: the last one,
  or the first one if `time_major`)."""
  want = tuple(np.shape(ref))[1:] if time_major else tuple(np.shape(ref))[:-1]
  if tuple(np.shape(x)) != want:
    raise ValueError(
      f'`{name}` must have the batch shape of `{ref_name}` (shape without the time axis) '
      f'{want}; got {tuple(np.shape(x))}.'
    )


def scalar_or_same(name: str, x, ref_name: str, ref) -> jnp.ndarray:
  """A traceable hyper-parameter: a scalar, or an array with the exact shape of `ref`."""
  arr = as_float(name, x)
  if arr.ndim != 0 and tuple(arr.shape) != tuple(np.shape(ref)):
    raise ValueError(
      f'`{name}` must be a scalar or have the shape of `{ref_name}` {tuple(np.shape(ref))}; '
      f'got {tuple(arr.shape)}.'
    )
  return arr


def check_mask(mask, ref_name: str, ref) -> jnp.ndarray:
  """`mask` must be bool with the exact shape of `ref`; None means all valid."""
  if mask is None:
    return jnp.ones(np.shape(ref), jnp.bool_)
  arr = jnp.asarray(mask)
  if arr.dtype != jnp.bool_:
    raise TypeError(
      f'`mask` must be a bool array (True where the policy acted); got dtype {arr.dtype}. '
      'Convert with `mask.astype(bool)`.'
    )
  same_shape(ref_name, ref, mask=arr)
  return arr


def choice(name: str, value: str, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ValueError(f'Unknown `{name}`={value!r}; choose from {sorted(choices)}.')
  return value


def in_unit_interval(name: str, x) -> None:
  """A concrete `x` (Python number or array, not a tracer) must lie in [0, 1] everywhere.

  Traced values (under jit/vmap, e.g. a swept lambda) cannot be inspected and pass.
  """
  if isinstance(x, jax.core.Tracer):
    return
  arr = np.asarray(x, np.float64)
  if not np.all((arr >= 0.0) & (arr <= 1.0)):  # NaN fails too
    bad = arr[~((arr >= 0.0) & (arr <= 1.0))].ravel()[0]
    raise ValueError(f'`{name}` must be in [0, 1]; got {bad!r}.')
