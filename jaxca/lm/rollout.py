"""The rollout of a language policy: sample, score, the old policy's view, the estimator."""

from typing import Any
from typing import Callable
from typing import Dict
from typing import Mapping
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca import sampling
from jaxca.lm import dapo
from jaxca.lm import providers as providers_lib
from jaxca.lm import rewards as rewards_lib
from jaxca.networks import transformer
from jaxca.objectives import kl as kl_lib
from jaxca.objectives import losses
from jaxca.tasks import base as tasks_base


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


def forward(policy, params, tokens, valid, prompt_len, temperature):
  """(response_logits [B, N, V] float32, untempered, log_probs [B, N] at `temperature`,
  values [B, N] or None) of `tokens` = prompt ++ response in one teacher-forced pass; the
  output projection runs on the response's positions only (`Policy.apply(logits_from=)`)."""
  out = policy.apply(params, tokens, valid, logits_from=prompt_len - 1)
  logits = out.logits.astype(jnp.float32)[:, :-1]
  log_probs = transformer.target_log_probs(logits, tokens[:, prompt_len:], temperature)
  values = None if out.values is None else transformer.response_values(out.values, prompt_len)
  return logits, log_probs, values


def make_score_fn(policy: transformer.Policy, prompt_len: int, temperature=1.0) -> Callable:
  """The single-turn score: score(params, tokens, valid) -> (log_probs, entropies, values).

  One teacher-forced pass over `prompt ++ response` ([B, L]); log-probs [B, N] of the response
  tokens and entropies [B, N] of the full-vocabulary distributions they were drawn from (both at
  `temperature`), values [B, N] from the value head or None. The learner's loss scores with it
  (`loss.make_loss`); a multi-turn run hands in `multiturn.make_score_fn` instead.
  """

  def score(params, tokens, valid):
    logits, log_probs, values = forward(policy, params, tokens, valid, prompt_len, temperature)
    return log_probs, losses.entropy_from_logits(logits / temperature), values

  return score


class RolloutData(NamedTuple):
  """Phase 1 of an iteration: the sampled batch and the old policy's view of it.

  Everything a provider may read (`providers_lib.RolloutContext`) and everything the update needs,
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
    key: a PRNG key of this rollout for providers (`providers_lib.RolloutContext.key`), folded from
      the sampling key so sampling is unchanged.
    rollout_log_probs: [B, N] float32 the sampler's own log-probs of its tokens (0 where
      masked; `sampling.Samples.log_probs`), or None.
    extras: None or a pytree of [B, ...] arrays a collect adds for its own providers and
      statistics (`Collect`; e.g. a multi-turn rollout's per-turn actions and anchors).
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
  extras: Any = None


class Collect(NamedTuple):
  """The learner's rollout seam: how a batch is sampled and scored, and what reads it.

  Attributes:
    fn: (params, ref_params, batch, key, critic_params) -> `RolloutData`; `ref_params` is None
      unless the reference log-probs are needed (then zeros); `critic_params` is ignored (the
      learner puts a separate critic's values in). Old and reference log-probs must come from
      the same score as the loss's `score_fn`.
    stats: (data, advantages [B, N]) -> dict of the rollout's scalar statistics.
    providers: provider overrides for this rollout (`providers.PROVIDERS` entries or new
      fields), e.g. a multi-turn rollout's step ids from its turns.
    response_len: the longest response in the units of `RolloutData.lengths` (DAPO's overlong
      penalty): N tokens single-turn, H turns multi-turn.
    eos_id: the end-of-sequence token (DAPO's overlong filter), or None if responses have none.
  """

  fn: Callable
  stats: Callable
  providers: Dict[str, Callable] = {}
  response_len: Optional[int] = None
  eos_id: Optional[int] = None


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
    reward: one of rewards_lib.REWARDS.
    use_ref: compute reference log-probs with `ref_params` (for the KL term);
      also on when the estimator requires `ref_log_probs` (KL in the reward).
    max_new_tokens: N; default `task.response_len`.
    providers: extra or overriding providers, {field: fn(providers_lib.RolloutContext) -> dict
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
  collect, finish = make_rollout_parts(
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


def make_sample_collect(
  policy: transformer.Policy,
  task: tasks_base.Task,
  *,
  group_size: int,
  temperature: float = 1.0,
  reward: str = 'outcome',
  max_new_tokens: Optional[int] = None,
) -> Collect:
  """The single-turn `Collect`: sample G responses per prompt, score them with the verifier.

  `sampling.sample` with the current policy, sequence rewards (`rewards.sequence_rewards`,
  `reward` one of `rewards.REWARDS`) on the last token, one teacher-forced pass for the old
  log-probs, values and response logits, one with `ref_params` for the reference log-probs.
  Statistics: reward, accuracy (`task.outcome`), response_length, adv_abs_mean,
  frac_zero_adv_groups.
  """
  if reward not in rewards_lib.REWARDS:
    raise ValueError(f'Unknown reward {reward!r}; choose from {list(rewards_lib.REWARDS)}.')
  num_new = task.response_len if max_new_tokens is None else int(max_new_tokens)
  voc = task.vocab

  def collect(params, ref_params, batch, key, critic_params=None):
    del critic_params  # the learner adds a separate critic's values
    prompts = batch['prompts']
    samples = sampling.sample(
      policy,
      params,
      key,
      prompts,
      rewards_lib.prompt_mask(task, prompts),
      num_samples=group_size,
      max_new_tokens=num_new,
      temperature=temperature,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
    )
    return score_samples(
      policy, task, reward, params, ref_params, batch, samples, key, group_size, temperature
    )

  return Collect(collect, sample_stats(task, group_size), {}, num_new, voc.eos_id)


def score_samples(
  policy, task, reward, params, ref_params, batch, samples, key, group_size, temperature,
  extras=None,
) -> RolloutData:  # fmt: skip
  """The `RolloutData` of G sampled rows per prompt (`samples`: tokens, valid, responses,
  mask, lengths, log_probs of `sampling.Samples` or `tree_sampling.TreeSamples`, rows grouped
  by prompt): the batch repeated G times, sequence rewards (`reward`), one teacher-forced pass
  for the old log-probs, values and response logits, one with `ref_params` (None: zeros) for
  the reference log-probs; `key` the sampling key (its fold 1 goes to the providers)."""
  lp = batch['prompts'].shape[1]
  rep = {k: jnp.repeat(v, group_size, axis=0) for k, v in batch.items()}
  mask = samples.mask
  rewards = rewards_lib.sequence_rewards(task, reward, samples.responses, mask, rep)
  logits, old_log_probs, values = forward(
    policy, params, samples.tokens, samples.valid, lp, temperature
  )
  old_log_probs = jnp.where(mask, old_log_probs, 0.0)
  if ref_params is not None:
    _, ref_log_probs, _ = forward(
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
    response_logits=logits / temperature,
    lengths=samples.lengths,
    key=jax.random.fold_in(key, 1),  # for providers; the sampling key stays as it was
    rollout_log_probs=jnp.where(mask, samples.log_probs, 0.0),
    extras=extras,
  )


def sample_stats(task, group_size: int) -> Callable:
  """`Collect.stats` of G rows per prompt: reward, accuracy (`task.outcome`), response_length,
  adv_abs_mean, frac_zero_adv_groups."""

  def stats(data, advantages):
    mask = data.mask
    correct = task.outcome(data.responses, mask, data.batch)
    return dict(
      reward=jnp.mean(jnp.sum(data.rewards, axis=1)),
      accuracy=jnp.mean(correct),
      response_length=jnp.mean(data.lengths.astype(jnp.float32)),
      adv_abs_mean=ops.masked_mean(jnp.abs(advantages), mask),
      frac_zero_adv_groups=_frac_constant_groups(correct, group_size),
    )

  return stats


def make_rollout_parts(
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
  collect=None,
):
  """(collect(params, ref_params, batch, key, critic_params) -> RolloutData,
  finish(data, fields, hparams, kl_coef=None) -> (Rollout, metrics)).

  `collect` (a `Collect`; default `make_sample_collect`) samples and scores the batch;
  `reward_kl` = (coef, estimator) puts the KL to the reference in the token rewards
  (`kl.penalize_rewards`) before the estimator runs; `reward_shaping` (`REWARD_SHAPING_KEYS`)
  adds DAPO's overlong punishment / filtering."""
  if collect is None:
    collect = make_sample_collect(
      policy,
      task,
      group_size=group_size,
      temperature=temperature,
      reward=reward,
      max_new_tokens=max_new_tokens,
    )
  host_fields = tuple(host_fields)
  table = {f: (lambda ctx: {}) for f in host_fields}
  table.update(collect.providers)
  table.update(providers or {})
  has_values = bool(policy.module.value_head) or critic is not None
  fields = providers_lib.check_providers(estimator, table, value_head=has_values)
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
  num_new = collect.response_len
  buffer_len, penalty_factor, overlong_filter = dapo.reward_shaping_options(reward_shaping, num_new)
  if overlong_filter and collect.eos_id is None:
    raise ValueError('reward_shaping.overlong_filter needs responses that end with an EOS token.')

  def collect_fn(params, ref_params, batch, key, critic_params=None):
    data = collect.fn(params, ref_params if use_ref else None, batch, key, critic_params)
    if critic is not None:
      if critic_params is None:
        raise ValueError('a rollout with a separate critic needs `critic_params`.')
      lp = data.tokens.shape[1] - data.mask.shape[1]
      values = transformer.response_values(critic.apply(critic_params, data.tokens, data.valid), lp)
      data = data._replace(values=values)
    return data

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
      rewards = rewards + rewards_lib.last_token_rewards(penalty, mask)
      kl_metrics['overlong_penalty'] = jnp.mean(penalty)
    ctx = providers_lib.RolloutContext(
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
      extras=data.extras,
      hparams=hparams,
    )
    traj = providers_lib.build_trajectory(ctx, fields)
    if extra:
      traj = traj.replace(**{k: jnp.asarray(v) for k, v in extra.items()})
    targets = estimator(traj, hparams)
    advantages = jax.lax.stop_gradient(jnp.where(mask, targets.advantages, 0.0))
    returns = jax.lax.stop_gradient(jnp.where(mask, targets.returns, 0.0))
    values = data.values
    old_values = jnp.zeros_like(data.log_probs) if values is None else jnp.where(mask, values, 0.0)
    metrics = dict(collect.stats(data, advantages), **kl_metrics)
    if metrics_fn is not None:
      metrics.update(metrics_fn(ctx, traj, targets))
    loss_mask = mask
    if traj.get('loss_mask') is not None:
      loss_mask = mask & jnp.asarray(traj.get('loss_mask'), jnp.bool_)
      metrics['loss_token_frac'] = jnp.sum(loss_mask) / jnp.maximum(jnp.sum(mask), 1)
    if overlong_filter:
      cut = dapo.truncated(data.responses, mask, collect.eos_id)
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

  return collect_fn, finish


# Keys of the learner's `reward_shaping` option (DAPO, arXiv 2503.14476, Sec. 3.4).


def _frac_constant_groups(correct, group_size):
  """Share of prompts whose G samples all got the same reward (no group signal)."""
  g = correct.reshape(-1, group_size)
  return jnp.mean((jnp.max(g, axis=1) == jnp.min(g, axis=1)).astype(jnp.float32))


# Keys of a learner's `loss` config section (all optional; see `loss_options`).


def advantage_by_class(classes: Mapping[str, Callable]) -> Callable:
  """A `metrics_fn` (`make_rl_phases`): the mean |advantage| over each class of response tokens.

  `classes` maps a metric name to `pred(responses) -> bool [B, N]`, the class's tokens (e.g.
  `task.vocab.is_number`); its metric is sum(|A_t|) / max(count, 1) over the valid response
  tokens of the class, averaged over the whole batch.
  """

  def metrics_fn(ctx, traj, targets):
    del traj
    a = jnp.abs(jnp.where(ctx.mask, targets.advantages, 0.0))
    out = {}
    for name, pred in classes.items():
      cls = pred(ctx.responses) & ctx.mask
      out[name] = jnp.sum(a * cls) / jnp.maximum(jnp.sum(cls), 1)
    return out

  return metrics_fn
