"""Rollout correction: importance weights and rejection between the sampler and the trainer.

The sampler (e.g. a bf16 inference engine, or a stale copy of the policy) draws tokens from
pi_rollout; the learner's probabilities pi_train differ. With `d_t = log pi_train(a_t) -
log pi_rollout(a_t)` on the valid tokens of a sequence, the importance weight is, by `level`:

  'token'      w_t = exp(d_t)                             (per token; biased, low variance)
  'sequence'   w   = exp(sum_t d_t)   for every token     (product; unbiased, high variance)
  'geometric'  w   = exp(mean_t d_t)  for every token     (geometric mean; length-invariant)

and is then bounded, by `mode`, to [low, high] (either bound may be None):

  'truncate'   w <- clip(w, low, high)                     TIS (truncated IS, as in Munos et
               al. 2016, arXiv 1606.02647; Yao et al. 2025, "Your efficient RL framework
               secretly brings you off-policy RL training"); verl `rollout_is` +
               `rollout_is_threshold`, TRL `vllm_importance_sampling_mode='*_truncate'`.
  'mask'       tokens (or whole sequences) with w outside [low, high] are removed from the
               mask; the kept weights are unchanged. MIS; with level 'token' and
               (low, high) = (0.5, 5.0) this is IcePop (Ling Team, arXiv 2510.18855).
               TRL `vllm_importance_sampling_mode='*_mask'`; verl `rollout_rs='token_k1'`
               (token) / `'seq_sum_k1'` (sequence) / `'seq_mean_k1'` (geometric, "Geo-RS").
               verl's k1 band `rollout_rs_threshold='lo_hi'` bounds exp(k1) = pi_rollout /
               pi_train, the inverse of w (`compute_rollout_rejection_mask`,
               verl/trainer/ppo/rollout_corr_helper.py): it is jaxca's low = 1/hi,
               high = 1/lo.

Rejection by per-sequence KL (verl `rollout_rs='seq_{mean,sum,max}_k{1,2,3}'`): sequences whose
KL(pi_rollout || pi_train) estimate (`kl.estimate` on the rollout's tokens, reduced over
the sequence by mean, sum or max) exceeds `kl_threshold` are removed from the mask. Its k3 is
not value-clamped (verl clamps k3 to [-10, 10] in its KL penalty but not here).

The weights are always returned with their gradient stopped (they change the measure, not the
objective); the returned mask is the input mask AND every rejection. The rejected tokens leave
the loss *and its normaliser*. Where the weights go depends on the target log-probs
(`jaxca.objectives.make`, `correction_target`):
  * decoupled ('old': pi_train = the learner's recomputed old log-probs): the weights multiply
    every objective's per-token loss, as verl's `compute_policy_loss_*` do with
    `rollout_is_weights` (verl/trainer/ppo/core_algos.py) and TRL does;
  * bypass ('current': old log-probs = rollout log-probs, pi_train = the current policy): the
    objective's ratio is already pi_theta / pi_rollout, so verl's
    `compute_policy_loss_bypass_mode` computes the weights (for metrics) but applies only the
    rejection mask to PPO-clip, and multiplies the weights into its REINFORCE loss only
    (`loss_type='reinforce'`, `compute_policy_loss_reinforce`); jaxca multiplies them into
    'gpg' only (no ratio of its own) and applies just the mask elsewhere.

Deliberate differences: verl clamps log-weights to [-20, 20] (so do we); TRL's `*_mask` modes
and verl's IcePop (`rollout_is='token'`, `rollout_is_threshold='lo_hi'`, in
`compute_rollout_correction_weights`) set the weight to 0 but keep the token in the normaliser,
whereas jaxca removes it from the mask (verl's `rollout_rs` rejection semantics). verl's
default threshold is 2.0 (upper only); TRL's is C_max = 3.0 with `sequence_mask`.
"""

from typing import Callable
from typing import Optional

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca.objectives import kl as kl_lib

LEVELS = ('token', 'sequence', 'geometric')
MODES = ('truncate', 'mask')
KL_REDUCE = ('mean', 'sum', 'max')
_LOG_BOUND = 20.0

# Named recipes (keyword arguments of `rollout_correction`).
PRESETS = {
  'token_tis': dict(level='token', mode='truncate', high=2.0),
  'seq_tis': dict(level='sequence', mode='truncate', high=2.0),
  'token_mis': dict(level='token', mode='mask', high=2.0),
  'seq_mis': dict(level='sequence', mode='mask', high=2.0),
  'icepop': dict(level='token', mode='mask', low=0.5, high=5.0),
  'geo_rs': dict(level='geometric', mode='mask', low=0.999, high=1.001, apply_weights=False),
}


def log_importance_weights(
  target_log_probs: jax.Array, rollout_log_probs: jax.Array, mask: jax.Array, level: str = 'token'
) -> jax.Array:
  """log w per token `[..., T]` at the given level (see the module docstring); 0 where masked.

  Sequence levels broadcast the sequence's log-weight to its valid tokens. Not clamped.
  """
  if level not in LEVELS:
    raise ValueError(f'Unknown importance-weight level {level!r}; choose from {list(LEVELS)}.')
  d = jnp.where(mask, target_log_probs - rollout_log_probs, 0.0)
  if level == 'token':
    return d
  seq = ops.masked_sum(d, mask, axis=-1)
  if level == 'geometric':
    seq = seq / jnp.maximum(ops.masked_count(mask, axis=-1), 1.0)
  return jnp.where(mask, seq[..., None], 0.0)


def rollout_correction(
  target_log_probs: jax.Array,
  rollout_log_probs: jax.Array,
  mask: jax.Array,
  *,
  level: Optional[str] = 'token',
  mode: str = 'truncate',
  low: Optional[float] = None,
  high: Optional[float] = 2.0,
  apply_weights: bool = True,
  normalize: bool = False,
  kl_threshold: Optional[float] = None,
  kl_estimator: str = 'k3',
  kl_reduce: str = 'mean',
):
  """Importance weights and rejection mask correcting the sampler/trainer mismatch.

  Args:
    target_log_probs: [..., T] float32; log pi_train of the sampled tokens (the learner's old
      log-probs in verl's "decoupled" mode, the current ones in its "bypass" mode).
    rollout_log_probs: [..., T] float32; log pi_rollout recorded by the sampler.
    mask: [..., T] bool; True where the policy acted.
    level: 'token' | 'sequence' | 'geometric', or None for no importance weights (rejection
      by KL only).
    mode: 'truncate' (TIS: clip the weights to [low, high]) or 'mask' (MIS: reject tokens or
      sequences whose weight is outside [low, high]).
    low, high: bounds on w = pi_train / pi_rollout (not log w); None leaves that side open.
      verl's k1 rejection band 'lo_hi' bounds pi_rollout / pi_train: low = 1/hi, high = 1/lo.
    apply_weights: False returns weights of 1 (rejection only, e.g. verl's Geo-RS).
    normalize: divide the weights by their mean over the kept tokens ('token') or kept
      sequences (sequence levels), verl's `rollout_is_batch_normalize`.
    kl_threshold: reject sequences whose reduced KL estimate exceeds this (None: off).
    kl_estimator: 'k1' | 'k2' | 'k3' (per token, KL(pi_rollout || pi_train)).
    kl_reduce: 'mean' | 'sum' | 'max' over the sequence's valid tokens.

  Returns:
    (weights [..., T] float32, gradient stopped, 0 where the returned mask is False;
     mask [..., T] bool; metrics dict of scalars).
  """
  if not (target_log_probs.shape == rollout_log_probs.shape == mask.shape):
    raise ValueError(
      'rollout_correction: `target_log_probs`, `rollout_log_probs` and `mask` must share a '
      f'shape; got {target_log_probs.shape}, {rollout_log_probs.shape}, {mask.shape}.'
    )
  if mode not in MODES:
    raise ValueError(f'Unknown rollout-correction mode {mode!r}; choose from {list(MODES)}.')
  if kl_reduce not in KL_REDUCE:
    raise ValueError(f'Unknown kl_reduce {kl_reduce!r}; choose from {list(KL_REDUCE)}.')
  target = jax.lax.stop_gradient(jnp.where(mask, target_log_probs, 0.0))
  rollout = jax.lax.stop_gradient(jnp.where(mask, rollout_log_probs, 0.0))
  in_mask = mask
  metrics = {}
  seq_valid = ops.masked_count(mask, axis=-1) > 0

  if level is None:
    weights = jnp.ones(mask.shape, jnp.float32)
  else:
    log_w = jnp.clip(log_importance_weights(target, rollout, mask, level), -_LOG_BOUND, _LOG_BOUND)
    raw = jnp.exp(log_w)
    metrics['is_weight_raw_mean'] = ops.masked_mean(raw, mask)
    if mode == 'truncate':
      lo = -jnp.inf if low is None else low
      hi = jnp.inf if high is None else high
      weights = jnp.clip(raw, lo, hi)
      metrics['is_frac_truncated'] = ops.masked_mean((weights != raw).astype(jnp.float32), mask)
    else:
      keep = jnp.ones(mask.shape, bool)
      if low is not None:
        keep = keep & (log_w >= jnp.log(low))
      if high is not None:
        keep = keep & (log_w <= jnp.log(high))
      metrics['is_frac_masked'] = ops.masked_mean((~keep).astype(jnp.float32), mask)
      mask = mask & keep
      weights = raw
    if not apply_weights:
      weights = jnp.ones(mask.shape, jnp.float32)

  if kl_threshold is not None:
    # verl's `compute_rollout_rejection_mask` does not clamp its token k3 value (only the
    # log-ratio, to [-20, 20]), unlike its KL penalty.
    k = kl_lib.estimate(rollout, target, in_mask, kl_estimator, k3_bound=None)
    if kl_reduce == 'mean':
      seq_kl = ops.masked_mean(k, in_mask, axis=-1)
    elif kl_reduce == 'sum':
      seq_kl = ops.masked_sum(k, in_mask, axis=-1)
    else:
      seq_kl = jnp.max(jnp.where(in_mask, k, -jnp.inf), axis=-1)
      seq_kl = jnp.where(seq_valid, seq_kl, 0.0)
    accept = seq_kl <= kl_threshold
    metrics['rs_frac_rejected'] = ops.masked_mean((~accept).astype(jnp.float32), seq_valid)
    metrics['rs_seq_kl_mean'] = ops.masked_mean(seq_kl, seq_valid)
    mask = mask & accept[..., None]

  weights = jnp.where(mask, weights, 0.0)
  if normalize and level is not None and apply_weights:
    if level == 'token':
      mean_w = ops.masked_mean(weights, mask)
    else:
      seq_w = ops.masked_mean(weights, mask, axis=-1)
      mean_w = ops.masked_mean(seq_w, ops.masked_count(mask, axis=-1) > 0)
    weights = jnp.where(mean_w > 1e-8, weights / jnp.maximum(mean_w, 1e-8), weights)
  weights = jax.lax.stop_gradient(weights)

  metrics['is_weight_mean'] = ops.masked_mean(weights, mask)
  metrics['frac_rejected'] = ops.masked_mean((in_mask & ~mask).astype(jnp.float32), in_mask)
  metrics['mismatch_k3'] = ops.masked_mean(
    kl_lib.estimate(rollout, target, in_mask, 'k3', k3_bound=None), in_mask
  )
  return weights, mask, jax.tree.map(jax.lax.stop_gradient, metrics)


def make(preset: Optional[str] = None, **kwargs) -> Callable:
  """Returns `fn(target_log_probs, rollout_log_probs, mask) -> (weights, mask, metrics)`.

  `preset` is a key of `PRESETS` ('token_tis', 'seq_tis', 'token_mis', 'seq_mis', 'icepop',
  'geo_rs'); `kwargs` (the keywords of `rollout_correction`) override it.
  """
  params = {}
  if preset is not None:
    if preset not in PRESETS:
      raise ValueError(
        f'Unknown rollout-correction preset {preset!r}; choose from {list(PRESETS)}.'
      )
    params.update(PRESETS[preset])
  params.update(kwargs)
  allowed = set(rollout_correction.__kwdefaults__)
  unknown = set(params) - allowed
  if unknown:
    raise ValueError(
      f'Unknown rollout-correction options {sorted(unknown)}; known: {sorted(allowed)}.'
    )
  level = params.get('level', 'token')
  if level is not None and level not in LEVELS:
    raise ValueError(f'Unknown importance-weight level {level!r}; choose from {list(LEVELS)}.')
  if params.get('kl_threshold') is not None:
    kl_lib.check_estimator(params.get('kl_estimator', 'k3'))

  def fn(target_log_probs, rollout_log_probs, mask):
    return rollout_correction(target_log_probs, rollout_log_probs, mask, **params)

  return fn
