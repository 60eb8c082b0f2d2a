"""The LM learner: one RL iteration as collect (in jit), host providers, update (in jit)."""

from typing import Any
from typing import Callable
from typing import Dict
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxca import ops
from jaxca import train as train_lib
from jaxca.lm import dapo
from jaxca.lm import loss as loss_lib
from jaxca.lm import rollout as rollout_lib
from jaxca.networks import transformer
from jaxca.objectives import kl as kl_lib
from jaxca.objectives import losses
from jaxca.tasks import base as tasks_base


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


class RLPhases(NamedTuple):
  """One RL iteration in two jittable phases, with a host step possible in between.

  Attributes:
    collect: (state, batch, key) -> rollout_lib.RolloutData: sample G responses per prompt and
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
  collect: Optional[rollout_lib.Collect] = None,
  score_fn: Optional[Callable] = None,
) -> RLPhases:
  """An RL iteration split at the point where host-side providers can run.

  Some Trajectory fields cannot be computed inside one jitted iteration: Monte-Carlo
  values (VinePPO, arXiv 2410.01679; SPO, arXiv 2505.23564) de-duplicate the states of
  the batch on the host and sample a data-dependent number of completions. The caller
  jits `collect` and `update` separately and computes `host_fields` in between from the
  `rollout_lib.RolloutData` (with the current parameters and its own key); `make_rl_update` is the
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
    collect: the rollout seam (`rollout_lib.Collect`): how a batch is sampled and scored, its
      provider overrides and statistics. Default: single-turn sampling
      (`rollout_lib.make_sample_collect` with `group_size`, `temperature`, `reward`); a
      multi-turn run hands in `multiturn.make_collect` (a TokenEnv scan; `task` is then the
      env, the batch its tasks).
    score_fn: the loss's score of the rollout's tokens, `score_fn(params, tokens, valid) ->
      (log_probs, entropies, values)`, the same score `collect` records as the old policy's.
      Default: `rollout_lib.make_score_fn(policy, task.prompt_len, temperature)`; multi-turn:
      `multiturn.make_score_fn` (the action-masked distribution). Required with `collect`.

  `loss_cfg` is a `loss` config section or a `LossOptions` (`loss.loss_options`). Every
  objective, KL option, value head or critic and DAPO option applies to whichever rollout.

  With `loss_cfg.kl_ctrl='adaptive'` the KL coefficient is `state['kl_coef']`
  (`init_from_params(kl_coef=)`), traced into the loss (or the reward penalty); after the
  epochs it is updated once by `kl.adaptive_controller` (Ziegler et al., arXiv 1909.08593,
  Eq. 2) from the batch's masked-mean KL of the sampling policy to the reference
  (`kl_estimator`), with n_steps = the batch's response count. Metrics `kl_coef` (the
  coefficient this iteration used) and `kl_measured`.
  """
  opts = loss_lib.loss_options(loss_cfg)
  kl_coef = opts.kl_coef
  has_critic = 'values' in estimator.requires
  vf_coef = opts.vf_coef if has_critic else 0.0
  vf_clip = opts.vf_clip
  agg_mode = opts.agg_mode
  reward_kl = (kl_coef, opts.kl_estimator) if (opts.kl_in_reward and kl_coef > 0) else None
  if critic is not None and critic_tx is None:
    raise ValueError('a separate critic needs its optimiser `critic_tx`.')
  if (collect is None) != (score_fn is None):
    raise ValueError(
      '`collect` and `score_fn` go together: the old log-probs the collect records and the '
      "loss's must come from the same score; pass both or neither."
    )
  if score_fn is None:
    score_fn = rollout_lib.make_score_fn(policy, task.prompt_len, temperature)
  collect_parts, finish = rollout_lib.make_rollout_parts(
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
    collect=collect,
  )
  # An objective that draws its tokens (clip-cov) takes one key per minibatch.
  keyed = bool(getattr(opts.objective, 'needs_key', False))

  def make_grad_step(coef):
    loss_fn = loss_lib.make_loss(
      score_fn,
      opts._replace(
        kl_coef=0.0 if reward_kl is not None else coef,
        vf_coef=0.0 if critic is not None else vf_coef,
      ),
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

    def critic_loss(cparams, rb: rollout_lib.Rollout):
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
    return collect_parts(
      state['params'], state.get('ref_params'), batch, key, state.get('critic_params')
    )

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
    metrics['params_finite'] = train_lib.params_finite(params)
    return new_state, metrics

  return RLPhases(collect_fn, update)


def _take_rows(data: rollout_lib.RolloutData, rows) -> rollout_lib.RolloutData:
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
  generated rows with an all-False response mask and zero rewards, log-probs, values and
  `extras` (a multi-turn rollout's turns: none active), which add nothing to any loss term
  or normaliser (a short batch is a smaller batch, not a reweighted one; reusing kept groups
  instead would count them twice). verl instead raises after `max_num_gen_batches`.

  Args:
    collect: `RLPhases.collect` (jitted by the caller): (state, batch, key) -> `RolloutData`.
    state: the learner state.
    next_batch: () -> dict of the task's per-prompt arrays [P, ...]; called once per
      generation batch.
    key: generation batch i samples with `jax.random.fold_in(key, i)`.
    group_size: G.
    max_gen_batches: at most this many `collect` calls (>= 1).

  Returns:
    (rollout_lib.RolloutData with P*G host rows, metrics: `gen_batches`, `frac_groups_kept` (kept /
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
      extras=jax.tree.map(np.zeros_like, pad.extras),  # e.g. multi-turn turns: none taken
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
  collect: Optional[rollout_lib.Collect] = None,
  score_fn: Optional[Callable] = None,
) -> Callable:
  """Returns update(state, batch, key, hparams=None) -> (state, metrics): one RL iteration.

  Args:
    policy, task, estimator, tx: the parts (see `make_rollout_fn`).
    group_size: G.
    num_epochs, num_minibatches: PPO passes over the B = P*G rows (static).
    temperature, reward: see `make_rollout_fn`.
    loss_cfg: ConfigDict/dict with clip_eps, clip_eps_high, agg_mode, kl_coef,
      ent_coef, vf_coef, vf_clip (all optional; see `loss_lib.make_ppo_loss`).
    shuffle: permute rows between minibatches.
    providers, metrics_fn: extra Trajectory providers and rollout metrics (see
      `make_rollout_fn`).
    critic, critic_tx: a separate critic and its optimiser (see `make_rl_phases`).
    reward_shaping: DAPO's overlong punishment / filtering (see `make_rl_phases`).
    collect, score_fn: the rollout and scoring seams (see `make_rl_phases`; default
      single-turn sampling and teacher-forced response log-probs).

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
    collect=collect,
    score_fn=score_fn,
  )

  def update(state, batch, key, hparams=None):
    sample_key, epoch_key = jax.random.split(key)
    data = phases.collect(state, batch, sample_key)
    return phases.update(state, data, {}, epoch_key, hparams)

  return update
