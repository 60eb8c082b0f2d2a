"""Private: the preamble and epilogue shared by the trajectory-aware engines.

Each row's valid steps are moved to its front in order (masked steps become trailing
padding with delta = d = 0, so a masked step behaves as if deleted), a zero ratio at step
i + 1 cuts every trace through it (link d_i -> 0, as a termination does), and the result
is moved back to the original positions at the end.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Compacted(NamedTuple):
  """Inputs [N, T] with each row's valid steps first.

  Attributes:
    delta: TD errors; 0 on the trailing padding.
    link: d_i, set to 0 where rho_{i+1} = 0 (log ratio -inf) and on the padding.
    x: log ratios, -inf replaced by 0 (the cut is carried by `link`).
    rows, pos: [N, 1] row ids and [N, T] new position of each original step.
  """

  delta: jax.Array
  link: jax.Array
  x: jax.Array
  rows: jax.Array
  pos: jax.Array


def positions(mask: jax.Array) -> jax.Array:
  """Per-row stable permutation putting the valid steps first: position of each step. [N, T]."""
  valid = mask.astype(jnp.int32)
  n_valid = valid.sum(-1, keepdims=True)
  return jnp.where(mask, jnp.cumsum(valid, -1) - 1, n_valid + jnp.cumsum(1 - valid, -1) - 1)


def compact(delta, d, x, mask) -> Compacted:
  """Moves the valid steps first and folds zero ratios into the links (inputs [N, T])."""
  n_rows = delta.shape[0]
  rows = jnp.arange(n_rows)[:, None]
  pos = positions(mask)
  scatter = lambda a: jnp.zeros_like(a).at[rows, pos].set(a)  # noqa: E731
  delta_c, d_c, x_c = scatter(delta), scatter(d), scatter(x)
  zero_next = jnp.concatenate([x_c[:, 1:] == -jnp.inf, jnp.zeros((n_rows, 1), bool)], axis=1)
  link = jnp.where(zero_next, 0.0, d_c)
  x_c = jnp.where(x_c == -jnp.inf, 0.0, x_c)
  return Compacted(delta_c, link, x_c, rows, pos)


def restore(u: jax.Array, c: Compacted) -> jax.Array:
  """Back to the original positions (the caller zeroes the masked steps)."""
  return u[c.rows, c.pos]
