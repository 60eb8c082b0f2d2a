"""The PPO loss pieces: the full PPO objective (policy term, value loss, entropy, KL), masked.

Arrays are batch-major `[..., T]` (tokens or time steps on the last axis) with a bool `mask`
of the same shape (True where the policy acted). Everything is masked with `jnp.where`
*before* any exponential, so masked entries contribute exactly 0 to the loss and to the
gradient, even when their inputs are +-inf. Aggregation modes: `jaxca.objectives.aggregation`.
"""

from typing import Callable
from typing import Optional

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca.objectives import aggregation
from jaxca.objectives import kl as kl_lib
from jaxca.objectives import policy


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
  if not (log_probs.shape == old_log_probs.shape == advantages.shape == mask.shape):
    raise ValueError(
      'ppo_policy_loss: `log_probs`, `old_log_probs`, `advantages` and `mask` must share a '
      f'shape; got {log_probs.shape}, {old_log_probs.shape}, {advantages.shape}, {mask.shape}.'
    )
  loss, aux = policy.ppo_clip(
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
      (e.g. `functools.partial(kl.estimate, estimator='k2')`); None: `kl_lib.kl_k3`.

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
    ent = aggregation.aggregate(jnp.where(mask, entropy, 0.0), mask, agg_mode)
    if ent_coef:
      total = total - ent_coef * ent
    aux['entropy'] = jax.lax.stop_gradient(ent)
  elif ent_coef:
    raise ValueError('ppo_objective: ent_coef != 0 needs `entropy`.')
  if isinstance(kl_coef, jax.core.Tracer) or kl_coef:  # traced: an adaptive coefficient
    if ref_log_probs is None:
      raise ValueError('ppo_objective: kl_coef != 0 needs `ref_log_probs`.')
    per_token = (kl_lib.kl_k3 if kl_fn is None else kl_fn)(log_probs, ref_log_probs, mask)
    kl = aggregation.aggregate(per_token, mask, agg_mode)
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
  return 0.5 * aggregation.aggregate(err, mask, agg_mode, norm_length)


def entropy_from_logits(logits: jax.Array) -> jax.Array:
  """Per-position entropy `[...]` of categorical logits `[..., A]` (float32)."""
  logits = logits.astype(jnp.float32)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
