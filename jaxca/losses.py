"""Policy-gradient losses: masked, float32, aggregation chosen by name.

Arrays are batch-major `[..., T]` (tokens or time steps on the last axis) with
a bool `mask` of the same shape (True where the policy acted). Everything is
masked with `jnp.where` *before* any exponential, so masked entries contribute
exactly 0 to the loss and to the gradient, even when their inputs are +-inf.

Loss aggregation (verl's `agg_loss`, tunix's `aggregate_loss`):
  'token_mean'               sum(l * m) / sum(m)                 (DAPO; verl default)
  'seq_mean_token_mean'      mean over sequences of per-sequence token means
                             (original GRPO; sequences with no valid token are skipped)
  'seq_mean_token_sum_norm'  sum(l * m) / (num_sequences * norm_length)  (Dr.GRPO;
                             `norm_length` defaults to the padded length T)
  'token_sum'                sum(l * m)                          (no normaliser)
  'seq_mean_token_sum'       mean over sequences of per-sequence token sums
                             (verl's `seq-mean-token-sum`; empty sequences are skipped)
verl's hyphenated names ('token-mean', ...) are accepted too.
"""

from typing import Optional

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
  # seq_mean_token_sum_norm
  length = loss_mat.shape[-1] if norm_length is None else norm_length
  num_seqs = max(1, loss_mat.size // max(1, loss_mat.shape[-1]))
  return jnp.sum(seq_sum) / (num_seqs * jnp.asarray(length, loss_mat.dtype))


def ppo_policy_loss(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  clip_eps: float = 0.2,
  clip_eps_high: Optional[float] = None,
  agg_mode: str = 'token_mean',
  norm_length=None,
):
  """PPO clipped surrogate, `-min(r A, clip(r, 1-eps_low, 1+eps_high) A)`, aggregated.

  Args:
    log_probs: [..., T] float32; log pi_theta(a_t | s_t), differentiated.
    old_log_probs: [..., T] float32; log pi_old at sampling time (gradient stopped).
    advantages: [..., T] float32; constants (gradient stopped).
    mask: [..., T] bool; True where the policy acted.
    clip_eps: lower clip range (and upper if `clip_eps_high` is None).
    clip_eps_high: optional upper clip range (DAPO clip-higher).
    agg_mode: see module docstring.

  Returns:
    (loss scalar, metrics dict with clip_frac, approx_kl (k3 of old vs new), ratio_mean).
  """
  if not (log_probs.shape == old_log_probs.shape == advantages.shape == mask.shape):
    raise ValueError(
      'ppo_policy_loss: `log_probs`, `old_log_probs`, `advantages` and `mask` must share a '
      f'shape; got {log_probs.shape}, {old_log_probs.shape}, {advantages.shape}, {mask.shape}.'
    )
  high = clip_eps if clip_eps_high is None else clip_eps_high
  log_ratio = jnp.where(mask, log_probs - jax.lax.stop_gradient(old_log_probs), 0.0)
  ratio = jnp.exp(log_ratio)
  adv = jax.lax.stop_gradient(jnp.where(mask, advantages, 0.0))
  unclipped = ratio * adv
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + high) * adv
  loss_mat = -jnp.minimum(unclipped, clipped)
  loss = aggregate(loss_mat, mask, agg_mode, norm_length)
  metrics = dict(
    clip_frac=ops.masked_mean((clipped < unclipped).astype(jnp.float32), mask),
    approx_kl=ops.masked_mean(jnp.expm1(log_ratio) - log_ratio, mask),
    ratio_mean=ops.masked_mean(ratio, mask),
  )
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def value_loss(
  values: jax.Array,
  returns: jax.Array,
  mask: jax.Array,
  *,
  old_values: Optional[jax.Array] = None,
  clip_eps: Optional[float] = None,
  agg_mode: str = 'token_mean',
  norm_length=None,
) -> jax.Array:
  """0.5 * (V - G)^2, optionally PPO-clipped around `old_values`; targets gradient-stopped."""
  if values.shape != returns.shape or values.shape != mask.shape:
    raise ValueError(
      f'value_loss: `values` {values.shape}, `returns` {returns.shape} and `mask` '
      f'{mask.shape} must share a shape.'
    )
  returns = jax.lax.stop_gradient(returns)
  err = jnp.square(values - returns)
  if clip_eps is not None:
    if old_values is None:
      raise ValueError('value_loss: `clip_eps` needs `old_values`.')
    old = jax.lax.stop_gradient(old_values)
    v_clip = old + jnp.clip(values - old, -clip_eps, clip_eps)
    err = jnp.maximum(err, jnp.square(v_clip - returns))
  err = jnp.where(mask, err, 0.0)
  return 0.5 * aggregate(err, mask, agg_mode, norm_length)


def entropy_from_logits(logits: jax.Array) -> jax.Array:
  """Per-position entropy `[...]` of categorical logits `[..., A]` (float32)."""
  logits = logits.astype(jnp.float32)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def kl_k3(log_probs: jax.Array, ref_log_probs: jax.Array, mask: jax.Array) -> jax.Array:
  """Per-token k3 estimator of KL(pi || pi_ref): exp(d) - d - 1 with d = ref - log_probs.

  Unbiased and non-negative (Schulman, "Approximating KL divergence"); verl's
  `low_var_kl`, TRL's GRPO KL. 0 at masked entries. verl clamps d to [-20, 20]; so do we.
  """
  d = jnp.where(mask, jnp.clip(ref_log_probs - log_probs, -20.0, 20.0), 0.0)
  return jnp.where(mask, jnp.expm1(d) - d, 0.0)
