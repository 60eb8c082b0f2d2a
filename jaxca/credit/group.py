"""Group-relative advantages (GRPO, Dr.GRPO, RLOO) without host loops.

Two layouts:
  * contiguous: `scores[..., G]`, each group on the last axis (e.g. `[P, G]`
    for P prompts with G samples each; reshape `[B]` to `[P, G]` first);
  * arbitrary: `scores[N]` with integer `group_ids[N]` in `[0, num_groups)`, in
    any order; statistics use `jax.ops.segment_sum`/`segment_max` (one pass
    over N, no loop over groups). Ids outside the range are dropped by the
    segment reductions and give 0.

Numerics: deviations are computed two-pass and about a pivot (the group
maximum), `y = s - max_g`, `dev = y - mean(y)`, so an all-equal group gives
exactly 0 (no E[x^2] - E[x]^2 cancellation, cf. verl PR #6348), and the
standard deviation goes through a NaN-free square root, so gradients are
finite for all-equal groups and for groups with no valid member.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxca.credit import _checks

MODES = ('grpo', 'dr_grpo', 'rloo')


def _check_valid(valid, scores):
  if valid is None:
    return jnp.ones(np.shape(scores), jnp.bool_)
  arr = jnp.asarray(valid)
  if arr.dtype != jnp.bool_:
    raise TypeError(
      f'`valid` must be a bool array (True for entries that enter the group statistics); '
      f'got dtype {arr.dtype}.'
    )
  _checks.same_shape('scores', scores, valid=arr)
  return arr


def _safe_sqrt(x):
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _finish(mode, dev, n, sq_sum, eps, valid):
  """Per-entry advantage from its deviation, its group's count and sum of squares."""
  enough = n >= 2
  if mode == 'dr_grpo':
    out = dev
  elif mode == 'rloo':
    # s_i - mean_{j != i} s_j = n / (n - 1) * (s_i - mean).
    out = dev * (n / jnp.maximum(n - 1.0, 1.0))
  else:  # grpo
    std = _safe_sqrt(sq_sum / jnp.maximum(n - 1.0, 1.0))
    out = dev / (std + eps)
  return jnp.where(valid & enough, out, 0.0)


def group_relative(
  scores: jax.Array,
  mode: str = 'grpo',
  group_ids: jax.Array | None = None,
  num_groups: int | None = None,
  eps=1e-6,
  valid: jax.Array | None = None,
) -> jax.Array:
  """Group-relative advantages of scalar scores.

  With mean `mu_g` and unbiased std `s_g` over the valid members of group g:
    * `'grpo'`:    `(s - mu_g) / (s_g + eps)`;
    * `'dr_grpo'`: `s - mu_g`;
    * `'rloo'`:    `s - mean of the other valid members = n/(n-1) (s - mu_g)`.
  A group with fewer than 2 valid members gives 0 (verl would give `s` or
  `s/(1+eps)` for a singleton group); an all-equal group gives exactly 0.

  Args:
    scores: float32, `[..., G]` (groups on the last axis) when `group_ids` is
      None, else `[N]`.
    mode: one of `MODES`.
    group_ids: optional int `[N]`; the group of each score, in
      `[0, num_groups)`, any order.
    num_groups: static Python int, required with `group_ids`.
    eps: added to the std in `'grpo'` mode (traceable scalar).
    valid: optional bool, shape of `scores`; False entries are excluded from
      the statistics and get 0.

  Returns:
    float32 advantages with the shape of `scores`; 0 at invalid entries.
  """
  _checks.choice('mode', mode, MODES)
  scores = _checks.as_float('scores', scores)
  eps = _checks.as_float('eps', eps)
  if eps.ndim != 0:
    raise ValueError(f'`eps` must be a scalar; got shape {eps.shape}.')
  valid = _check_valid(valid, scores)

  if group_ids is None:
    if num_groups is not None:
      raise ValueError('`num_groups` is only used together with `group_ids`.')
    _checks.at_least_1d('scores', scores)
    n = jnp.sum(valid, axis=-1, keepdims=True, dtype=jnp.float32)
    pivot = jnp.max(jnp.where(valid, scores, -jnp.inf), axis=-1, keepdims=True)
    pivot = jax.lax.stop_gradient(jnp.where(n > 0, pivot, 0.0))
    y = jnp.where(valid, scores - pivot, 0.0)
    mean = jnp.sum(y, axis=-1, keepdims=True) / jnp.maximum(n, 1.0)
    dev = jnp.where(valid, y - mean, 0.0)
    sq_sum = jnp.sum(jnp.square(dev), axis=-1, keepdims=True)
    return _finish(mode, dev, n, sq_sum, eps, valid)

  if scores.ndim != 1:
    raise ValueError(
      f'With `group_ids`, `scores` must be rank 1 [N]; got shape {scores.shape}. '
      'Flatten it, or put groups on the last axis and pass group_ids=None.'
    )
  if not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool):
    raise TypeError(
      f'`num_groups` must be a static Python int when `group_ids` is given; got {num_groups!r}.'
    )
  group_ids = jnp.asarray(group_ids)
  if not jnp.issubdtype(group_ids.dtype, jnp.integer):
    raise TypeError(f'`group_ids` must be an integer array; got dtype {group_ids.dtype}.')
  _checks.same_shape('scores', scores, group_ids=group_ids)
  k = int(num_groups)

  def seg_sum(x):
    return jax.ops.segment_sum(x, group_ids, num_segments=k)[group_ids]

  n = seg_sum(valid.astype(jnp.float32))
  pivot = jax.ops.segment_max(jnp.where(valid, scores, -jnp.inf), group_ids, num_segments=k)
  pivot = jax.lax.stop_gradient(jnp.where(jnp.isfinite(pivot), pivot, 0.0))[group_ids]
  y = jnp.where(valid, scores - pivot, 0.0)
  mean = seg_sum(y) / jnp.maximum(n, 1.0)
  dev = jnp.where(valid, y - mean, 0.0)
  sq_sum = seg_sum(jnp.square(dev))
  return _finish(mode, dev, n, sq_sum, eps, valid)
