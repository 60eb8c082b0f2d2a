"""Loss aggregation chosen by name: a per-token loss `[..., T]` to a scalar.

Arrays are batch-major `[..., T]` (tokens or time steps on the last axis) with
a bool `mask` of the same shape (True where the policy acted). Everything is
masked with `jnp.where` *before* any exponential, so masked entries contribute
exactly 0 to the loss and to the gradient, even when their inputs are +-inf.

Loss aggregation (verl's `agg_loss`, tunix's `aggregate_loss`):
  'token_mean'               sum(l * m) / sum(m)                 (DAPO; verl default)
  'seq_mean_token_mean'      mean over sequences of per-sequence token means
                             (original GRPO; sequences with no valid token are skipped)
  'seq_mean_token_sum_norm'  sum(l * m) / (num_nonempty_sequences * norm_length)
                             (Dr.GRPO; `norm_length` defaults to the padded length T): the
                             'seq_mean_token_sum' value / norm_length, as verl's `agg_loss`
                             (sequences with no valid token are not counted; TRL's
                             'dr_grpo' counts every row)
  'token_sum'                sum(l * m)                          (no normaliser)
  'seq_mean_token_sum'       mean over sequences of per-sequence token sums
                             (verl's `seq-mean-token-sum`; empty sequences are skipped)
verl's hyphenated names ('token-mean', ...) are accepted too.
"""

import jax
import jax.numpy as jnp

from jaxca import ops

AGG_MODES = (
  'token_mean',
  'seq_mean_token_mean',
  'seq_mean_token_sum_norm',
  'token_sum',
  'seq_mean_token_sum',
)


def _agg_name(mode: str) -> str:
  name = mode.replace('-', '_')
  if name not in AGG_MODES:
    raise ValueError(f'Unknown loss aggregation mode {mode!r}; choose from {list(AGG_MODES)}.')
  return name


def check_agg_mode(mode: str) -> str:
  """Validates a loss aggregation mode at build time; returns its canonical name."""
  return _agg_name(mode)


def aggregate(
  loss_mat: jax.Array, mask: jax.Array, mode: str = 'token_mean', norm_length=None
) -> jax.Array:
  """Reduces a per-token loss `[..., T]` to a scalar with the named aggregation mode."""
  mode = _agg_name(mode)
  if loss_mat.shape != mask.shape:
    raise ValueError(
      f'`loss_mat` {loss_mat.shape} and `mask` {mask.shape} must have the same shape.'
    )
  if mode == 'token_mean':
    return ops.masked_mean(loss_mat, mask)
  if mode == 'token_sum':
    return ops.masked_sum(loss_mat, mask)
  if loss_mat.ndim < 1:
    raise ValueError(f'{mode!r} needs a token axis; got a scalar loss.')
  seq_sum = ops.masked_sum(loss_mat, mask, axis=-1)
  if mode == 'seq_mean_token_mean':
    n_tok = ops.masked_count(mask, axis=-1)
    has_tok = n_tok > 0
    seq_mean = seq_sum / jnp.maximum(n_tok, 1.0)
    return ops.masked_mean(seq_mean, has_tok)
  if mode == 'seq_mean_token_sum':
    return ops.masked_mean(seq_sum, ops.masked_count(mask, axis=-1) > 0)
  # seq_mean_token_sum_norm: verl's `agg_loss` (verl/trainer/ppo/core_algos.py) divides the
  # sum over non-empty sequences by their number, then by `loss_scale_factor` (default T).
  length = loss_mat.shape[-1] if norm_length is None else norm_length
  seq_mean = ops.masked_mean(seq_sum, ops.masked_count(mask, axis=-1) > 0)
  return seq_mean / jnp.asarray(length, loss_mat.dtype)
