"""Policy-gradient losses: masked, float32, aggregation chosen by name.

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

from typing import Callable
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
  # seq_mean_token_sum_norm: verl's `agg_loss` (verl/trainer/ppo/core_algos.py) divides the
  # sum over non-empty sequences by their number, then by `loss_scale_factor` (default T).
  length = loss_mat.shape[-1] if norm_length is None else norm_length
  seq_mean = ops.masked_mean(seq_sum, ops.masked_count(mask, axis=-1) > 0)
  return seq_mean / jnp.asarray(length, loss_mat.dtype)


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

  A thin view of `jaxca.objectives.ppo_clip` (the one PPO-clip kernel; arXiv 1707.06347 Eq. 7)
  that keeps this module's metric names.

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
  from jaxca import objectives  # noqa: PLC0415  objectives builds on this module

  if not (log_probs.shape == old_log_probs.shape == advantages.shape == mask.shape):
    raise ValueError(
      'ppo_policy_loss: `log_probs`, `old_log_probs`, `advantages` and `mask` must share a '
      f'shape; got {log_probs.shape}, {old_log_probs.shape}, {advantages.shape}, {mask.shape}.'
    )
  loss, aux = objectives.ppo_clip(
    log_probs,
    old_log_probs,
    advantages,
    mask,
    eps_low=clip_eps,
    eps_high=clip_eps_high,
    agg_mode=agg_mode,
    norm_length=norm_length,
  )
  metrics = dict(
    clip_frac=aux['clip_frac'],
    approx_kl=approx_kl(log_probs, old_log_probs, mask),
    ratio_mean=aux['ratio_mean'],
  )
  return loss, metrics


def approx_kl(log_probs: jax.Array, old_log_probs: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean k3 estimate of KL(pi_old || pi_theta), `r - 1 - log r` (a metric; no gradient)."""
  log_ratio = jnp.where(mask, log_probs - old_log_probs, 0.0)
  return jax.lax.stop_gradient(ops.masked_mean(jnp.expm1(log_ratio) - log_ratio, mask))


ADVANTAGE_NORMS = ('none', 'minibatch')


def ppo_objective(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  clip_eps: float = 0.2,
  clip_eps_high: Optional[float] = None,
  agg_mode: str = 'token_mean',
  advantage_norm: str = 'none',
  entropy: Optional[jax.Array] = None,
  ent_coef: float = 0.0,
  values: Optional[jax.Array] = None,
  returns: Optional[jax.Array] = None,
  old_values: Optional[jax.Array] = None,
  vf_coef: float = 0.0,
  vf_clip: Optional[float] = None,
  ref_log_probs: Optional[jax.Array] = None,
  kl_coef: float = 0.0,
  policy_loss: Optional[Callable] = None,
  kl_fn: Optional[Callable] = None,
):
  """The one PPO objective of jaxca (LM learner and gymnax PPO), arXiv 1707.06347 Eq. 9.

  loss = pg + vf_coef * value_loss - ent_coef * agg(H) + kl_coef * agg(k3(pi||pi_ref))

  with pg the PPO-clip surrogate, or any policy objective passed as `policy_loss`.

  Terms are aggregated with `agg_mode` over `mask`; the value term needs
  `values` and `returns` and enters when `vf_coef` is non-zero (PPO-clipped
  around `old_values` when `vf_clip` is set); the KL term needs `ref_log_probs`
  and enters when `kl_coef` is non-zero; the entropy (per token, e.g.
  `entropy_from_logits`) is reported whenever given.

  Args:
    log_probs, old_log_probs, advantages, mask: as `ppo_policy_loss`.
    clip_eps, clip_eps_high, agg_mode: as `ppo_policy_loss`.
    advantage_norm: 'none', or 'minibatch' to whiten the advantages over this
      (mini)batch's valid entries first (`ops.masked_whiten`, biased variance,
      as PureJaxRL / CleanRL). Whitening over a whole batch belongs in the
      estimator chain (`estimators` stage 'whiten'), the other place that calls
      `ops.masked_whiten`.
    entropy: optional [..., T] per-token entropy of the current policy.
    ent_coef: entropy bonus coefficient (needs `entropy` when non-zero).
    values, returns, old_values, vf_coef, vf_clip: the value term.
    ref_log_probs, kl_coef: the KL-to-reference term.
    policy_loss: optional policy term `fn(log_probs, old_log_probs, advantages, mask) ->
      (loss, metrics)` replacing PPO-clip (e.g. an objective of `jaxca.objectives.make`);
      `clip_eps` and `clip_eps_high` are then unused. None: `ppo_policy_loss`.
    kl_fn: optional per-token KL estimator `fn(log_probs, ref_log_probs, mask) -> [..., T]`
      (e.g. `functools.partial(kl.estimate, estimator='k2')`); None: `kl_k3`.

  Returns:
    (loss scalar, aux dict: pg_loss, clip_frac, approx_kl, ratio_mean, and
    entropy / value_loss / kl_ref when those terms exist).
  """
  if advantage_norm not in ADVANTAGE_NORMS:
    raise ValueError(
      f'Unknown advantage_norm {advantage_norm!r}; choose from {list(ADVANTAGE_NORMS)}.'
    )
  if advantage_norm == 'minibatch':
    advantages = ops.masked_whiten(advantages, mask, unbiased=False)
  if policy_loss is None:
    pg, aux = ppo_policy_loss(
      log_probs,
      old_log_probs,
      advantages,
      mask,
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      agg_mode=agg_mode,
    )
  else:
    pg, aux = policy_loss(log_probs, old_log_probs, advantages, mask)
    aux = dict(aux, approx_kl=approx_kl(log_probs, old_log_probs, mask))
  total = pg
  aux = dict(aux, pg_loss=pg)
  if vf_coef:
    if values is None or returns is None:
      raise ValueError('ppo_objective: vf_coef != 0 needs `values` and `returns`.')
    vl = value_loss(
      values,
      returns,
      mask,
      old_values=old_values if vf_clip else None,
      clip_eps=vf_clip,
      agg_mode=agg_mode,
    )
    total = total + vf_coef * vl
    aux['value_loss'] = vl
  if entropy is not None:
    ent = aggregate(jnp.where(mask, entropy, 0.0), mask, agg_mode)
    if ent_coef:
      total = total - ent_coef * ent
    aux['entropy'] = jax.lax.stop_gradient(ent)
  elif ent_coef:
    raise ValueError('ppo_objective: ent_coef != 0 needs `entropy`.')
  if isinstance(kl_coef, jax.core.Tracer) or kl_coef:  # traced: an adaptive coefficient
    if ref_log_probs is None:
      raise ValueError('ppo_objective: kl_coef != 0 needs `ref_log_probs`.')
    per_token = (kl_k3 if kl_fn is None else kl_fn)(log_probs, ref_log_probs, mask)
    kl = aggregate(per_token, mask, agg_mode)
    total = total + kl_coef * kl
    aux['kl_ref'] = kl
  return total, aux


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


def kl_k3(
  log_probs: jax.Array,
  ref_log_probs: jax.Array,
  mask: jax.Array,
  *,
  bound: Optional[float] = 10.0,
) -> jax.Array:
  """Per-token k3 estimator of KL(pi || pi_ref): exp(d) - d - 1 with d = ref - log_probs.

  Unbiased and non-negative (Schulman, "Approximating KL divergence"); verl's
  `low_var_kl`, TRL's GRPO KL. 0 at masked entries. As verl's `kl_penalty_forward`
  (verl/trainer/ppo/core_algos.py) we clamp d to [-20, 20] and then the k3 value itself to
  [-bound, bound] = [-10, 10], so one token far from the reference cannot dominate a batch
  (unclamped, a log-ratio of 25 gives 4.85e8). The gradient is 0 where either clamp is
  active (as `torch.clamp`'s); the straight-through 'k3+' of `jaxca.kl` keeps k2's gradient
  there. `bound=None` skips the value clamp (verl's rollout-rejection k3 is unclamped).
  """
  d = jnp.where(mask, jnp.clip(ref_log_probs - log_probs, -20.0, 20.0), 0.0)
  k = jnp.expm1(d) - d
  if bound is not None:
    k = jnp.clip(k, -bound, bound)
  return jnp.where(mask, k, 0.0)
