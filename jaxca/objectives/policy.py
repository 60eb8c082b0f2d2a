"""Policy objectives by name: the surrogate losses of today's LLM-RL recipes, as pure kernels.

Every objective has the signature

  fn(log_probs, old_log_probs, advantages, mask, *, <hyper-parameters>, agg_mode, norm_length,
     is_weights=None) -> (loss scalar, metrics dict)

with `[..., T]` float32 arrays (tokens on the last axis, any leading batch axes) and a bool
`mask`. `log_probs` is differentiated; `old_log_probs` (the policy that sampled, or the
learner's recomputation of it) and `advantages` are constants (gradient stopped). Inputs are
masked with `jnp.where` before any exponential, so masked tokens contribute exactly 0 to the
loss and the gradient even when they hold +-inf. With `r_t = exp(log_probs - old_log_probs)`
(log-ratio clamped to [-20, 20] as verl does) and advantages `A_t`, the per-token losses are:

  name         per-token loss                                            reference
  ppo_clip     max(-A r, -A clip(r, 1-eps_low, 1+eps_high)); with dual    arXiv 1707.06347,
               clip c and A < 0: min(that, -c A)                         DAPO 2503.14476,
                                                                         dual-clip 1912.09729
  gspo         as ppo_clip with the sequence ratio s = exp(mean_t log r)  GSPO 2507.18071
  gspo_token   ... with s_t = sg(s) * pi_t / sg(pi_t)                     GSPO-token variant
  cispo        -sg(clip(r, 1-eps_low, 1+eps_high)) A log pi              MiniMax-M1 2506.13585
  sapo         -f(r) A,  f(r) = sigmoid(tau (r - 1)) 4 / tau,            SAPO 2511.20347
               tau = tau_pos if A > 0 else tau_neg
  gpg          -A log pi                                                 GPG 2504.02546
  reinforce    -sg(min(r, is_max)) A log pi  (REINFORCE with IS)         Williams 1992
  clip_cov     ppo_clip, with a random r_cov share of the high-covariance Entropy mechanism
               tokens' losses set to 0                                   2505.22617 (Clip-Cov)
  kl_cov       -A r, plus coef |log r| on the top-k_cov covariance tokens 2505.22617 (KL-Cov)
  gmpo         -A_seq exp(mean_t sgn(A) min(sgn(A) log r, sgn(A) clip(log r))) per sequence,
               broadcast to its tokens                                   GMPO 2507.20673
  dppo_tv      -keep_t sg(min(r, is_max)) A log pi; keep_t drops tokens    DPPO 2602.04879
  dppo_kl      whose binary TV / KL divergence moved past eps in A's sign

then `aggregation.aggregate(loss_mat * is_weights, mask, agg_mode)` (`is_weights` are rollout
correction weights from `corrections`, gradient stopped; GMPO takes their per-sequence
geometric mean, as verl does; in bypass mode `make` passes them to 'gpg' only).
`make(name, **hyper_parameters)` builds one by name, with an optional rollout correction;
`from_config(loss_cfg)` reads a config's `loss` section.

Where jaxca differs from verl / TRL on purpose, the objective's docstring says so. The common
points: dual clipping is off by default (verl's `vanilla` always applies it with c = 3);
GSPO, SAPO and GMPO default to `seq_mean_token_mean` but, unlike verl, honour an explicit
`agg_mode`; clip-cov's random choice needs an explicit `key` (without one it deterministically
takes the highest-covariance eligible tokens).
"""

import inspect
from typing import Callable
from typing import Optional

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca import types
from jaxca.objectives import aggregation
from jaxca.objectives import corrections as corrections_lib

_LOG_RATIO_BOUND = 20.0


def _check(name, log_probs, old_log_probs, advantages, mask):
  if not (log_probs.shape == old_log_probs.shape == advantages.shape == mask.shape):
    raise ValueError(
      f'{name}: `log_probs`, `old_log_probs`, `advantages` and `mask` must share a shape; got '
      f'{log_probs.shape}, {old_log_probs.shape}, {advantages.shape}, {mask.shape}.'
    )
  if log_probs.ndim < 1:
    raise ValueError(f'{name}: inputs need a token axis; got scalars.')


def _prepare(log_probs, old_log_probs, advantages, mask):
  """Masked log-probs, clamped log-ratio and stopped advantages."""
  lp = jnp.where(mask, log_probs, 0.0)
  old = jax.lax.stop_gradient(jnp.where(mask, old_log_probs, 0.0))
  log_ratio = jnp.clip(lp - old, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
  adv = jax.lax.stop_gradient(jnp.where(mask, advantages, 0.0))
  return lp, log_ratio, adv


def _finish(loss_mat, mask, agg_mode, norm_length, is_weights, metrics):
  if is_weights is not None:
    if is_weights.shape != mask.shape:
      raise ValueError(
        f'`is_weights` {is_weights.shape} must have the shape of `mask` {mask.shape}.'
      )
    loss_mat = loss_mat * jax.lax.stop_gradient(jnp.where(mask, is_weights, 0.0))
  loss = aggregation.aggregate(jnp.where(mask, loss_mat, 0.0), mask, agg_mode, norm_length)
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def _base_metrics(log_ratio, mask):
  return dict(
    ppo_kl=ops.masked_mean(-log_ratio, mask),  # verl's `ppo_kl` (k1 of old vs new)
    ratio_mean=ops.masked_mean(jnp.exp(log_ratio), mask),
  )


def _frac(flags, mask):
  """Share of valid tokens where the bool `flags` hold."""
  return ops.masked_mean(flags.astype(jnp.float32), mask)


def _high(eps_low, eps_high):
  return eps_low if eps_high is None else eps_high


def _clipped_surrogate(ratio, adv, eps_low, eps_high):
  """Per-token max(-A r, -A clip(r)) and whether the clipped branch is active."""
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  return jnp.maximum(unclipped, clipped), clipped > unclipped


def ppo_clip(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  eps_low: float = 0.2,
  eps_high: Optional[float] = None,
  dual_clip_c: Optional[float] = None,
  agg_mode: str = 'token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """PPO clipped surrogate with asymmetric ("clip-higher") and optional dual clipping.

    l_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))
    dual clip (A_t < 0 only):  l_t = min(l_t, -c A_t)

  Args:
    log_probs: [..., T] float32; log pi_theta(a_t), differentiated.
    old_log_probs: [..., T] float32; log pi_old(a_t) (gradient stopped).
    advantages: [..., T] float32 (gradient stopped).
    mask: [..., T] bool; True where the policy acted.
    eps_low: lower clip range (PPO: 0.2, arXiv 1707.06347).
    eps_high: upper clip range, None = eps_low. DAPO's clip-higher uses 0.28
      (arXiv 2503.14476, sec. 3.1); verl `clip_ratio_high`, TRL `epsilon_high`.
    dual_clip_c: the dual-clip bound c > 1 (Ye et al. 2020, arXiv 1912.09729), None =
      off. verl's `vanilla` loss always applies it with `clip_ratio_c=3.0`; TRL does not.
    agg_mode: `aggregation.aggregate` mode; verl default 'token_mean'.
    is_weights: optional [..., T] rollout-correction weights (gradient stopped).

  Returns:
    (loss, metrics: clip_frac, clip_frac_lower (dual), ppo_kl, ratio_mean).
  """
  _check('ppo_clip', log_probs, old_log_probs, advantages, mask)
  if dual_clip_c is not None and dual_clip_c <= 1.0:
    raise ValueError(f'dual_clip_c must be > 1; got {dual_clip_c}.')
  _, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  ratio = jnp.exp(log_ratio)
  loss_mat, clipped = _clipped_surrogate(ratio, adv, eps_low, _high(eps_low, eps_high))
  metrics = dict(_base_metrics(log_ratio, mask), clip_frac=_frac(clipped, mask))
  if dual_clip_c is not None:
    bound = -adv * dual_clip_c
    lower = (adv < 0) & (loss_mat > bound)
    loss_mat = jnp.where(adv < 0, jnp.minimum(loss_mat, bound), loss_mat)
    metrics['clip_frac_lower'] = _frac(lower, mask)
  return _finish(loss_mat, mask, agg_mode, norm_length, is_weights, metrics)


def _sequence_log_ratio(log_ratio, mask):
  """[..., 1] mean log-ratio over each sequence's valid tokens (0 for an empty sequence)."""
  n = jnp.maximum(ops.masked_count(mask, axis=-1, dtype=log_ratio.dtype), 1.0)
  return (ops.masked_sum(log_ratio, mask, axis=-1) / n)[..., None]


def _gspo(
  name,
  token_level,
  log_probs,
  old_log_probs,
  advantages,
  mask,
  eps_low,
  eps_high,
  agg_mode,
  norm_length,
  is_weights,
):
  _check(name, log_probs, old_log_probs, advantages, mask)
  lp, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  log_s = _sequence_log_ratio(log_ratio, mask)
  if token_level:
    log_s = jax.lax.stop_gradient(log_s) + lp - jax.lax.stop_gradient(lp)
  else:
    log_s = jnp.broadcast_to(log_s, lp.shape)
  s = jnp.exp(jnp.minimum(log_s, 10.0))  # verl clamps the sequence log-ratio at 10
  loss_mat, clipped = _clipped_surrogate(s, adv, eps_low, _high(eps_low, eps_high))
  metrics = dict(
    _base_metrics(log_ratio, mask),
    clip_frac=_frac(clipped, mask),
    seq_ratio_mean=ops.masked_mean(s, mask),
  )
  return _finish(loss_mat, mask, agg_mode, norm_length, is_weights, metrics)


def gspo(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  eps_low: float = 3e-4,
  eps_high: Optional[float] = 4e-4,
  agg_mode: str = 'seq_mean_token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """GSPO: PPO clipping on the length-normalised sequence ratio (Zheng et al. 2025).

    s_i = (pi_theta(y_i) / pi_old(y_i))^(1/|y_i|) = exp(mean_t log r_{i,t})
    l_{i,t} = max(-A_{i,t} s_i, -A_{i,t} clip(s_i, 1 - eps_low, 1 + eps_high))

  The gradient flows through s_i (arXiv 2507.18071); with a sequence advantage A_i and
  'seq_mean_token_mean' the loss is the paper's mean over sequences. TRL:
  `importance_sampling_level='sequence'` with `loss_type='grpo'`. Defaults: the paper's and
  verl's GSPO recipe, eps_low 3e-4, eps_high 4e-4. verl clamps log s_i at 10 (so do we) and
  always aggregates with seq-mean-token-mean; jaxca honours `agg_mode`. On length-1 sequences
  GSPO is PPO-clip.
  """
  return _gspo(
    'gspo',
    False,
    log_probs,
    old_log_probs,
    advantages,
    mask,
    eps_low,
    eps_high,
    agg_mode,
    norm_length,
    is_weights,
  )


def gspo_token(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  eps_low: float = 3e-4,
  eps_high: Optional[float] = 4e-4,
  agg_mode: str = 'seq_mean_token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """GSPO-token: the sequence ratio with per-token gradients (arXiv 2507.18071).

    s_{i,t} = sg(s_i) * pi_theta(y_{i,t}) / sg(pi_theta(y_{i,t}))     (value s_i)
    l_{i,t} = max(-A_{i,t} s_{i,t}, -A_{i,t} clip(s_{i,t}, 1 - eps_low, 1 + eps_high))

  Lets token advantages differ within a sequence; with A_{i,t} = A_i its value and gradient
  equal GSPO's. This is verl's `loss_mode='gspo'`. Defaults as `gspo`.
  """
  return _gspo(
    'gspo_token',
    True,
    log_probs,
    old_log_probs,
    advantages,
    mask,
    eps_low,
    eps_high,
    agg_mode,
    norm_length,
    is_weights,
  )


def cispo(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  eps_low: Optional[float] = None,
  eps_high: float = 0.2,
  agg_mode: str = 'token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """CISPO: REINFORCE with a clipped, stop-gradient IS weight (MiniMax-M1, arXiv 2506.13585).

    w_t = sg(clip(r_t, 1 - eps_low, 1 + eps_high)),   l_t = -w_t A_t log pi_theta(a_t)

  Every token keeps a gradient, `w_t A_t grad log pi`. The paper sets no lower
  bound in practice (eps_low None: no lower clip; verl's example uses clip_ratio_low=10) and
  tunes eps_high; defaults follow verl's CISPO example (eps_high 0.2). eps_high None means
  eps_low (None for both: no clipping). TRL's `loss_type='cispo'`
  clips `r <= epsilon_high` directly (recommended 5.0, i.e. jaxca eps_high=4.0), with the
  'dapo' token-mean normaliser. The loss value depends on log pi itself; only its gradient is
  meaningful.
  """
  _check('cispo', log_probs, old_log_probs, advantages, mask)
  lp, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  ratio = jnp.exp(log_ratio)
  high = _high(eps_low, eps_high)
  lo = -jnp.inf if eps_low is None else 1.0 - eps_low
  hi = jnp.inf if high is None else 1.0 + high
  w = jax.lax.stop_gradient(jnp.clip(ratio, lo, hi))
  loss_mat = -w * adv * lp
  metrics = dict(_base_metrics(log_ratio, mask), clip_frac=_frac(w != ratio, mask))
  return _finish(loss_mat, mask, agg_mode, norm_length, is_weights, metrics)


def sapo(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  tau_pos: float = 1.0,
  tau_neg: float = 1.05,
  agg_mode: str = 'seq_mean_token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """SAPO: a smooth, temperature-controlled gate instead of the hard clip (arXiv 2511.20347).

    f(r) = sigmoid(tau (r - 1)) * 4 / tau,   tau = tau_pos if A_t > 0 else tau_neg
    l_t = -f(r_t) A_t

  f(1) = 2/tau and f'(1) = 1, so at r = 1 the gradient is PPO's; it decays smoothly as r moves
  away. Defaults: tau_pos 1.0, tau_neg 1.05 (the paper's, verl's and TRL's
  `sapo_temperature_pos/neg`). verl and TRL aggregate with seq-mean-token-mean (jaxca's
  default, but an explicit `agg_mode` is honoured).
  """
  _check('sapo', log_probs, old_log_probs, advantages, mask)
  _, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  ratio = jnp.exp(log_ratio)
  tau = jnp.where(adv > 0, tau_pos, tau_neg)
  gate = jax.nn.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
  loss_mat = -gate * adv
  metrics = dict(_base_metrics(log_ratio, mask), gate_mean=ops.masked_mean(gate, mask))
  return _finish(loss_mat, mask, agg_mode, norm_length, is_weights, metrics)


def gpg(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  agg_mode: str = 'token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """GPG: the plain policy-gradient surrogate, no ratio and no clip (arXiv 2504.02546).

    l_t = -A_t log pi_theta(a_t)

  `old_log_probs` only enters the metrics. GPG's advantage correction (alpha = B / B_valid)
  belongs to the advantage estimator, not here. verl `loss_mode='gpg'` (token-mean).
  """
  _check('gpg', log_probs, old_log_probs, advantages, mask)
  lp, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  return _finish(-adv * lp, mask, agg_mode, norm_length, is_weights, _base_metrics(log_ratio, mask))


def reinforce(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  is_max: Optional[float] = None,
  agg_mode: str = 'seq_mean_token_sum',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """REINFORCE with a per-token importance weight (Williams 1992; no clipping).

    w_t = sg(min(r_t, is_max)),   l_t = -w_t A_t log pi_theta(a_t)

  On-policy (old = current) w = 1 and this is REINFORCE. `is_max` truncates the weight (TIS),
  None = untruncated (the weight is still r_t; for no weight at all use `gpg`). With old =
  rollout log-probs this is verl's bypass mode `loss_type='reinforce'`, `rollout_is='token'`,
  `rollout_is_threshold=is_max` (`compute_policy_loss_reinforce`, whose own default
  aggregation is seq-mean-token-sum; the bypass path passes the actor's `loss_agg_mode`);
  verl's `rollout_is=None` there means no weight, i.e. `gpg`.
  """
  _check('reinforce', log_probs, old_log_probs, advantages, mask)
  lp, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  ratio = jnp.exp(log_ratio)
  w = ratio if is_max is None else jnp.minimum(ratio, is_max)
  w = jax.lax.stop_gradient(w)
  metrics = dict(_base_metrics(log_ratio, mask), clip_frac=_frac(w != ratio, mask))
  return _finish(-w * adv * lp, mask, agg_mode, norm_length, is_weights, metrics)


def _covariance(adv, lp, mask):
  """Per-token (A - mean A)(log pi - mean log pi) over the batch's valid tokens (constant)."""
  lp = jax.lax.stop_gradient(lp)
  return (adv - ops.masked_mean(adv, mask)) * (lp - ops.masked_mean(lp, mask))


def _select(priority, eligible, k):
  """Bool mask of the k highest-priority eligible entries (fewer if fewer are eligible)."""
  flat = jnp.where(eligible, priority, -jnp.inf).reshape(-1)
  order = jnp.argsort(-flat, stable=True)
  rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  return eligible & (rank.reshape(priority.shape) < k)


def _count_k(ratio, mask):
  """max(floor(ratio * #valid tokens), 1), as verl's clip-cov / kl-cov."""
  n = ops.masked_count(mask)
  return jnp.maximum(jnp.floor(ratio * n), 1.0).astype(jnp.int32)


def clip_cov(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  eps_low: float = 0.2,
  eps_high: Optional[float] = None,
  clip_cov_ratio: float = 2e-4,
  clip_cov_lb: float = 1.0,
  clip_cov_ub: float = 5.0,
  key: Optional[jax.Array] = None,
  agg_mode: str = 'token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """Clip-Cov: PPO-clip that drops a few high-covariance tokens (Cui et al., arXiv 2505.22617).

    cov_t = (A_t - mean A)(log pi_t - mean log pi)            (over the batch's valid tokens)
    eligible = valid, not clipped by PPO, clip_cov_lb < cov_t < clip_cov_ub
    choose k = max(floor(clip_cov_ratio * #valid), 1) eligible tokens at random (`key`)
    l_t = ppo_clip l_t, times 0 on the chosen tokens

  The chosen tokens lose their gradient (the paper's "detach"); like verl their loss value is
  set to 0 and they stay in the normaliser. Defaults: verl's (`clip_cov_ratio` 2e-4, bounds
  1 and 5). verl draws with torch.randperm; jaxca needs an explicit `key`, and without one takes
  the k eligible tokens of highest covariance (a deterministic deviation).
  """
  _check('clip_cov', log_probs, old_log_probs, advantages, mask)
  lp, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  ratio = jnp.exp(log_ratio)
  loss_mat, clipped = _clipped_surrogate(ratio, adv, eps_low, _high(eps_low, eps_high))
  cov = _covariance(adv, lp, mask)
  eligible = mask & ~clipped & (cov > clip_cov_lb) & (cov < clip_cov_ub)
  priority = cov if key is None else jax.random.uniform(key, cov.shape)
  chosen = _select(priority, eligible, _count_k(clip_cov_ratio, mask))
  loss_mat = jnp.where(chosen, 0.0, loss_mat)
  metrics = dict(
    _base_metrics(log_ratio, mask),
    clip_frac=_frac(chosen, mask),
    ppo_clip_frac=_frac(clipped, mask),
  )
  return _finish(loss_mat, mask, agg_mode, norm_length, is_weights, metrics)


def kl_cov(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  kl_cov_ratio: float = 2e-4,
  ppo_kl_coef: float = 0.1,
  agg_mode: str = 'token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """KL-Cov: unclipped surrogate plus a KL penalty on the top-covariance tokens (arXiv 2505.22617).

    l_t = -A_t r_t + ppo_kl_coef * |log r_t| * [t among the top-k cov_t]
    k = max(floor(kl_cov_ratio * #valid), 1),  cov_t as in `clip_cov`

  No PPO clipping (as in the paper and verl). Defaults: verl's config (`kl_cov_ratio` 2e-4,
  `ppo_kl_coef` 0.1; verl's function fallback for the coefficient is 1.0).
  """
  _check('kl_cov', log_probs, old_log_probs, advantages, mask)
  lp, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  ratio = jnp.exp(log_ratio)
  chosen = _select(_covariance(adv, lp, mask), mask, _count_k(kl_cov_ratio, mask))
  loss_mat = -adv * ratio + jnp.where(chosen, ppo_kl_coef * jnp.abs(log_ratio), 0.0)
  metrics = dict(
    _base_metrics(log_ratio, mask),
    kl_frac=_frac(chosen, mask),
    ppo_kl_abs=ops.masked_mean(jnp.abs(log_ratio), mask),
  )
  return _finish(loss_mat, mask, agg_mode, norm_length, is_weights, metrics)


def gmpo(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  eps_low: float = 0.4,
  eps_high: Optional[float] = None,
  agg_mode: str = 'seq_mean_token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """GMPO: the geometric mean of token-level clipped ratios (Zhao et al., arXiv 2507.20673).

    c_t = sgn(A) min(sgn(A) log r_t, sgn(A) clip(log r_t, -eps_low, eps_high))
    l_i = -A_i exp(mean_t c_t),   A_i = mean_t A_t            (one loss per sequence)

  The clip is on log r (the paper's (e^-eps, e^eps) ratio range); defaults are the paper's and
  verl's recipe, eps = 0.4. The per-sequence loss is broadcast to its valid tokens, so the
  default 'seq_mean_token_mean' is the mean over non-empty sequences (verl's `geo_mean` takes a
  plain mean over all rows, counting empty ones, and ignores `loss_agg_mode`). Rollout
  correction weights enter through their per-sequence geometric mean, as in verl.
  """
  _check('gmpo', log_probs, old_log_probs, advantages, mask)
  _, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  high = _high(eps_low, eps_high)
  sgn = jnp.sign(adv)
  clamped = jnp.clip(log_ratio, -eps_low, high)
  c = sgn * jnp.minimum(sgn * log_ratio, sgn * clamped)
  seq_ratio = jnp.exp(_sequence_log_ratio(c, mask))
  n = jnp.maximum(ops.masked_count(mask, axis=-1), 1.0)
  seq_adv = (ops.masked_sum(adv, mask, axis=-1) / n)[..., None]
  if is_weights is not None:
    log_w = jnp.where(mask, jnp.log(jax.lax.stop_gradient(is_weights) + 1e-10), 0.0)
    seq_ratio = seq_ratio * jax.lax.stop_gradient(jnp.exp(_sequence_log_ratio(log_w, mask)))
  loss_mat = jnp.broadcast_to(-seq_adv * seq_ratio, log_ratio.shape)
  clipped = log_ratio != clamped
  metrics = dict(
    _base_metrics(log_ratio, mask),
    clip_frac=_frac(clipped & (adv > 0), mask),
    clip_frac_lower=_frac(clipped & (adv < 0), mask),
  )
  return _finish(loss_mat, mask, agg_mode, norm_length, None, metrics)


def _dppo(
  divergence,
  log_probs,
  old_log_probs,
  advantages,
  mask,
  eps_low,
  eps_high,
  is_max,
  agg_mode,
  norm_length,
  is_weights,
):
  name = f'dppo_{divergence}'
  _check(name, log_probs, old_log_probs, advantages, mask)
  lp, log_ratio, adv = _prepare(log_probs, old_log_probs, advantages, mask)
  old = jax.lax.stop_gradient(jnp.where(mask, old_log_probs, 0.0))
  high = _high(eps_low, eps_high)
  p = jnp.exp(jax.lax.stop_gradient(lp))
  p_old = jnp.exp(old)
  if divergence == 'tv':
    keep_pos = (p - p_old) <= high
    keep_neg = (p - p_old) >= -eps_low
  else:
    lp_sg = jax.lax.stop_gradient(lp)
    binary_kl = p_old * (old - lp_sg) + (1.0 - p_old) * jnp.log(
      (1.0 - p_old + 1e-8) / (1.0 - p + 1e-8)
    )
    keep_pos = (binary_kl <= high) | (p <= p_old)
    keep_neg = (binary_kl <= eps_low) | (p >= p_old)
  keep = jnp.where(adv > 0, keep_pos, keep_neg)
  ratio = jnp.exp(log_ratio)
  w = jax.lax.stop_gradient(ratio if is_max is None else jnp.minimum(ratio, is_max))
  loss_mat = jnp.where(keep, -adv * w * lp, 0.0)
  metrics = dict(
    _base_metrics(log_ratio, mask),
    clip_frac=_frac(~keep, mask),
    is_trunc_frac=_frac(keep & (w != ratio), mask),
  )
  return _finish(loss_mat, mask, agg_mode, norm_length, is_weights, metrics)


def dppo_tv(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  eps_low: float = 0.15,
  eps_high: Optional[float] = None,
  is_max: Optional[float] = 20.0,
  agg_mode: str = 'token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """DPPO-Binary-TV: a divergence trust region instead of the ratio clip (arXiv 2602.04879).

  With p = pi_theta(a_t), p_old = pi_old(a_t) (probabilities of the sampled token) and the
  binary total variation p - p_old, a token leaves the loss when the update has already
  moved it too far in its advantage's direction:

    keep_t = (p - p_old <= eps_high) if A_t > 0 else (p - p_old >= -eps_low)
    l_t    = -keep_t sg(min(r_t, is_max)) A_t log pi_theta(a_t)

  (a truncated importance weight instead of the dual clip; the loss value depends on log pi,
  only its gradient is meaningful). verl `loss_mode='dppo_tv'`
  (`compute_policy_loss_dppo_tv`: `clip_ratio_low/high` are the TV thresholds, `clip_ratio_c`
  = is_max, default 20; its example uses 0.15), SkyRL `dppo_policy_loss`; reference code
  sail-sg/Stable-RL. eps_high None means eps_low; is_max None: no truncation. Metrics:
  `clip_frac` (tokens left out), `is_trunc_frac` (kept tokens whose weight was truncated).
  """
  return _dppo(
    'tv',
    log_probs,
    old_log_probs,
    advantages,
    mask,
    eps_low,
    eps_high,
    is_max,
    agg_mode,
    norm_length,
    is_weights,
  )


def dppo_kl(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  *,
  eps_low: float = 0.05,
  eps_high: Optional[float] = None,
  is_max: Optional[float] = 20.0,
  agg_mode: str = 'token_mean',
  norm_length=None,
  is_weights: Optional[jax.Array] = None,
):
  """DPPO-Binary-KL: `dppo_tv` with the binary KL as the divergence (arXiv 2602.04879).

    D_t = p_old log(p_old / p) + (1 - p_old) log((1 - p_old + 1e-8) / (1 - p + 1e-8))
    keep_t = (D_t <= eps_high or p <= p_old) if A_t > 0 else (D_t <= eps_low or p >= p_old)
    l_t    = -keep_t sg(min(r_t, is_max)) A_t log pi_theta(a_t)

  verl `loss_mode='dppo_kl'` (`compute_policy_loss_dppo_kl`, the 1e-8 included; its example
  uses thresholds 0.05), SkyRL `dppo_policy_loss`. Defaults and metrics as `dppo_tv`.
  """
  return _dppo(
    'kl',
    log_probs,
    old_log_probs,
    advantages,
    mask,
    eps_low,
    eps_high,
    is_max,
    agg_mode,
    norm_length,
    is_weights,
  )


OBJECTIVES = {
  'ppo_clip': ppo_clip,
  'gspo': gspo,
  'gspo_token': gspo_token,
  'cispo': cispo,
  'sapo': sapo,
  'gpg': gpg,
  'reinforce': reinforce,
  'clip_cov': clip_cov,
  'kl_cov': kl_cov,
  'gmpo': gmpo,
  'dppo_tv': dppo_tv,
  'dppo_kl': dppo_kl,
}
# verl's `policy_loss.loss_mode` names that differ from jaxca's.
ALIASES = {'vanilla': 'ppo_clip', 'geo_mean': 'gmpo'}
_COMMON = ('agg_mode', 'norm_length', 'is_weights')
# Objectives with no importance ratio of their own: in bypass mode the weights are their only
# correction (`make`, correction_target='current').
_NO_OWN_RATIO = ('gpg',)


def check_name(name: str) -> str:
  """Canonical objective name (hyphens and verl's aliases accepted); raises if unknown."""
  canon = name.replace('-', '_')
  canon = ALIASES.get(canon, canon)
  if canon not in OBJECTIVES:
    raise ValueError(f'Unknown policy objective {name!r}; choose from {list(OBJECTIVES)}.')
  return canon


def hyperparameters(name: str) -> dict:
  """The objective's hyper-parameters and their defaults (excluding agg_mode, key, ...)."""
  sig = inspect.signature(OBJECTIVES[check_name(name)])
  return {
    k: p.default
    for k, p in sig.parameters.items()
    if p.kind is p.KEYWORD_ONLY and k not in _COMMON and k != 'key'
  }


def make(
  name: str,
  *,
  agg_mode: Optional[str] = None,
  norm_length=None,
  correction=None,
  correction_target: str = 'old',
  **hparams,
) -> Callable:
  """Builds a policy objective by name, optionally with a rollout correction.

  Args:
    name: a key of `OBJECTIVES` (or a verl alias: 'vanilla', 'geo_mean').
    agg_mode: `aggregation.aggregate` mode; None = the objective's default.
    norm_length: for 'seq_mean_token_sum_norm'.
    correction: None, a dict of `corrections.make` keywords (e.g. `dict(preset='icepop')`), or
      a callable `(target_log_probs, rollout_log_probs, mask) -> (weights, mask, metrics)`.
    correction_target: which learner log-probs the weights compare with the rollout's:
      'old' (verl's decoupled mode: w = pi_old / pi_rollout, multiplied into every
      objective's per-token loss) or 'current' (verl's bypass mode, for `old_log_probs` that
      are the rollout's own: w = sg(pi_theta) / pi_rollout and the rejection use the current
      log-probs). In bypass mode an objective with a ratio r = pi_theta / pi_old already
      corrects by pi_theta / pi_rollout, so, as verl's `compute_policy_loss_bypass_mode`
      (verl/trainer/ppo/core_algos.py) does for PPO-clip, only the rejection mask is applied
      and the weights are reported, not multiplied in; they are multiplied into 'gpg' (no ratio
      of its own), which is verl's bypass `loss_type='reinforce'` (`rollout_is` token or
      sequence). `reinforce(is_max=c)` in bypass mode is the same as that with token weights.
    **hparams: the objective's hyper-parameters (see `hyperparameters(name)`).

  Returns:
    `objective(log_probs, old_log_probs, advantages, mask, *, rollout_log_probs=None,
    agg_mode=None, key=None) -> (loss, metrics)`. With a correction configured,
    `rollout_log_probs` is required; the correction's metrics are prefixed 'rollout_'.
    `key` is used by 'clip_cov' only (and ignored otherwise); `objective.needs_key` says
    whether the objective uses it.
  """
  canon = check_name(name)
  kernel = OBJECTIVES[canon]
  known = hyperparameters(canon)
  unknown = set(hparams) - set(known)
  if unknown:
    raise ValueError(
      f'{canon}: unknown hyper-parameters {sorted(unknown)}; known: {sorted(known)}.'
    )
  default_agg = inspect.signature(kernel).parameters['agg_mode'].default
  default_agg = aggregation.check_agg_mode(agg_mode or default_agg)
  if correction_target not in ('old', 'current'):
    raise ValueError(f"correction_target must be 'old' or 'current'; got {correction_target!r}.")
  if isinstance(correction, dict):
    correction = corrections_lib.make(**correction)
  takes_key = 'key' in inspect.signature(kernel).parameters  # draws tokens (clip_cov)

  def objective(
    log_probs, old_log_probs, advantages, mask, *, rollout_log_probs=None, agg_mode=None, key=None
  ):
    metrics = {}
    is_weights = None
    if correction is not None:
      if rollout_log_probs is None:
        raise ValueError(f'{canon}: a rollout correction is configured; pass `rollout_log_probs`.')
      target = old_log_probs if correction_target == 'old' else log_probs
      is_weights, mask, corr_metrics = correction(target, rollout_log_probs, mask)
      if correction_target == 'current' and canon not in _NO_OWN_RATIO:
        is_weights = None  # bypass: the ratio is already against pi_rollout (no double count)
      metrics = {f'rollout_{k}': v for k, v in corr_metrics.items()}
    extra = dict(key=key) if takes_key else {}
    loss, obj_metrics = kernel(
      log_probs,
      old_log_probs,
      advantages,
      mask,
      agg_mode=aggregation.check_agg_mode(agg_mode) if agg_mode else default_agg,
      norm_length=norm_length,
      is_weights=is_weights,
      **hparams,
      **extra,
    )
    return loss, {**obj_metrics, **metrics}

  objective.needs_key = takes_key  # the learner then hands it one key per minibatch
  return objective


def _off(value):
  """None for the config's "off" values (None, 0, '')."""
  return None if value in (None, 0, 0.0, '') else value


def from_config(loss_cfg) -> Callable:
  """Builds the objective from a config's `loss` section (ConfigDict or dict).

  Keys (all optional):
    objective: name (default 'ppo_clip').
    clip_eps, clip_eps_high, dual_clip_c: -> eps_low, eps_high, dual_clip_c of the objectives
      that take them, shared like verl's `clip_ratio_low/high/c` (0/None = off: the objective's
      own default; clip_eps alone sets both sides). For GSPO set 3e-4 / 4e-4 (or leave both
      off); for CISPO without a lower bound pass objective_kwargs=dict(eps_low=None).
    agg_mode: aggregation (None = the objective's default).
    objective_kwargs: dict of further hyper-parameters (tau_pos, clip_cov_ratio, is_max, ...).
    rollout_correction: None/{} (off) or a dict of `corrections.make` keywords, plus
      'target': 'old' | 'current' (see `make`).
  """
  name = types.config_get(loss_cfg, 'objective', 'ppo_clip') or 'ppo_clip'
  known = hyperparameters(name)
  hparams = {}
  low, high = (
    _off(types.config_get(loss_cfg, 'clip_eps')),
    _off(types.config_get(loss_cfg, 'clip_eps_high')),
  )
  if low is not None and 'eps_low' in known:
    hparams['eps_low'] = float(low)
    hparams['eps_high'] = None  # verl: clip_ratio_high defaults to clip_ratio
  if high is not None and 'eps_high' in known:
    hparams['eps_high'] = float(high)
  dual = _off(types.config_get(loss_cfg, 'dual_clip_c'))
  if dual is not None and 'dual_clip_c' in known:
    hparams['dual_clip_c'] = float(dual)
  hparams.update(dict(types.config_get(loss_cfg, 'objective_kwargs', None) or {}))
  corr = dict(types.config_get(loss_cfg, 'rollout_correction', None) or {})
  target = corr.pop('target', 'old')
  return make(
    name,
    agg_mode=types.config_get(loss_cfg, 'agg_mode'),
    norm_length=types.config_get(loss_cfg, 'norm_length'),
    correction=corr or None,
    correction_target=target,
    **hparams,
  )
