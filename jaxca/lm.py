"""Pure train-step pieces for language policies on verifiable tasks (RL and warm start).

Shape legend: P prompts, G samples per prompt, B = P*G rows (row p*G + g, the
`sampling.sample` layout), Lp prompt length, N response length, L = Lp + N, V vocab.

One RL iteration (`make_rl_update`):
  1. sample G responses per prompt with the current policy (`sampling.sample`);
  2. score them with the task's verifier (sequence reward [B]), put the reward on
     the last valid response token (token-level rewards [B, N]);
  3. one teacher-forced pass computes the old log-probs (and values for GAE), one
     pass with the frozen reference computes the reference log-probs (only when
     the KL coefficient is non-zero);
  4. the estimator (`jaxca.estimators`) turns rewards into advantages/returns;
  5. `num_epochs` x `num_minibatches` PPO-clip steps (`train.minibatch_epochs`)
     on `pg + kl_coef * KL_k3 - ent_coef * H + vf_coef * value_loss`.

States are plain dicts of arrays (checkpointable with orbax, no keys, no Python
objects): `step` [] int32, `params`, `opt_state`, and `ref_params` when the KL
term is on. Nothing here is jitted; the experiment jits whole iterations.
"""

from typing import Any
from typing import Callable
from typing import Dict
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from jaxca import losses
from jaxca import ops
from jaxca import sampling
from jaxca import train as train_lib
from jaxca.networks import transformer
from jaxca.tasks import arith

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
  """

  tokens: jax.Array
  valid: jax.Array
  mask: jax.Array
  old_log_probs: jax.Array
  ref_log_probs: jax.Array
  old_values: jax.Array
  advantages: jax.Array
  returns: jax.Array


def _get(cfg, name, default=None):
  if cfg is None:
    return default
  if hasattr(cfg, 'get'):
    return cfg.get(name, default)
  return getattr(cfg, name, default)


def prompt_mask(task: arith.Task, prompts: jax.Array) -> jax.Array:
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

  `batch` holds the per-row `answers` [B], `targets` [B, 2K] and
  `intermediates` [B, K] (already repeated G times).
  """
  if kind == 'outcome':
    r = arith.outcome_reward(task, responses, mask, batch['answers'])
    return last_token_rewards(r, mask)
  if kind == 'exact_match':
    r = arith.exact_match(task, responses, mask, batch['targets'])
    return last_token_rewards(r, mask)
  if kind == 'process':
    return jnp.where(
      mask, arith.process_rewards(task, responses, mask, batch['intermediates']), 0.0
    )
  raise ValueError(f'Unknown reward {kind!r}; choose from {list(REWARDS)}.')


def reward_positions(task, kind: str, responses, mask, batch) -> jax.Array:
  """[B, N] bool: the tokens that can carry a reward (for `min_form`'s `reward_mask`).

  'process': the token closing each step (`arith.step_correctness` positions);
  otherwise the last valid token.
  """
  n = mask.shape[-1]
  pos = jnp.arange(n, dtype=jnp.int32)
  if kind == 'process':
    _, positions = arith.step_correctness(task, responses, mask, batch['intermediates'])
    return jnp.any(positions[..., :, None] == pos[None, None, :], axis=-2) & mask
  last = jnp.max(jnp.where(mask, pos[None, :], -1), axis=-1, keepdims=True)
  return mask & (pos[None, :] == last)


def _forward(policy, params, tokens, valid, prompt_len, temperature):
  out = policy.apply(params, tokens, valid)
  logits = out.logits.astype(jnp.float32)
  log_probs = transformer.response_log_probs(logits, tokens, prompt_len, temperature=temperature)
  values = None if out.values is None else transformer.response_values(out.values, prompt_len)
  return logits, log_probs, values


def make_rollout_fn(
  policy: transformer.Policy,
  task: arith.Task,
  estimator,
  *,
  group_size: int,
  temperature: float = 1.0,
  reward: str = 'outcome',
  use_ref: bool = False,
  max_new_tokens: Optional[int] = None,
) -> Callable:
  """Returns rollout(params, ref_params, batch, key) -> (Rollout, metrics).

  Args:
    policy: the language policy (with a value head iff `estimator.needs_values`).
    task: the task (vocab and verifiers).
    estimator: a `jaxca.estimators.Estimator`.
    group_size: G, samples per prompt.
    temperature: sampling temperature (also used for every log-prob).
    reward: one of REWARDS.
    use_ref: compute reference log-probs with `ref_params` (for the KL term).
    max_new_tokens: N; default `task.response_len`.

  The returned function takes `batch` = dict(prompts [P, Lp] int32, answers [P],
  targets [P, 2K], intermediates [P, K]) and a PRNG key.
  """
  if reward not in REWARDS:
    raise ValueError(f'Unknown reward {reward!r}; choose from {list(REWARDS)}.')
  if estimator.needs_groups and group_size < 2:
    raise ValueError(f'Estimator {estimator.name!r} needs group_size >= 2; got {group_size}.')
  num_new = task.response_len if max_new_tokens is None else int(max_new_tokens)
  voc = task.vocab

  def rollout(params, ref_params, batch, key):
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
    rep = {
      k: jnp.repeat(batch[k], group_size, axis=0)
      for k in ('answers', 'targets', 'intermediates')
      if k in batch
    }
    mask = samples.mask
    rewards = sequence_rewards(task, reward, samples.responses, mask, rep)
    _, old_log_probs, values = _forward(
      policy, params, samples.tokens, samples.valid, lp, temperature
    )
    old_log_probs = jnp.where(mask, old_log_probs, 0.0)
    if use_ref:
      _, ref_log_probs, _ = _forward(
        policy, ref_params, samples.tokens, samples.valid, lp, temperature
      )
      ref_log_probs = jnp.where(mask, ref_log_probs, 0.0)
    else:
      ref_log_probs = jnp.zeros_like(old_log_probs)
    est_kwargs = {}
    if estimator.needs_values:
      if values is None:
        raise ValueError(f'Estimator {estimator.name!r} needs a policy with a value head.')
      est_kwargs['values'] = jnp.where(mask, values, 0.0)
      est_kwargs['bootstrap_value'] = jnp.zeros(mask.shape[:1], jnp.float32)
    if estimator.needs_groups:
      est_kwargs['group_size'] = group_size
    if estimator.name == 'min_form':
      est_kwargs['reward_mask'] = reward_positions(task, reward, samples.responses, mask, rep)
      est_kwargs['group_size'] = group_size  # PURE's RLOO-style baseline within each group
    targets = estimator(rewards, mask, **est_kwargs)
    advantages = jax.lax.stop_gradient(jnp.where(mask, targets.advantages, 0.0))
    returns = jax.lax.stop_gradient(jnp.where(mask, targets.returns, 0.0))
    old_values = jnp.zeros_like(old_log_probs) if values is None else jnp.where(mask, values, 0.0)
    seq_reward = jnp.sum(rewards, axis=1)
    correct = arith.outcome_reward(task, samples.responses, mask, rep['answers'])
    metrics = dict(
      reward=jnp.mean(seq_reward),
      accuracy=jnp.mean(correct),
      response_length=jnp.mean(samples.lengths.astype(jnp.float32)),
      adv_abs_mean=ops.masked_mean(jnp.abs(advantages), mask),
      frac_zero_adv_groups=_frac_constant_groups(correct, group_size),
    )
    batch_out = Rollout(
      tokens=samples.tokens,
      valid=samples.valid,
      mask=mask,
      old_log_probs=jax.lax.stop_gradient(old_log_probs),
      ref_log_probs=jax.lax.stop_gradient(ref_log_probs),
      old_values=jax.lax.stop_gradient(old_values),
      advantages=advantages,
      returns=returns,
    )
    return batch_out, metrics

  return rollout


def _frac_constant_groups(correct, group_size):
  """Share of prompts whose G samples all got the same reward (no group signal)."""
  g = correct.reshape(-1, group_size)
  return jnp.mean((jnp.max(g, axis=1) == jnp.min(g, axis=1)).astype(jnp.float32))


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
) -> Callable:
  """Returns loss_fn(params, rollout: Rollout) -> (loss, aux) for token-level PPO.

  loss = ppo_clip(agg_mode) + kl_coef * agg(k3(pi || pi_ref)) - ent_coef * agg(H)
         + vf_coef * value_loss   (the value term only when vf_coef > 0).
  """
  losses.check_agg_mode(agg_mode)

  def loss_fn(params, rb: Rollout):
    logits, log_probs, values = _forward(
      policy, params, rb.tokens, rb.valid, prompt_len, temperature
    )
    mask = rb.mask
    log_probs = jnp.where(mask, log_probs, 0.0)
    pg, aux = losses.ppo_policy_loss(
      log_probs,
      rb.old_log_probs,
      rb.advantages,
      mask,
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      agg_mode=agg_mode,
    )
    total = pg
    aux = dict(aux, pg_loss=pg)
    if kl_coef:
      kl = losses.aggregate(losses.kl_k3(log_probs, rb.ref_log_probs, mask), mask, agg_mode)
      total = total + kl_coef * kl
      aux['kl_ref'] = kl
    resp_logits = logits[:, prompt_len - 1 : -1] / temperature
    entropy = losses.aggregate(
      jnp.where(mask, losses.entropy_from_logits(resp_logits), 0.0), mask, agg_mode
    )
    aux['entropy'] = jax.lax.stop_gradient(entropy)
    if ent_coef:
      total = total - ent_coef * entropy
    if vf_coef:
      if values is None:
        raise ValueError('vf_coef > 0 needs a policy with a value head.')
      vl = losses.value_loss(
        jnp.where(mask, values, 0.0),
        rb.returns,
        mask,
        old_values=rb.old_values if vf_clip else None,
        clip_eps=vf_clip,
        agg_mode=agg_mode,
      )
      total = total + vf_coef * vl
      aux['value_loss'] = vl
    return total, aux

  return loss_fn


def make_init(
  policy: transformer.Policy, tx: optax.GradientTransformation, *, with_ref: bool = False
) -> Callable:
  """Returns init(key) -> state dict(step, params, opt_state[, ref_params])."""

  def init(key):
    params = policy.init(key)
    return init_from_params(params, tx, with_ref=with_ref)

  return init


def init_from_params(params, tx: optax.GradientTransformation, *, with_ref: bool = False):
  """A fresh state (step 0, fresh optimizer) around `params` (e.g. a warm start)."""
  state = dict(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))
  if with_ref:
    state['ref_params'] = jax.tree.map(jnp.copy, params)
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


def make_rl_update(
  policy: transformer.Policy,
  task: arith.Task,
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
) -> Callable:
  """Returns update(state, batch, key) -> (state, metrics): one whole RL iteration.

  Args:
    policy, task, estimator, tx: the parts (see `make_rollout_fn`).
    group_size: G.
    num_epochs, num_minibatches: PPO passes over the B = P*G rows (static).
    temperature, reward: see `make_rollout_fn`.
    loss_cfg: ConfigDict/dict with clip_eps, clip_eps_high, agg_mode, kl_coef,
      ent_coef, vf_coef, vf_clip (all optional; see `make_ppo_loss`).
    shuffle: permute rows between minibatches.

  `metrics` holds scalars: rollout statistics, the mean over epochs/minibatches
  of the loss terms, `grad_norm`, and `params_finite` (1.0 iff every new
  parameter is finite) so the caller can stop before saving a broken state.
  """
  kl_coef = float(_get(loss_cfg, 'kl_coef', 0.0) or 0.0)
  vf_coef = float(_get(loss_cfg, 'vf_coef', 0.0) or 0.0) if estimator.needs_values else 0.0
  rollout = make_rollout_fn(
    policy,
    task,
    estimator,
    group_size=group_size,
    temperature=temperature,
    reward=reward,
    use_ref=kl_coef > 0,
  )
  loss_fn = make_ppo_loss(
    policy,
    prompt_len=task.prompt_len,
    temperature=temperature,
    clip_eps=float(_get(loss_cfg, 'clip_eps', 0.2)),
    clip_eps_high=_get(loss_cfg, 'clip_eps_high', None) or None,
    agg_mode=_get(loss_cfg, 'agg_mode', 'token_mean'),
    kl_coef=kl_coef,
    ent_coef=float(_get(loss_cfg, 'ent_coef', 0.0) or 0.0),
    vf_coef=vf_coef,
    vf_clip=_get(loss_cfg, 'vf_clip', None) or None,
  )
  grad_step = train_lib.make_gradient_step(loss_fn, tx)

  def update(state, batch, key):
    sample_key, epoch_key = jax.random.split(key)
    rb, roll_metrics = rollout(state['params'], state.get('ref_params'), batch, sample_key)
    (params, opt_state), step_metrics = train_lib.minibatch_epochs(
      grad_step,
      (state['params'], state['opt_state']),
      rb,
      epoch_key,
      num_epochs=num_epochs,
      num_minibatches=num_minibatches,
      shuffle=shuffle,
    )
    new_state = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state)
    metrics = dict(roll_metrics)
    metrics.update({k: jnp.mean(v) for k, v in step_metrics.items()})
    metrics['params_finite'] = _params_finite(params)
    return new_state, metrics

  return update


def target_mask(task: arith.Task, targets: jax.Array) -> jax.Array:
  """[b, N] bool: target tokens up to and including the first EOS (and not PAD)."""
  is_eos = targets == task.vocab.eos_id
  after = (jnp.cumsum(is_eos, axis=-1) - is_eos) > 0
  return ~after & (targets != task.vocab.pad_id)


def make_sft_loss(policy: transformer.Policy, task: arith.Task) -> Callable:
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
  policy: transformer.Policy, task: arith.Task, tx: optax.GradientTransformation
) -> Callable:
  """Returns update(state, batch) -> (state, metrics): one supervised warm-start step."""
  grad_step = train_lib.make_gradient_step(make_sft_loss(policy, task), tx)

  def update(state, batch):
    (params, opt_state), metrics = grad_step((state['params'], state['opt_state']), batch)
    metrics['params_finite'] = _params_finite(params)
    return dict(state, step=state['step'] + 1, params=params, opt_state=opt_state), metrics

  return update


def make_eval_fn(policy: transformer.Policy, task: arith.Task) -> Callable:
  """Returns evaluate(params, batch) -> dict of [P] float32 per-prompt scores (greedy decoding).

  Scores: `exact_match` (whole chain right), `final_answer` (outcome reward),
  `step_accuracy` (mean per-step correctness). Average them on the host or in
  the caller's jit.
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
    r, m = samples.responses, samples.mask
    steps, _ = arith.step_correctness(task, r, m, batch['intermediates'])
    return dict(
      exact_match=arith.exact_match(task, r, m, batch['targets']),
      final_answer=arith.outcome_reward(task, r, m, batch['answers']),
      step_accuracy=jnp.mean(steps, axis=-1),
    )

  return evaluate


def mean_metrics(per_prompt: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
  """Averages the [P] scores of `make_eval_fn` to scalars."""
  return {k: jnp.mean(v) for k, v in per_prompt.items()}
