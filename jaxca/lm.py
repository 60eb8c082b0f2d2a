"""Pure train-step pieces for language policies on verifiable tasks (RL and warm start).

Shape legend: P prompts, G samples per prompt, B = P*G rows (row p*G + g, the
`sampling.sample` layout), Lp prompt length, N response length, L = Lp + N, V vocab.

One RL iteration (`make_rl_update`):
  1. sample G responses per prompt with the current policy (`sampling.sample`);
  2. score them with the task's verifier (sequence reward [B]), put the reward on
     the last valid response token (token-level rewards [B, N]);
  3. one teacher-forced pass computes the old log-probs (and values with a value
     head), one pass with the frozen reference computes the reference log-probs
     (only when the KL coefficient is non-zero);
  4. providers fill exactly the `jaxca.types.Trajectory` fields the estimator
     `requires` (`PROVIDERS`, extendable per call), and the estimator
     (`jaxca.estimators`) turns the trajectory into advantages/returns;
  5. `num_epochs` x `num_minibatches` PPO-clip steps (`train.minibatch_epochs`)
     on `pg + kl_coef * KL_k3 - ent_coef * H + vf_coef * value_loss`.

Two-phase iterations (`make_rl_phases`): `collect` (steps 1-3, returns `RolloutData`),
then host-side work on the batch (e.g. Monte-Carlo values of its step prefixes, supplied as
`host_fields`), then `update` (steps 4-5 on that fixed batch). `make_rl_update` is the two
phases composed inside one function (no host fields). Optional pieces: a separate critic
network with its own optimiser, and a `loss_mask` field (`LEARNER_FIELDS`) that restricts
the loss to some tokens.

States are plain dicts of arrays (checkpointable with orbax, no keys, no Python
objects): `step` [] int32, `params`, `opt_state`, and `ref_params` when the KL
term is on. Nothing here is jitted; the experiment jits whole iterations.
"""

import functools
from typing import Any
from typing import Callable
from typing import Dict
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxca import dapo
from jaxca import kl as kl_lib
from jaxca import losses
from jaxca import objectives
from jaxca import ops
from jaxca import sampling
from jaxca import train as train_lib
from jaxca import types
from jaxca.networks import transformer
from jaxca.tasks import base as tasks_base

REWARDS = ('outcome', 'exact_match', 'process')


class Rollout(NamedTuple):
  """One RL batch, everything the loss needs (leading axis B for minibatching).

  Attributes:
    tokens: [B, L] int32 prompt followed by the response.
    valid: [B, L] bool prompt mask followed by `mask`.
    mask: [B, N] bool, True for generated tokens (through EOS).
    old_log_probs: [B, N] float32 log pi_old(token) (teacher-forced recompute).
    ref_log_probs: [B, N] float32 log pi_ref(token) (zeros when the KL term is off).
    old_values: [B, N] float32 V_old(s_t) (zeros without a value head).
    advantages: [B, N] float32 estimator advantages (0 where `mask` is False).
    returns: [B, N] float32 estimator returns (value targets).
    rollout_log_probs: [B, N] float32 log-probs recorded by the sampler (0 where masked), for
      rollout correction (`loss.rollout_correction`); None when not recorded.
  """

  tokens: jax.Array
  valid: jax.Array
  mask: jax.Array
  old_log_probs: jax.Array
  ref_log_probs: jax.Array
  old_values: jax.Array
  advantages: jax.Array
  returns: jax.Array
  rollout_log_probs: Optional[jax.Array] = None


def _get(cfg, name, default=None):
  if cfg is None:
    return default
  if hasattr(cfg, 'get'):
    return cfg.get(name, default)
  return getattr(cfg, name, default)


def prompt_mask(task: tasks_base.Task, prompts: jax.Array) -> jax.Array:
  """[P, Lp] bool: True at real (non-PAD) prompt tokens."""
  return prompts != task.vocab.pad_id


def last_token_rewards(seq_rewards: jax.Array, mask: jax.Array) -> jax.Array:
  """Places a sequence reward on the last valid token.

  Args:
    seq_rewards: [B] float32 reward per response.
    mask: [B, N] bool response mask (a prefix of True values, then False).

  Returns:
    [B, N] float32, `seq_rewards[b]` at the last True position of row b, 0
    elsewhere (an all-False row gets no reward).
  """
  if mask.ndim != 2 or seq_rewards.shape != mask.shape[:1]:
    raise ValueError(
      f'`seq_rewards` must be [B] and `mask` [B, N]; got {seq_rewards.shape}, {mask.shape}.'
    )
  n = mask.shape[1]
  pos = jnp.arange(n, dtype=jnp.int32)[None, :]
  last = jnp.max(jnp.where(mask, pos, -1), axis=1, keepdims=True)
  return jnp.where(mask & (pos == last), seq_rewards.astype(jnp.float32)[:, None], 0.0)


def sequence_rewards(task, kind: str, responses, mask, batch) -> jax.Array:
  """Token-level rewards [B, N] of kind 'outcome' | 'exact_match' | 'process'.

  'outcome' / 'exact_match': the task's verifier score on the last valid token;
  'process': the task's per-step correctness on the token closing each step
  (`Task.parse_steps`). `batch` holds the per-row arrays (already repeated G times).
  """
  if kind == 'outcome':
    return last_token_rewards(task.outcome(responses, mask, batch), mask)
  if kind == 'exact_match':
    return last_token_rewards(task.exact_match(responses, mask, batch), mask)
  if kind == 'process':
    step_ids = task.parse_steps(responses, mask).step_ids
    correct = task.step_correct(responses, mask, batch)
    closers = ops.step_closers(step_ids, correct.shape[-1], mask=mask)
    return jnp.where(closers, ops.to_tokens(correct, step_ids), 0.0)
  raise ValueError(f'Unknown reward {kind!r}; choose from {list(REWARDS)}.')


def reward_positions(task, kind: str, responses, mask, batch) -> jax.Array:
  """[B, N] bool: the tokens that can carry a reward.

  'process': the token closing each step; otherwise the last valid token.
  """
  del batch
  if kind == 'process':
    steps = task.parse_steps(responses, mask)
    return ops.step_closers(steps.step_ids, steps.kinds.shape[-1], mask=mask)
  n = mask.shape[-1]
  pos = jnp.arange(n, dtype=jnp.int32)
  last = jnp.max(jnp.where(mask, pos[None, :], -1), axis=-1, keepdims=True)
  return mask & (pos[None, :] == last)


class RolloutContext:
  """What a provider may read, computed lazily and at most once per rollout.

  Attributes:
    task: the task; `batch`: per-row arrays (repeated G times);
    responses [B, N] int32, mask [B, N] bool, rewards [B, N] float32;
    log_probs [B, N] float32 (old policy, 0 where masked); ref_log_probs [B, N]
    float32 (reference policy; None unless the rollout uses it); values [B, N] or
    None (value head); response_logits [B, N, V] float32 (divided by the
    temperature); group_size G (rows p*G .. p*G+G-1 answer prompt p); key (a PRNG
    key of this rollout, independent of the sampling key, e.g. for a noisy reward
    model); steps (`Task.parse_steps`, lazily).
  """

  def __init__(self, **kwargs):
    self.__dict__.update(kwargs)
    self._steps = None

  @property
  def steps(self):
    if self._steps is None:
      self._steps = self.task.parse_steps(self.responses, self.mask)
    return self._steps


def _provide_values(ctx):
  if ctx.values is None:
    raise ValueError('The estimator requires `values`: use a policy with a value head.')
  return dict(values=jnp.where(ctx.mask, ctx.values, 0.0))


def _provide_groups(ctx):
  b = ctx.mask.shape[0]
  g = ctx.group_size
  return dict(
    group_ids=jnp.arange(b, dtype=jnp.int32) // g, num_groups=b // g, groups_contiguous=True
  )


def _provide_step_rewards(ctx):
  step_ids = ctx.steps.step_ids
  return dict(step_rewards=ops.to_steps(ctx.rewards, step_ids, step_ids.shape[-1], mask=ctx.mask))


def _provide_ref_log_probs(ctx):
  if ctx.ref_log_probs is None:
    raise ValueError('The estimator requires `ref_log_probs`: the rollout must use the reference.')
  return dict(ref_log_probs=ctx.ref_log_probs)


def _provide_anchors(ctx):
  anchors = ctx.task.anchors(ctx.responses, ctx.mask, ctx.batch, ctx.steps)
  if anchors is None:
    raise ValueError('The estimator requires `anchor_ids`, which this task does not define.')
  return dict(anchor_ids=anchors)


# Trajectory field -> provider(ctx) -> dict of Trajectory fields. `rewards` and `mask`
# are always filled. Pass `providers={name: fn}` to the learner to add or override one.
PROVIDERS: Dict[str, Callable] = {
  'values': _provide_values,
  'bootstrap_value': lambda ctx: dict(bootstrap_value=jnp.zeros(ctx.mask.shape[:1], jnp.float32)),
  'log_probs': lambda ctx: dict(log_probs=ctx.log_probs),
  'entropies': lambda ctx: dict(
    entropies=jnp.where(ctx.mask, losses.entropy_from_logits(ctx.response_logits), 0.0)
  ),
  'group_ids': _provide_groups,
  'step_ids': lambda ctx: dict(step_ids=ctx.steps.step_ids),
  'step_rewards': _provide_step_rewards,
  'anchor_ids': _provide_anchors,
  'ref_log_probs': _provide_ref_log_probs,  # goes to `Trajectory.extras`
}


def check_providers(estimator, providers=None, *, value_head: Optional[bool] = None) -> dict:
  """The providers for `estimator.requires`; one ValueError lists every field nobody provides."""
  table = dict(PROVIDERS, **(providers or {}))
  need = [f for f in estimator.requires if f not in ('rewards', 'mask')]
  lacking = [f for f in need if f not in table]
  if lacking:
    raise ValueError(
      f'Estimator {estimator.name!r} requires Trajectory field(s) {lacking} that no provider '
      f'fills; pass providers={{name: fn(ctx) -> dict}} (built-in: {sorted(PROVIDERS)}).'
    )
  if value_head is False and 'values' in need and 'values' not in (providers or {}):
    raise ValueError(
      f'Estimator {estimator.name!r} requires `values`: use a policy with a value head.'
    )
  return {f: table[f] for f in need}


def build_trajectory(ctx: RolloutContext, fields: dict) -> types.Trajectory:
  """Calls each provider of `fields` (name -> provider) on `ctx`; returns the Trajectory."""
  kwargs = {}
  for provide in fields.values():
    kwargs.update(provide(ctx))
  return types.Trajectory(rewards=ctx.rewards, mask=ctx.mask).replace(**kwargs)


def _forward(policy, params, tokens, valid, prompt_len, temperature):
  out = policy.apply(params, tokens, valid)
  logits = out.logits.astype(jnp.float32)
  log_probs = transformer.response_log_probs(logits, tokens, prompt_len, temperature=temperature)
  values = None if out.values is None else transformer.response_values(out.values, prompt_len)
  return logits, log_probs, values


class RolloutData(NamedTuple):
  """Phase 1 of an iteration: the sampled batch and the old policy's view of it.

  Everything a provider may read (`RolloutContext`) and everything the update needs,
  as arrays, so the learner can stop after sampling, let the host add Trajectory fields
  (e.g. Monte-Carlo values from extra completions, which need host-side de-duplication)
  and then finish the iteration on this fixed batch (`make_rl_phases`).

  Attributes:
    batch: dict of per-row arrays (the task's batch keys, repeated G times) [B, ...].
    tokens, valid: [B, L] prompt followed by the response, and its mask.
    responses: [B, N] int32; mask: [B, N] bool; rewards: [B, N] float32.
    log_probs: [B, N] old-policy log-probs (0 where masked).
    ref_log_probs: [B, N] reference log-probs (zeros when the KL term is off).
    values: [B, N] float32 values (policy value head or separate critic) or None.
    response_logits: [B, N, V] float32 old-policy logits / temperature.
    lengths: [B] int32 response lengths.
    key: a PRNG key of this rollout for providers (`RolloutContext.key`), folded from
      the sampling key so sampling is unchanged.
    rollout_log_probs: [B, N] float32 the sampler's own log-probs of its tokens (0 where
      masked; `sampling.Samples.log_probs`), or None.
  """

  batch: Any
  tokens: jax.Array
  valid: jax.Array
  responses: jax.Array
  mask: jax.Array
  rewards: jax.Array
  log_probs: jax.Array
  ref_log_probs: jax.Array
  values: Optional[jax.Array]
  response_logits: jax.Array
  lengths: jax.Array
  key: jax.Array
  rollout_log_probs: Optional[jax.Array] = None


# Trajectory fields the learner itself reads when present (providers for them are called
# whenever given, required by the estimator or not):
#   loss_mask [B, N] bool: ANDed into the response mask of the policy (and value) loss,
#   e.g. SPO's probability mask (arXiv 2505.23564, Sec. 3.3).
LEARNER_FIELDS = ('loss_mask',)


def make_rollout_fn(
  policy: transformer.Policy,
  task: tasks_base.Task,
  estimator,
  *,
  group_size: int,
  temperature: float = 1.0,
  reward: str = 'outcome',
  use_ref: bool = False,
  max_new_tokens: Optional[int] = None,
  providers: Optional[Dict[str, Callable]] = None,
  host_fields: tuple = (),
  critic=None,
  metrics_fn: Optional[Callable] = None,
) -> Callable:
  """Returns rollout(params, ref_params, batch, key, hparams=None) -> (Rollout, metrics).

  Args:
    policy: the language policy (with a value head if the estimator requires `values`
      and no separate `critic` is given).
    task: a `jaxca.tasks.Task` (vocab, verifiers, step parsing).
    estimator: a `jaxca.estimators.Estimator`; the rollout fills exactly the
      Trajectory fields in `estimator.requires`.
    group_size: G, samples per prompt.
    temperature: sampling temperature (also used for every log-prob).
    reward: one of REWARDS.
    use_ref: compute reference log-probs with `ref_params` (for the KL term);
      also on when the estimator requires `ref_log_probs` (KL in the reward).
    max_new_tokens: N; default `task.response_len`.
    providers: extra or overriding providers, {field: fn(RolloutContext) -> dict
      of Trajectory fields}; a field outside `types.FIELDS` goes to `extras`. A
      provider of a `LEARNER_FIELDS` entry (`loss_mask`) is always called.
    host_fields: Trajectory fields supplied from outside the jitted rollout (see
      `make_rl_phases`); no provider is needed for them.
    critic: optional separate critic (`networks.critic.make_critic`); its values
      replace the policy's value head (pass `critic_params` to the functions).
    metrics_fn: optional `fn(ctx, traj, targets) -> dict` of extra scalar
      metrics (traced), merged into the rollout metrics.

  The returned function takes `batch` = dict of the task's `batch_keys` ([P, ...]
  per prompt), a PRNG key and optional estimator hyper-parameters (a pytree like
  `estimator.hparams`, traced, so sweeping them does not recompile); with a critic,
  also `critic_params=`; with `host_fields`, `fields=` (a dict of those arrays).

  Raises:
    ValueError: (at build time) a required field has no provider, or the
      estimator compares rows within groups and `group_size` < 2.
  """
  collect, finish = _make_rollout_parts(
    policy,
    task,
    estimator,
    group_size=group_size,
    temperature=temperature,
    reward=reward,
    use_ref=use_ref,
    max_new_tokens=max_new_tokens,
    providers=providers,
    host_fields=host_fields,
    critic=critic,
    metrics_fn=metrics_fn,
  )

  def rollout(params, ref_params, batch, key, hparams=None, critic_params=None, fields=None):
    data = collect(params, ref_params, batch, key, critic_params)
    return finish(data, fields or {}, hparams)

  return rollout


def _make_rollout_parts(
  policy,
  task,
  estimator,
  *,
  group_size,
  temperature,
  reward,
  use_ref,
  max_new_tokens,
  providers,
  host_fields,
  critic,
  metrics_fn=None,
  reward_kl=None,
  reward_shaping=None,
):
  """(collect(params, ref_params, batch, key, critic_params) -> RolloutData,
  finish(data, fields, hparams, kl_coef=None) -> (Rollout, metrics)).

  `reward_kl` = (coef, estimator) puts the KL to the reference in the token rewards
  (`kl.penalize_rewards`) before the estimator runs; `reward_shaping` (`REWARD_SHAPING_KEYS`)
  adds DAPO's overlong punishment / filtering."""
  if reward not in REWARDS:
    raise ValueError(f'Unknown reward {reward!r}; choose from {list(REWARDS)}.')
  host_fields = tuple(host_fields)
  table = {f: (lambda ctx: {}) for f in host_fields}
  table.update(providers or {})
  has_values = bool(policy.module.value_head) or critic is not None
  fields = check_providers(estimator, table, value_head=has_values)
  fields = {f: p for f, p in fields.items() if f not in host_fields}
  for name in LEARNER_FIELDS:
    if name in (providers or {}) and name not in host_fields:
      fields[name] = providers[name]
  use_ref = use_ref or 'ref_log_probs' in fields or reward_kl is not None
  if 'group_ids' in fields and group_size < 2:
    raise ValueError(
      f'Estimator {estimator.name!r} compares rows within groups: needs group_size >= 2; '
      f'got {group_size}.'
    )
  num_new = task.response_len if max_new_tokens is None else int(max_new_tokens)
  voc = task.vocab
  buffer_len, penalty_factor, overlong_filter = reward_shaping_options(reward_shaping, num_new)

  def collect(params, ref_params, batch, key, critic_params=None):
    prompts = batch['prompts']
    lp = prompts.shape[1]
    samples = sampling.sample(
      policy,
      params,
      key,
      prompts,
      prompt_mask(task, prompts),
      num_samples=group_size,
      max_new_tokens=num_new,
      temperature=temperature,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
    )
    rep = {k: jnp.repeat(v, group_size, axis=0) for k, v in batch.items()}
    mask = samples.mask
    rewards = sequence_rewards(task, reward, samples.responses, mask, rep)
    logits, old_log_probs, values = _forward(
      policy, params, samples.tokens, samples.valid, lp, temperature
    )
    if critic is not None:
      if critic_params is None:
        raise ValueError('a rollout with a separate critic needs `critic_params`.')
      values = transformer.response_values(
        critic.apply(critic_params, samples.tokens, samples.valid), lp
      )
    old_log_probs = jnp.where(mask, old_log_probs, 0.0)
    if use_ref:
      _, ref_log_probs, _ = _forward(
        policy, ref_params, samples.tokens, samples.valid, lp, temperature
      )
      ref_log_probs = jnp.where(mask, ref_log_probs, 0.0)
    else:
      ref_log_probs = jnp.zeros_like(old_log_probs)
    return RolloutData(
      batch=rep,
      tokens=samples.tokens,
      valid=samples.valid,
      responses=samples.responses,
      mask=mask,
      rewards=rewards,
      log_probs=old_log_probs,
      ref_log_probs=ref_log_probs,
      values=values,
      response_logits=logits[:, lp - 1 : -1] / temperature,
      lengths=samples.lengths,
      key=jax.random.fold_in(key, 1),  # for providers; the sampling key stays as it was
      rollout_log_probs=jnp.where(mask, samples.log_probs, 0.0),
    )

  def finish(data, extra, hparams=None, kl_coef=None):
    missing = [f for f in host_fields if f not in extra]
    if missing:
      raise ValueError(f'host fields {missing} were not supplied to the update.')
    mask = data.mask
    rewards = data.rewards
    kl_metrics = {}
    if reward_kl is not None:
      coef, kl_estimator = reward_kl
      coef = coef if kl_coef is None else kl_coef  # a traced (adaptive) coefficient
      rewards = kl_lib.penalize_rewards(
        rewards, data.log_probs, data.ref_log_probs, mask, coef, estimator=kl_estimator
      )
      kl_metrics['kl_reward'] = ops.masked_mean(
        kl_lib.estimate(data.log_probs, data.ref_log_probs, mask, kl_estimator), mask
      )
    if buffer_len:
      penalty = dapo.overlong_penalty(data.lengths, num_new, buffer_len, penalty_factor)
      rewards = rewards + last_token_rewards(penalty, mask)
      kl_metrics['overlong_penalty'] = jnp.mean(penalty)
    ctx = RolloutContext(
      task=task,
      batch=data.batch,
      responses=data.responses,
      mask=mask,
      rewards=rewards,
      log_probs=data.log_probs,
      ref_log_probs=data.ref_log_probs if use_ref else None,
      values=data.values,
      response_logits=data.response_logits,
      group_size=group_size,
      key=data.key,
    )
    traj = build_trajectory(ctx, fields)
    if extra:
      traj = traj.replace(**{k: jnp.asarray(v) for k, v in extra.items()})
    targets = estimator(traj, hparams)
    advantages = jax.lax.stop_gradient(jnp.where(mask, targets.advantages, 0.0))
    returns = jax.lax.stop_gradient(jnp.where(mask, targets.returns, 0.0))
    values = data.values
    old_values = jnp.zeros_like(data.log_probs) if values is None else jnp.where(mask, values, 0.0)
    seq_reward = jnp.sum(data.rewards, axis=1)
    correct = task.outcome(data.responses, mask, data.batch)
    metrics = dict(
      reward=jnp.mean(seq_reward),
      accuracy=jnp.mean(correct),
      response_length=jnp.mean(data.lengths.astype(jnp.float32)),
      adv_abs_mean=ops.masked_mean(jnp.abs(advantages), mask),
      frac_zero_adv_groups=_frac_constant_groups(correct, group_size),
      **kl_metrics,
    )
    if metrics_fn is not None:
      metrics.update(metrics_fn(ctx, traj, targets))
    loss_mask = mask
    if traj.get('loss_mask') is not None:
      loss_mask = mask & jnp.asarray(traj.get('loss_mask'), jnp.bool_)
      metrics['loss_token_frac'] = jnp.sum(loss_mask) / jnp.maximum(jnp.sum(mask), 1)
    if overlong_filter:
      cut = dapo.truncated(data.responses, mask, voc.eos_id)
      loss_mask = loss_mask & ~cut[:, None]
      metrics['frac_truncated'] = jnp.mean(cut.astype(jnp.float32))
    batch_out = Rollout(
      tokens=data.tokens,
      valid=data.valid,
      mask=loss_mask,
      old_log_probs=jax.lax.stop_gradient(data.log_probs),
      ref_log_probs=jax.lax.stop_gradient(data.ref_log_probs),
      old_values=jax.lax.stop_gradient(old_values),
      advantages=advantages,
      returns=returns,
      rollout_log_probs=None
      if data.rollout_log_probs is None
      else jax.lax.stop_gradient(data.rollout_log_probs),
    )
    return batch_out, metrics

  return collect, finish


# Keys of the learner's `reward_shaping` option (DAPO, arXiv 2503.14476, Sec. 3.4).
REWARD_SHAPING_KEYS = ('overlong_buffer', 'overlong_penalty', 'overlong_filter')


def reward_shaping_options(cfg, max_len: int):
  """(buffer_len or 0, penalty_factor, overlong_filter) from a `reward_shaping` dict.

  `max_len` is the response length N (the generation cap). Raises ValueError naming the key
  and the allowed values."""
  if not cfg:
    return 0, 1.0, False
  unknown = sorted(set(cfg.keys()) - set(REWARD_SHAPING_KEYS))
  if unknown:
    raise ValueError(
      f'Unknown reward_shaping option(s) {unknown}; choose from {list(REWARD_SHAPING_KEYS)}.'
    )
  buffer_len = int(_get(cfg, 'overlong_buffer', 0) or 0)
  if not 0 <= buffer_len <= max_len:
    raise ValueError(
      f'reward_shaping.overlong_buffer must be in [0, {max_len}] (the response length); '
      f'got {buffer_len}.'
    )
  factor = _get(cfg, 'overlong_penalty', None)
  factor = 1.0 if factor is None else float(factor)
  if factor < 0:
    raise ValueError(f'reward_shaping.overlong_penalty must be >= 0; got {factor}.')
  return buffer_len, factor, bool(_get(cfg, 'overlong_filter', False))


def _frac_constant_groups(correct, group_size):
  """Share of prompts whose G samples all got the same reward (no group signal)."""
  g = correct.reshape(-1, group_size)
  return jnp.mean((jnp.max(g, axis=1) == jnp.min(g, axis=1)).astype(jnp.float32))


# Keys of a learner's `loss` config section (all optional; see `loss_options`).
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
    kl_estimator: 'k1' | 'k2' | 'k3' | 'abs' (`kl.estimate`; 'k3' is `losses.kl_k3`).
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
  """Reads and validates a `loss` config section (ConfigDict, dict or None).

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
  if loss_cfg is not None and hasattr(loss_cfg, 'keys'):
    unknown = sorted(set(loss_cfg.keys()) - set(LOSS_KEYS))
    if unknown:
      raise ValueError(f'Unknown loss option(s) {unknown}; choose from {list(LOSS_KEYS)}.')
  name = objectives.check_name(_get(loss_cfg, 'objective', None) or 'ppo_clip')
  agg_mode = losses.check_agg_mode(_get(loss_cfg, 'agg_mode', None) or 'token_mean')
  policy_term = objectives.from_config(loss_cfg)  # validates names and hyper-parameters
  plain = (
    name == 'ppo_clip'
    and not _get(loss_cfg, 'dual_clip_c', None)
    and not _get(loss_cfg, 'objective_kwargs', None)
    and not _get(loss_cfg, 'rollout_correction', None)
    and _get(loss_cfg, 'norm_length', None) is None
  )
  estimator = kl_lib.check_estimator(_get(loss_cfg, 'kl_estimator', None) or 'k3')
  ctrl = _get(loss_cfg, 'kl_ctrl', None) or 'fixed'
  if ctrl not in ('fixed', 'adaptive'):
    raise ValueError(
      f"loss.kl_ctrl={ctrl!r} is not supported; choose None, 'fixed' or 'adaptive' (the adaptive "
      "controller's target and horizon are the loss keys 'kl_target' and 'kl_horizon')."
    )
  kl_coef = float(_get(loss_cfg, 'kl_coef', 0.0) or 0.0)
  kl_target = kl_horizon = None
  if ctrl == 'adaptive':
    kl_target, kl_horizon = _get(loss_cfg, 'kl_target', None), _get(loss_cfg, 'kl_horizon', None)
    if kl_coef <= 0:
      raise ValueError(
        f"loss.kl_ctrl='adaptive' starts from loss.kl_coef, which must be > 0; got {kl_coef}."
      )
    for key, v in (('kl_target', kl_target), ('kl_horizon', kl_horizon)):
      if v is None or not float(v) > 0:
        raise ValueError(f"loss.kl_ctrl='adaptive' needs loss.{key} > 0; got {v!r}.")
    kl_target, kl_horizon = float(kl_target), float(kl_horizon)
  kl_in_reward = _get(loss_cfg, 'kl_in_reward', False)
  if kl_in_reward not in (None, False, True):
    raise ValueError(f'loss.kl_in_reward must be True or False; got {kl_in_reward!r}.')
  return LossOptions(
    objective=None if plain else policy_term,
    objective_name=name,
    clip_eps=float(_get(loss_cfg, 'clip_eps', 0.2)),
    clip_eps_high=_get(loss_cfg, 'clip_eps_high', None) or None,
    agg_mode=agg_mode,
    kl_coef=kl_coef,
    kl_estimator=estimator,
    kl_in_reward=bool(kl_in_reward),
    ent_coef=float(_get(loss_cfg, 'ent_coef', 0.0) or 0.0),
    vf_coef=float(_get(loss_cfg, 'vf_coef', 0.0) or 0.0),
    vf_clip=_get(loss_cfg, 'vf_clip', None) or None,
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

  `losses.ppo_objective` (shared with the gymnax PPO): pg(agg_mode) + vf_coef * value_loss
  - ent_coef * agg(H) + kl_coef * agg(KL(pi || pi_ref)), with pg PPO-clip (`clip_eps`,
  `clip_eps_high`) or `objective` (from `objectives.make` / `from_config`; it receives the
  rollout's `rollout_log_probs` for its rollout correction and `key`, e.g. for clip-cov), and
  the KL estimated per token by `kl_estimator` (`kl.estimate`; 'k3' = `losses.kl_k3`).
  """
  losses.check_agg_mode(agg_mode)
  kl_estimator = kl_lib.check_estimator(kl_estimator)
  kl_fn = None
  if kl_estimator != 'k3':
    kl_fn = functools.partial(kl_lib.estimate, estimator=kl_estimator)

  def loss_fn(params, rb: Rollout, key=None):
    logits, log_probs, values = _forward(
      policy, params, rb.tokens, rb.valid, prompt_len, temperature
    )
    mask = rb.mask
    if vf_coef and values is None:
      raise ValueError('vf_coef > 0 needs a policy with a value head.')
    resp_logits = logits[:, prompt_len - 1 : -1] / temperature
    policy_loss = None
    if objective is not None:
      policy_loss = functools.partial(objective, rollout_log_probs=rb.rollout_log_probs, key=key)
    return losses.ppo_objective(
      jnp.where(mask, log_probs, 0.0),
      rb.old_log_probs,
      rb.advantages,
      mask,
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      agg_mode=agg_mode,
      entropy=losses.entropy_from_logits(resp_logits),
      ent_coef=ent_coef,
      values=None if values is None else jnp.where(mask, values, 0.0),
      returns=rb.returns,
      old_values=rb.old_values,
      vf_coef=vf_coef,
      vf_clip=vf_clip,
      ref_log_probs=rb.ref_log_probs,
      kl_coef=kl_coef,
      policy_loss=policy_loss,
      kl_fn=kl_fn,
    )

  return loss_fn


def make_init(
  policy: transformer.Policy, tx: optax.GradientTransformation, *, with_ref: bool = False
) -> Callable:
  """Returns init(key) -> state dict(step, params, opt_state[, ref_params])."""

  def init(key):
    params = policy.init(key)
    return init_from_params(params, tx, with_ref=with_ref)

  return init


def init_from_params(
  params,
  tx: optax.GradientTransformation,
  *,
  with_ref: bool = False,
  critic_params=None,
  critic_tx: Optional[optax.GradientTransformation] = None,
  kl_coef: Optional[float] = None,
):
  """A fresh state (step 0, fresh optimizer) around `params` (e.g. a warm start).

  With `critic_params` (a separate critic, see `make_rl_phases`) the state also holds
  them and `critic_opt_state = critic_tx.init(critic_params)`. With `kl_coef` it holds the
  adaptive KL coefficient `kl_coef` ([] float32; `loss.kl_ctrl='adaptive'`).
  """
  state = dict(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))
  if kl_coef is not None:
    state['kl_coef'] = jnp.asarray(kl_coef, jnp.float32)
  if with_ref:
    state['ref_params'] = jax.tree.map(jnp.copy, params)
  if critic_params is not None:
    if critic_tx is None:
      raise ValueError('`critic_params` need their optimiser `critic_tx`.')
    state['critic_params'] = critic_params
    state['critic_opt_state'] = critic_tx.init(critic_params)
  return state


def merge_params(fresh, loaded):
  """`loaded` params where they exist, `fresh` ones elsewhere (e.g. a new value head).

  Args:
    fresh: nested dict of arrays (a freshly initialised policy).
    loaded: nested dict of arrays (e.g. warm-start params without a value head).

  Raises:
    ValueError: a shared leaf has a different shape, or `loaded` has extra keys.
  """
  extra = set(loaded) - set(fresh)
  if extra:
    raise ValueError(f'merge_params: loaded params have unknown entries {sorted(extra)}.')
  out = {}
  for k, v in fresh.items():
    if k not in loaded:
      out[k] = v
    elif isinstance(v, dict):
      out[k] = merge_params(v, loaded[k])
    else:
      if tuple(v.shape) != tuple(loaded[k].shape):
        raise ValueError(f'merge_params: {k!r} has shape {loaded[k].shape}, expected {v.shape}.')
      out[k] = jnp.asarray(loaded[k], v.dtype)
  return out


def _params_finite(params):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]
  return jnp.all(jnp.stack(leaves)).astype(jnp.float32)


class RLPhases(NamedTuple):
  """One RL iteration in two jittable phases, with a host step possible in between.

  Attributes:
    collect: (state, batch, key) -> RolloutData: sample G responses per prompt and
      score them with the old policy (and critic).
    update: (state, data, fields, key, hparams=None) -> (state, metrics): providers,
      estimator and the PPO epochs on the fixed batch `data`; `fields` is a dict of
      the `host_fields` arrays (e.g. `mc_values` [B, S]) computed between the phases.
  """

  collect: Callable
  update: Callable


def make_rl_phases(
  policy: transformer.Policy,
  task: tasks_base.Task,
  estimator,
  tx: optax.GradientTransformation,
  *,
  group_size: int,
  num_epochs: int = 1,
  num_minibatches: int = 1,
  temperature: float = 1.0,
  reward: str = 'outcome',
  loss_cfg: Any = None,
  shuffle: bool = True,
  providers: Optional[Dict[str, Callable]] = None,
  host_fields: tuple = (),
  critic=None,
  critic_tx: Optional[optax.GradientTransformation] = None,
  metrics_fn: Optional[Callable] = None,
  reward_shaping: Any = None,
) -> RLPhases:
  """An RL iteration split at the point where host-side providers can run.

  Some Trajectory fields cannot be computed inside one jitted iteration: Monte-Carlo
  values (VinePPO, arXiv 2410.01679; SPO, arXiv 2505.23564) de-duplicate the states of
  the batch on the host and sample a data-dependent number of completions. The caller
  jits `collect` and `update` separately and computes `host_fields` in between from the
  `RolloutData` (with the current parameters and its own key); `make_rl_update` is the
  single-jit composition with no host fields. Same arguments as `make_rl_update`, plus:

  Args:
    host_fields: names of the Trajectory fields the caller supplies to `update`.
    critic: optional separate critic (`networks.critic.make_critic`, e.g. initialised
      from the policy trunk by `critic_params_from_policy`): its values feed the
      estimator, and it is trained on the clipped value loss (`loss_cfg.vf_coef`,
      `loss_cfg.vf_clip`) by its own optimiser `critic_tx` over the same minibatches.
      The state then holds `critic_params` and `critic_opt_state` (`init_from_params`).
    critic_tx: the critic's optimiser (required with `critic`).
    metrics_fn: extra rollout metrics (see `make_rollout_fn`). An estimator that
      requires `ref_log_probs` needs a state with `ref_params`
      (`init_from_params(..., with_ref=True)`).
    reward_shaping: None or a dict (`REWARD_SHAPING_KEYS`, DAPO arXiv 2503.14476 Sec. 3.4):
      `overlong_buffer` L_cache > 0 adds `dapo.overlong_penalty(length, N, L_cache,
      overlong_penalty)` (default factor 1.0) to each sequence reward, on its last token, before
      the estimator; `overlong_filter=True` masks responses without EOS out of the loss.
      Metrics `overlong_penalty` (mean) and `frac_truncated`.

  With `loss_cfg.kl_ctrl='adaptive'` the KL coefficient is `state['kl_coef']`
  (`init_from_params(kl_coef=)`), traced into the loss (or the reward penalty); after the
  epochs it is updated once by `kl.adaptive_controller` (Ziegler et al., arXiv 1909.08593,
  Eq. 2) from the batch's masked-mean KL of the sampling policy to the reference
  (`kl_estimator`), with n_steps = the batch's response count. Metrics `kl_coef` (the
  coefficient this iteration used) and `kl_measured`.
  """
  opts = loss_options(loss_cfg)
  kl_coef = opts.kl_coef
  has_critic = 'values' in estimator.requires
  vf_coef = opts.vf_coef if has_critic else 0.0
  vf_clip = opts.vf_clip
  agg_mode = opts.agg_mode
  reward_kl = (kl_coef, opts.kl_estimator) if (opts.kl_in_reward and kl_coef > 0) else None
  if critic is not None and critic_tx is None:
    raise ValueError('a separate critic needs its optimiser `critic_tx`.')
  collect, finish = _make_rollout_parts(
    policy,
    task,
    estimator,
    group_size=group_size,
    temperature=temperature,
    reward=reward,
    use_ref=kl_coef > 0,
    max_new_tokens=None,
    providers=providers,
    host_fields=host_fields,
    critic=critic,
    metrics_fn=metrics_fn,
    reward_kl=reward_kl,
    reward_shaping=reward_shaping,
  )
  keyed = opts.objective_name == 'clip_cov'  # draws its tokens: one key per minibatch

  def make_grad_step(coef):
    loss_fn = make_ppo_loss(
      policy,
      prompt_len=task.prompt_len,
      temperature=temperature,
      clip_eps=opts.clip_eps,
      clip_eps_high=opts.clip_eps_high,
      agg_mode=agg_mode,
      kl_coef=0.0 if reward_kl is not None else coef,
      ent_coef=opts.ent_coef,
      vf_coef=0.0 if critic is not None else vf_coef,
      vf_clip=vf_clip,
      objective=opts.objective,
      kl_estimator=opts.kl_estimator,
    )
    if not keyed:
      return train_lib.make_gradient_step(loss_fn, tx)
    inner_step = train_lib.make_gradient_step(lambda p, mb: loss_fn(p, mb[0], key=mb[1]), tx)

    def grad_step(carry, rb):
      params, opt_state, step_key = carry
      step_key, sub = jax.random.split(step_key)
      (params, opt_state), m = inner_step((params, opt_state), (rb, sub))
      return (params, opt_state, step_key), m

    return grad_step

  adaptive = opts.kl_ctrl == 'adaptive'
  if adaptive:  # the coefficient is traced from the state: the step is built per update
    controller = kl_lib.adaptive_controller(kl_coef, opts.kl_target, opts.kl_horizon)
  else:
    grad_step = make_grad_step(kl_coef)
  critic_step = None
  if critic is not None:
    lp = task.prompt_len

    def critic_loss(cparams, rb: Rollout):
      values = transformer.response_values(critic.apply(cparams, rb.tokens, rb.valid), lp)
      v = losses.value_loss(
        jnp.where(rb.mask, values, 0.0),
        rb.returns,
        rb.mask,
        old_values=rb.old_values,
        clip_eps=vf_clip,
        agg_mode=agg_mode,
      )
      return vf_coef * v, dict(value_loss=v)

    critic_step = train_lib.make_gradient_step(critic_loss, critic_tx)

  def collect_fn(state, batch, key):
    return collect(state['params'], state.get('ref_params'), batch, key, state.get('critic_params'))

  def update(state, data, fields, key, hparams=None):
    coef, step_fn = None, None
    if adaptive:
      if 'kl_coef' not in state:
        raise ValueError(
          "loss.kl_ctrl='adaptive' keeps the KL coefficient in the learner state: build it with "
          '`init_from_params(..., kl_coef=loss.kl_coef)`.'
        )
      coef = state['kl_coef']
      step_fn = make_grad_step(coef)
    else:
      step_fn = grad_step
    rb, roll_metrics = finish(data, fields, hparams, kl_coef=coef)
    carry = (state['params'], state['opt_state'])
    if keyed:  # the loss's key stream, independent of the permutation keys
      carry = carry + (jax.random.fold_in(key, 2),)
    carry, step_metrics = train_lib.minibatch_epochs(
      step_fn,
      carry,
      rb,
      key,
      num_epochs=num_epochs,
      num_minibatches=num_minibatches,
      shuffle=shuffle,
    )
    params, opt_state = carry[:2]
    new_state = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state)
    metrics = dict(roll_metrics)
    metrics.update({k: jnp.mean(v) for k, v in step_metrics.items()})
    if critic_step is not None:  # same minibatches (same key), its own optimiser
      (cparams, copt), cmetrics = train_lib.minibatch_epochs(
        critic_step,
        (state['critic_params'], state['critic_opt_state']),
        rb,
        key,
        num_epochs=num_epochs,
        num_minibatches=num_minibatches,
        shuffle=shuffle,
      )
      new_state.update(critic_params=cparams, critic_opt_state=copt)
      metrics.update({f'critic_{k}': jnp.mean(v) for k, v in cmetrics.items()})
    if adaptive:  # Ziegler et al. Eq. 2, once per iteration, from the sampling policy's KL
      measured = ops.masked_mean(
        kl_lib.estimate(data.log_probs, data.ref_log_probs, data.mask, opts.kl_estimator),
        data.mask,
      )
      n_steps = data.mask.shape[0]  # responses in the batch, as verl passes the batch size
      new_state['kl_coef'] = controller.update(kl_lib.ControllerState(coef), measured, n_steps).coef
      metrics.update(kl_coef=coef, kl_measured=measured)
    metrics['params_finite'] = _params_finite(params)
    return new_state, metrics

  return RLPhases(collect_fn, update)


def _take_rows(data: RolloutData, rows) -> RolloutData:
  """Host (NumPy) copy of `data` restricted to `rows` (the key is kept as is)."""
  out = jax.tree.map(lambda x: np.asarray(x)[rows], data._replace(key=None))
  return out._replace(key=data.key)


def collect_dynamic(
  collect: Callable,
  state,
  next_batch: Callable[[], Any],
  key: jax.Array,
  *,
  group_size: int,
  max_gen_batches: int,
):
  """DAPO dynamic sampling (arXiv 2503.14476, Sec. 3.2, Eq. 11), on the host.

  Calls `collect` on fresh prompt batches until the kept groups (`dapo.informative_groups`
  of the summed token rewards: not all G rewards equal) number P, the prompts of one batch,
  or `max_gen_batches` batches have been generated; keeps the first P informative groups in
  order. The result has exactly P*G rows, so the jitted `update` keeps its shapes. If fewer
  than P informative groups were found, the missing groups are padding rows: copies of
  generated rows with an all-False response mask and zero rewards, log-probs and values,
  which add nothing to any loss term or normaliser (a short batch is a smaller batch, not a
  reweighted one; reusing kept groups instead would count them twice). verl instead raises
  after `max_num_gen_batches`.

  Args:
    collect: `RLPhases.collect` (jitted by the caller): (state, batch, key) -> RolloutData.
    state: the learner state.
    next_batch: () -> dict of the task's per-prompt arrays [P, ...]; called once per
      generation batch.
    key: generation batch i samples with `jax.random.fold_in(key, i)`.
    group_size: G.
    max_gen_batches: at most this many `collect` calls (>= 1).

  Returns:
    (RolloutData with P*G host rows, metrics: `gen_batches`, `frac_groups_kept` (kept /
    generated groups), `groups_short` (P minus the informative groups found, >= 0),
    `gen_reward` (mean sequence reward over every generated response)).
  """
  if int(max_gen_batches) < 1:
    raise ValueError(f'max_gen_batches must be >= 1; got {max_gen_batches}.')
  pieces, kept, generated, rewards_seen = [], 0, 0, []
  first, target = None, None
  for i in range(int(max_gen_batches)):
    data = collect(state, next_batch(), jax.random.fold_in(key, i))
    seq = np.asarray(data.rewards).sum(axis=1)
    keep = np.asarray(dapo.informative_groups(seq, group_size))
    if first is None:
      first, target = data, keep.shape[0]
    rewards_seen.append(seq)
    generated += keep.shape[0]
    kept += int(keep.sum())
    pieces.append(_take_rows(data, np.nonzero(np.repeat(keep, group_size))[0]))
    if kept >= target:
      break
  rows = target * group_size
  out = jax.tree.map(lambda *xs: np.concatenate(xs)[:rows], *[p._replace(key=None) for p in pieces])
  short = max(target - kept, 0)
  if short:
    pad = _take_rows(first, np.arange(short * group_size))._replace(key=None)
    n = pad.mask.shape[1]

    def zero(x):
      return None if x is None else np.zeros_like(x)

    pad = pad._replace(
      valid=np.concatenate([pad.valid[:, :-n], np.zeros_like(pad.mask)], axis=1),
      mask=np.zeros_like(pad.mask),
      rewards=zero(pad.rewards),
      log_probs=zero(pad.log_probs),
      ref_log_probs=zero(pad.ref_log_probs),
      rollout_log_probs=zero(pad.rollout_log_probs),
      values=zero(pad.values),
      lengths=zero(pad.lengths),
    )
    out = jax.tree.map(lambda a, b: np.concatenate([a, b]), out, pad)
  metrics = dict(
    gen_batches=float(len(pieces)),
    frac_groups_kept=kept / generated,
    groups_short=float(short),
    gen_reward=float(np.mean(np.concatenate(rewards_seen))),
  )
  return out._replace(key=first.key), metrics


def make_rl_update(
  policy: transformer.Policy,
  task: tasks_base.Task,
  estimator,
  tx: optax.GradientTransformation,
  *,
  group_size: int,
  num_epochs: int = 1,
  num_minibatches: int = 1,
  temperature: float = 1.0,
  reward: str = 'outcome',
  loss_cfg: Any = None,
  shuffle: bool = True,
  providers: Optional[Dict[str, Callable]] = None,
  critic=None,
  critic_tx: Optional[optax.GradientTransformation] = None,
  metrics_fn: Optional[Callable] = None,
  reward_shaping: Any = None,
) -> Callable:
  """Returns update(state, batch, key, hparams=None) -> (state, metrics): one RL iteration.

  Args:
    policy, task, estimator, tx: the parts (see `make_rollout_fn`).
    group_size: G.
    num_epochs, num_minibatches: PPO passes over the B = P*G rows (static).
    temperature, reward: see `make_rollout_fn`.
    loss_cfg: ConfigDict/dict with clip_eps, clip_eps_high, agg_mode, kl_coef,
      ent_coef, vf_coef, vf_clip (all optional; see `make_ppo_loss`).
    shuffle: permute rows between minibatches.
    providers, metrics_fn: extra Trajectory providers and rollout metrics (see
      `make_rollout_fn`).
    critic, critic_tx: a separate critic and its optimiser (see `make_rl_phases`).
    reward_shaping: DAPO's overlong punishment / filtering (see `make_rl_phases`).

  `hparams` (optional) are the estimator's hyper-parameters as traced arrays.

  `metrics` holds scalars: rollout statistics, the mean over epochs/minibatches
  of the loss terms, `grad_norm`, and `params_finite` (1.0 iff every new
  parameter is finite) so the caller can stop before saving a broken state.
  It is `make_rl_phases`'s collect and update composed with no host fields.
  """
  phases = make_rl_phases(
    policy,
    task,
    estimator,
    tx,
    group_size=group_size,
    num_epochs=num_epochs,
    num_minibatches=num_minibatches,
    temperature=temperature,
    reward=reward,
    loss_cfg=loss_cfg,
    shuffle=shuffle,
    providers=providers,
    critic=critic,
    critic_tx=critic_tx,
    metrics_fn=metrics_fn,
    reward_shaping=reward_shaping,
  )

  def update(state, batch, key, hparams=None):
    sample_key, epoch_key = jax.random.split(key)
    data = phases.collect(state, batch, sample_key)
    return phases.update(state, data, {}, epoch_key, hparams)

  return update


def target_mask(task: tasks_base.Task, targets: jax.Array) -> jax.Array:
  """[b, N] bool: target tokens up to and including the first EOS (and not PAD)."""
  is_eos = targets == task.vocab.eos_id
  after = (jnp.cumsum(is_eos, axis=-1) - is_eos) > 0
  return ~after & (targets != task.vocab.pad_id)


def make_sft_loss(policy: transformer.Policy, task: tasks_base.Task) -> Callable:
  """Returns loss_fn(params, batch) -> (loss, aux): teacher-forced cross-entropy.

  `batch` = dict(prompts [b, Lp] int32, targets [b, N] int32). The loss is the
  mean negative log-likelihood over target tokens (through EOS); `aux` holds
  `token_accuracy` (argmax equals the target) and `sequence_accuracy`.
  """
  lp = task.prompt_len

  def loss_fn(params, batch):
    prompts, targets = batch['prompts'], batch['targets']
    tmask = target_mask(task, targets)
    tokens = jnp.concatenate([prompts, targets], axis=1).astype(jnp.int32)
    valid = jnp.concatenate([prompt_mask(task, prompts), tmask], axis=1)
    logits, log_probs, _ = _forward(policy, params, tokens, valid, lp, 1.0)
    nll = ops.masked_mean(-log_probs, tmask)
    hit = (jnp.argmax(logits[:, lp - 1 : -1], axis=-1) == targets) | ~tmask
    aux = dict(
      token_accuracy=ops.masked_mean(hit.astype(jnp.float32), tmask),
      sequence_accuracy=jnp.mean(jnp.all(hit, axis=-1).astype(jnp.float32)),
    )
    return nll, jax.lax.stop_gradient(aux)

  return loss_fn


def make_sft_update(
  policy: transformer.Policy, task: tasks_base.Task, tx: optax.GradientTransformation
) -> Callable:
  """Returns update(state, batch) -> (state, metrics): one supervised warm-start step."""
  grad_step = train_lib.make_gradient_step(make_sft_loss(policy, task), tx)

  def update(state, batch):
    (params, opt_state), metrics = grad_step((state['params'], state['opt_state']), batch)
    metrics['params_finite'] = _params_finite(params)
    return dict(state, step=state['step'] + 1, params=params, opt_state=opt_state), metrics

  return update


def make_eval_fn(policy: transformer.Policy, task: tasks_base.Task) -> Callable:
  """Returns evaluate(params, batch) -> dict of [P] float32 per-prompt scores (greedy decoding).

  Scores: the task's `eval_metrics` (arith: `exact_match`, `final_answer`,
  `step_accuracy`). Average them on the host or in the caller's jit.
  """
  voc = task.vocab

  def evaluate(params, batch):
    prompts = batch['prompts']
    samples = sampling.sample(
      policy,
      params,
      jax.random.key(0),  # unused by greedy decoding
      prompts,
      prompt_mask(task, prompts),
      num_samples=1,
      max_new_tokens=task.response_len,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
      greedy=True,
    )
    return task.eval_metrics(samples.responses, samples.mask, batch)

  return evaluate


def mean_metrics(per_prompt: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
  """Averages the [P] scores of `make_eval_fn` to scalars."""
  return {k: jnp.mean(v) for k, v in per_prompt.items()}
