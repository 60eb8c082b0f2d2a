"""The learner's loss options (`LossOptions`, validated from a config section) and PPO loss."""

import functools
from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional

import jax.numpy as jnp

from jaxca import objectives
from jaxca import types
from jaxca.lm import rollout as rollout_lib
from jaxca.lm.rollout import Rollout
from jaxca.networks import transformer
from jaxca.objectives import aggregation
from jaxca.objectives import kl as kl_lib
from jaxca.objectives import losses

LOSS_KEYS = (
  'objective',
  'clip_eps',
  'clip_eps_high',
  'dual_clip_c',
  'agg_mode',
  'norm_length',
  'objective_kwargs',
  'rollout_correction',
  'kl_coef',
  'kl_estimator',
  'kl_in_reward',
  'kl_ctrl',
  'kl_target',
  'kl_horizon',
  'ent_coef',
  'vf_coef',
  'vf_clip',
)


class LossOptions(NamedTuple):
  """A validated `loss` config section (`loss_options`).

  Attributes:
    objective: the policy term (`objectives.from_config`), or None for plain PPO-clip
      (`losses.ppo_policy_loss`, the same kernel with this module's metric names).
    objective_name: its canonical name ('ppo_clip', 'gspo', ...).
    clip_eps, clip_eps_high, agg_mode: PPO-clip parameters and the aggregation of every term.
    kl_coef: coefficient of the KL to the reference (0: off); in the loss, or in the rewards
      when `kl_in_reward`.
    kl_estimator: 'k1' | 'k2' | 'k3' | 'abs' (`kl.estimate`; 'k3' is `kl_lib.kl_k3`).
    kl_in_reward: put `kl_coef * KL` in the token rewards (`kl.penalize_rewards`) instead of
      the loss.
    ent_coef, vf_coef, vf_clip: entropy bonus and value term (`losses.ppo_objective`).
    kl_ctrl: 'fixed' (a constant `kl_coef`) or 'adaptive' (`kl.adaptive_controller` from
      `kl_coef` with `kl_target`, `kl_horizon`; the coefficient is learner state).
    kl_target, kl_horizon: the adaptive controller's target KL and horizon (None if fixed).
  """

  objective: Optional[Callable]
  objective_name: str
  clip_eps: float
  clip_eps_high: Optional[float]
  agg_mode: str
  kl_coef: float
  kl_estimator: str
  kl_in_reward: bool
  ent_coef: float
  vf_coef: float
  vf_clip: Optional[float]
  kl_ctrl: str = 'fixed'
  kl_target: Optional[float] = None
  kl_horizon: Optional[float] = None


def loss_options(loss_cfg: Any = None) -> LossOptions:
  """Reads and validates a `loss` config section (ConfigDict, dict or None; `LossOptions` as is).

  Keys (all optional; the defaults are plain token-level PPO-clip with eps 0.2):
    objective, clip_eps, clip_eps_high, dual_clip_c, agg_mode, norm_length, objective_kwargs,
      rollout_correction: the policy term, built by `objectives.from_config` (names:
      `objectives.OBJECTIVES`; a rollout correction compares the learner's log-probs with the
      sampler's, `Rollout.rollout_log_probs`).
    kl_coef (default 0: off), kl_estimator ('k3'), kl_in_reward (False): the KL to the
      frozen reference, in the loss (GRPO, arXiv 2402.03300 Eq. 3) or in the rewards (PPO-RLHF,
      Ziegler et al. arXiv 1909.08593).
    kl_ctrl: None or 'fixed' (a constant `kl_coef`), or 'adaptive': the proportional
      controller of Ziegler et al. (arXiv 1909.08593, Eq. 2; `kl.adaptive_controller`) starting
      at `kl_coef` (> 0), with `kl_target` and `kl_horizon` (> 0; verl's defaults 0.1 and
      10000). The learner keeps the coefficient in its state (`init_from_params(kl_coef=)`)
      and updates it once per iteration (see `make_rl_phases`).
    ent_coef, vf_coef, vf_clip: as `losses.ppo_objective`.

  Raises:
    ValueError: an unknown key, objective, hyper-parameter, KL estimator or controller (the
      message names the key and the allowed values).
  """
  if isinstance(loss_cfg, LossOptions):
    return loss_cfg
  if loss_cfg is not None and hasattr(loss_cfg, 'keys'):
    unknown = sorted(set(loss_cfg.keys()) - set(LOSS_KEYS))
    if unknown:
      raise ValueError(f'Unknown loss option(s) {unknown}; choose from {list(LOSS_KEYS)}.')
  name = objectives.check_name(types.config_get(loss_cfg, 'objective', None) or 'ppo_clip')
  agg_mode = aggregation.check_agg_mode(
    types.config_get(loss_cfg, 'agg_mode', None) or 'token_mean'
  )
  policy_term = objectives.from_config(loss_cfg)  # validates names and hyper-parameters
  plain = (
    name == 'ppo_clip'
    and not types.config_get(loss_cfg, 'dual_clip_c', None)
    and not types.config_get(loss_cfg, 'objective_kwargs', None)
    and not types.config_get(loss_cfg, 'rollout_correction', None)
    and types.config_get(loss_cfg, 'norm_length', None) is None
  )
  estimator = kl_lib.check_estimator(types.config_get(loss_cfg, 'kl_estimator', None) or 'k3')
  ctrl = types.config_get(loss_cfg, 'kl_ctrl', None) or 'fixed'
  if ctrl not in ('fixed', 'adaptive'):
    raise ValueError(
      f"loss.kl_ctrl={ctrl!r} is not supported; choose None, 'fixed' or 'adaptive' (the adaptive "
      "controller's target and horizon are the loss keys 'kl_target' and 'kl_horizon')."
    )
  kl_coef = float(types.config_get(loss_cfg, 'kl_coef', 0.0) or 0.0)
  kl_target = kl_horizon = None
  if ctrl == 'adaptive':
    kl_target, kl_horizon = (
      types.config_get(loss_cfg, 'kl_target', None),
      types.config_get(loss_cfg, 'kl_horizon', None),
    )
    if kl_coef <= 0:
      raise ValueError(
        f"loss.kl_ctrl='adaptive' starts from loss.kl_coef, which must be > 0; got {kl_coef}."
      )
    for key, v in (('kl_target', kl_target), ('kl_horizon', kl_horizon)):
      if v is None or not float(v) > 0:
        raise ValueError(f"loss.kl_ctrl='adaptive' needs loss.{key} > 0; got {v!r}.")
    kl_target, kl_horizon = float(kl_target), float(kl_horizon)
  for key in ('clip_eps', 'kl_coef', 'ent_coef', 'vf_coef'):
    v = types.config_get(loss_cfg, key, None)
    if v is not None and not float(v) >= 0:
      raise ValueError(f'loss.{key} must be >= 0; got {v!r}.')
  kl_in_reward = types.config_get(loss_cfg, 'kl_in_reward', False)
  if kl_in_reward not in (None, False, True):
    raise ValueError(f'loss.kl_in_reward must be True or False; got {kl_in_reward!r}.')
  return LossOptions(
    objective=None if plain else policy_term,
    objective_name=name,
    clip_eps=float(types.config_get(loss_cfg, 'clip_eps', 0.2)),
    clip_eps_high=types.config_get(loss_cfg, 'clip_eps_high', None) or None,
    agg_mode=agg_mode,
    kl_coef=kl_coef,
    kl_estimator=estimator,
    kl_in_reward=bool(kl_in_reward),
    ent_coef=float(types.config_get(loss_cfg, 'ent_coef', 0.0) or 0.0),
    vf_coef=float(types.config_get(loss_cfg, 'vf_coef', 0.0) or 0.0),
    vf_clip=types.config_get(loss_cfg, 'vf_clip', None) or None,
    kl_ctrl=ctrl,
    kl_target=kl_target,
    kl_horizon=kl_horizon,
  )


def make_ppo_loss(
  policy: transformer.Policy,
  *,
  prompt_len: int,
  temperature: float = 1.0,
  clip_eps: float = 0.2,
  clip_eps_high: Optional[float] = None,
  agg_mode: str = 'token_mean',
  kl_coef: float = 0.0,
  ent_coef: float = 0.0,
  vf_coef: float = 0.0,
  vf_clip: Optional[float] = None,
  objective: Optional[Callable] = None,
  kl_estimator: str = 'k3',
) -> Callable:
  """Returns loss_fn(params, rollout: Rollout, key=None) -> (loss, aux) for token-level PPO.

  `make_loss` with the single-turn score (`rollout.make_score_fn(policy, prompt_len,
  temperature)`) and these options: pg(agg_mode) + vf_coef * value_loss - ent_coef * agg(H)
  + kl_coef * agg(KL(pi || pi_ref)), with pg PPO-clip (`clip_eps`, `clip_eps_high`) or
  `objective` (from `objectives.make` / `from_config`).
  """
  opts = LossOptions(
    objective=objective,
    objective_name='',
    clip_eps=clip_eps,
    clip_eps_high=clip_eps_high,
    agg_mode=agg_mode,
    kl_coef=kl_coef,
    kl_estimator=kl_estimator,
    kl_in_reward=False,
    ent_coef=ent_coef,
    vf_coef=vf_coef,
    vf_clip=vf_clip,
  )
  return make_loss(rollout_lib.make_score_fn(policy, prompt_len, temperature), opts)


def make_loss(score_fn: Callable, opts: LossOptions) -> Callable:
  """Returns loss_fn(params, rollout: Rollout, key=None) -> (loss, aux), the learner's loss.

  `losses.ppo_objective` (shared with the gymnax PPO) on the scores of the rollout's tokens:
  `score_fn(params, tokens, valid) -> (log_probs [B, N], entropies [B, N], values [B, N] or
  None)` (single-turn: `rollout.make_score_fn`; multi-turn: `multiturn.make_score_fn`, the
  action-masked distribution). The loss is pg(agg_mode) + vf_coef * value_loss
  - ent_coef * agg(H) + kl_coef * agg(KL(pi || pi_ref)) with the options `opts` taken whole:
  pg is PPO-clip (`clip_eps`, `clip_eps_high`) or `opts.objective` (it receives the rollout's
  `rollout_log_probs` for its rollout correction and `key`, e.g. for clip-cov), and the KL is
  estimated per token by `opts.kl_estimator` (`kl.estimate`; 'k3' = `kl_lib.kl_k3`).
  `opts.kl_coef` may be traced (an adaptive coefficient).
  """
  aggregation.check_agg_mode(opts.agg_mode)
  kl_estimator = kl_lib.check_estimator(opts.kl_estimator)
  kl_fn = None
  if kl_estimator != 'k3':
    kl_fn = functools.partial(kl_lib.estimate, estimator=kl_estimator)
  objective = opts.objective

  def loss_fn(params, rb: Rollout, key=None):
    log_probs, entropy, values = score_fn(params, rb.tokens, rb.valid)
    mask = rb.mask
    if opts.vf_coef and values is None:
      raise ValueError('vf_coef > 0 needs a policy with a value head.')
    policy_loss = None
    if objective is not None:
      policy_loss = functools.partial(objective, rollout_log_probs=rb.rollout_log_probs, key=key)
    return losses.ppo_objective(
      jnp.where(mask, log_probs, 0.0),
      rb.old_log_probs,
      rb.advantages,
      mask,
      clip_eps=opts.clip_eps,
      clip_eps_high=opts.clip_eps_high,
      agg_mode=opts.agg_mode,
      entropy=entropy,
      ent_coef=opts.ent_coef,
      values=None if values is None else jnp.where(mask, values, 0.0),
      returns=rb.returns,
      old_values=rb.old_values,
      vf_coef=opts.vf_coef,
      vf_clip=opts.vf_clip,
      ref_log_probs=rb.ref_log_probs,
      kl_coef=opts.kl_coef,
      policy_loss=policy_loss,
      kl_fn=kl_fn,
    )

  return loss_fn
