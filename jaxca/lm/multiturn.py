"""Multi-turn agent rollouts for a language policy, entirely inside `jit`, and their learner.

Shape legend: P tasks, G rollouts per task, B = P*G rows (row p*G + g), H turns
(`env.horizon`), O = `env.obs_len`, K = O + 1 tokens per turn, N = H*K response
tokens, Lp = `env.prompt_len`, L = Lp + N.

`rollout` prefills each task's prompt once (KV cache, repeated G times), then a
`lax.scan` over turns: sample ONE action token from the logits restricted to
`env.action_ids` (every other logit is -inf, so log-probs are those of the
masked distribution), step the environment (`jaxca.envs.token_env.TokenEnv`,
vmapped), and feed `[action, next observation]` (K tokens) to the cache. Turn t
occupies response columns `[t*K, (t+1)*K)`: O observation tokens (prefilled,
never in the loss) then the action. A row that finished stops: its later turns
are padding with `valid` False.

`make_update` is one RL iteration on top of it: rollout, a teacher-forced pass
for the old log-probs, providers fill the `Trajectory` fields the estimator
requires (`PROVIDERS`; one row per episode, the per-turn reward on the turn's
action token, `step_ids` = turn index, `anchor_ids` = the env's anchor at the
start of each turn), the estimator, then PPO-clip epochs
(`losses.ppo_objective`, `train.minibatch_epochs`, the minibatch container
`rollout_lib.Rollout`). Nothing here is jitted.
"""

from typing import Callable
from typing import Dict
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from jaxca import ops
from jaxca import train as train_lib
from jaxca import types
from jaxca.envs import token_env
from jaxca.lm import rollout as rollout_lib
from jaxca.networks import transformer
from jaxca.objectives import aggregation
from jaxca.objectives import losses


class Samples(NamedTuple):
  """G rollouts per task (B = P*G rows, row p*G + g).

  Attributes:
    tokens: [B, L] int32, prompt then H turns of [observation, action] (pad after the end).
    valid: [B, L] bool, True at real tokens (every prompt token; turns taken).
    mask: [B, N] bool, True at the action token of every turn taken (the loss mask).
    log_probs: [B, N] float32 sampling log-prob of each action under the masked
      distribution at the sampling temperature; 0 where `mask` is False.
    actions: [B, H] int32 action index into `env.action_ids`; -1 after the end.
    anchors: [B, H] int32 `env.anchor` of the state at the start of each turn; -1 after the end.
    rewards: [B, H] float32 reward of each turn; 0 after the end.
    done: [B, H] bool, True at the turn that ended the episode (termination, not truncation).
    active: [B, H] bool, True for turns taken.
    action_pos: [B, H] int32 response column of each turn's action token.
  """

  tokens: jax.Array
  valid: jax.Array
  mask: jax.Array
  log_probs: jax.Array
  actions: jax.Array
  anchors: jax.Array
  rewards: jax.Array
  done: jax.Array
  active: jax.Array
  action_pos: jax.Array

  @property
  def returns(self) -> jax.Array:
    """[B] float32 undiscounted episode return."""
    return jnp.sum(self.rewards, axis=-1)

  @property
  def lengths(self) -> jax.Array:
    """[B] int32 number of turns taken."""
    return jnp.sum(self.active, axis=-1, dtype=jnp.int32)


def _bcast(flag, x):
  return flag.reshape(flag.shape + (1,) * (x.ndim - flag.ndim))


def _action_logits(logits, action_ids, temperature):
  """[..., V] -> [..., A] logits of the action tokens only, divided by the temperature."""
  return jnp.take(logits.astype(jnp.float32), jnp.asarray(action_ids), axis=-1) / temperature


def rollout(
  policy: transformer.Policy,
  params,
  key: jax.Array,
  env: token_env.TokenEnv,
  tasks,
  *,
  group_size: int,
  temperature=1.0,
  greedy: bool = False,
) -> Samples:
  """Runs G episodes per task for `env.horizon` turns (see the module docstring).

  Args:
    policy: a `networks.transformer.Policy` with max_len >= Lp + O + H*K.
    params: its parameters.
    key: PRNG key (unused when `greedy`).
    env: a `TokenEnv`.
    tasks: a pytree of [P, ...] arrays, one task per row (the env's task type).
    group_size: G (static).
    temperature: sampling temperature (traceable); log-probs use it too.
    greedy: take the most likely action.

  Returns:
    `Samples` with B = P*G rows.
  """
  if not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f'`group_size` must be a positive int; got {group_size!r}.')
  horizon, obs_len = int(env.horizon), int(env.obs_len)
  per_turn = obs_len + 1
  prompts = jax.vmap(env.prompt)(tasks).astype(jnp.int32)  # [P, Lp]
  num_tasks, prompt_len = prompts.shape
  size = prompt_len + obs_len + horizon * per_turn
  if size > policy.max_len:
    raise ValueError(f'the policy max_len {policy.max_len} is below the rollout length {size}.')
  batch = num_tasks * group_size
  rep = lambda x: jnp.repeat(x, group_size, axis=0)
  module = policy.module
  action_ids = jnp.asarray(env.action_ids, jnp.int32)

  def forward(tokens, valid, cache):
    return module.apply({'params': params}, tokens, valid, cache=cache)

  cache = transformer.init_cache(module, num_tasks, size)
  _, cache = forward(prompts, jnp.ones_like(prompts, jnp.bool_), cache)  # one prefill per task
  cache = cache._replace(
    layers=jax.tree.map(rep, cache.layers), valid=rep(cache.valid), count=rep(cache.count)
  )
  states = jax.vmap(env.reset)(jax.tree.map(rep, tasks))
  obs = jax.vmap(env.observe)(states)
  out, cache = forward(obs, jnp.ones((batch, obs_len), jnp.bool_), cache)
  logits = out.logits[:, -1]

  def turn(carry, key):
    cache, logits, states, obs, done = carry
    alive = ~done
    scaled = _action_logits(logits, action_ids, temperature)
    if greedy:
      action = jnp.argmax(scaled, axis=-1)
    else:
      action = jax.random.categorical(key, scaled, axis=-1)
    action = action.astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(scaled), action[:, None], axis=-1)[:, 0]
    anchor = jax.vmap(env.anchor)(states)
    new, reward, ended = jax.vmap(env.step)(states, action)
    states = jax.tree.map(lambda a, b: jnp.where(_bcast(alive, a), a, b), new, states)
    ended = alive & ended
    done_next = done | ended
    next_obs = jax.vmap(env.observe)(states)
    token = jnp.where(alive, action_ids[action], env.pad_id)
    feed = jnp.concatenate([token[:, None], next_obs], axis=1)
    feed_valid = jnp.concatenate(
      [alive[:, None], jnp.broadcast_to(~done_next[:, None], (batch, obs_len))], axis=1
    )
    out, cache = forward(feed, feed_valid, cache)
    block = jnp.concatenate([jnp.where(alive[:, None], obs, env.pad_id), token[:, None]], axis=1)
    ys = dict(
      block=block,
      alive=alive,
      action=jnp.where(alive, action, -1),
      logp=jnp.where(alive, logp, 0.0),
      anchor=jnp.where(alive, anchor, -1),
      reward=jnp.where(alive, reward, 0.0).astype(jnp.float32),
      ended=ended,
    )
    return (cache, out.logits[:, -1], states, next_obs, done_next), ys

  done0 = jnp.zeros((batch,), jnp.bool_)
  _, ys = jax.lax.scan(turn, (cache, logits, states, obs, done0), jax.random.split(key, horizon))
  t_major = lambda x: jnp.swapaxes(x, 0, 1)  # [H, B, ...] -> [B, H, ...]
  alive = t_major(ys['alive'])  # [B, H]
  response = t_major(ys['block']).reshape(batch, horizon * per_turn)
  resp_valid = jnp.repeat(alive, per_turn, axis=1)
  is_action = jnp.tile(jnp.arange(per_turn) == obs_len, horizon)[None, :]
  mask = resp_valid & is_action
  log_probs = jnp.zeros((batch, horizon, per_turn), jnp.float32)
  log_probs = log_probs.at[:, :, obs_len].set(t_major(ys['logp'])).reshape(batch, -1)
  return Samples(
    tokens=jnp.concatenate([rep(prompts), response], axis=1),
    valid=jnp.concatenate([jnp.ones((batch, prompt_len), jnp.bool_), resp_valid], axis=1),
    mask=mask,
    log_probs=log_probs,
    actions=t_major(ys['action']),
    anchors=t_major(ys['anchor']),
    rewards=t_major(ys['reward']),
    done=t_major(ys['ended']),
    active=alive,
    action_pos=jnp.broadcast_to(
      jnp.arange(horizon, dtype=jnp.int32) * per_turn + obs_len, (batch, horizon)
    ),
  )


def action_log_probs(
  policy: transformer.Policy,
  params,
  tokens: jax.Array,
  valid: jax.Array,
  prompt_len: int,
  action_ids,
  temperature=1.0,
):
  """Teacher-forced log-probs and entropies of the masked action distribution.

  Returns:
    (log_probs [B, N], entropy [B, N]) float32 for the response columns
    (`tokens[:, prompt_len:]`); meaningful at action tokens only (mask the rest).
  """
  logits = policy.apply(params, tokens, valid).logits[:, prompt_len - 1 : -1]
  scaled = _action_logits(logits, action_ids, temperature)  # [B, N, A]
  logp_all = jax.nn.log_softmax(scaled)
  targets = tokens[:, prompt_len:]
  index = jnp.argmax(targets[..., None] == jnp.asarray(action_ids)[None, None, :], axis=-1)
  logp = jnp.take_along_axis(logp_all, index[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy


# ----------------------------------------------------------------------------- providers


class Context(NamedTuple):
  """What a provider reads: the `Samples`, G, and the old log-probs [B, N]."""

  samples: Samples
  group_size: int
  log_probs: jax.Array


def step_ids(samples: Samples) -> jax.Array:
  """[B, N] int32: the turn index at each action token, -1 elsewhere."""
  n = samples.mask.shape[1]
  horizon = samples.active.shape[1]
  turn = jnp.repeat(jnp.arange(horizon, dtype=jnp.int32), n // horizon)[None, :]
  return jnp.where(samples.mask, turn, -1).astype(jnp.int32)


def token_rewards(samples: Samples) -> jax.Array:
  """[B, N] float32: each turn's reward on its action token."""
  per_turn = samples.mask.shape[1] // samples.active.shape[1]
  r = jnp.zeros(samples.rewards.shape + (per_turn,), jnp.float32)
  r = r.at[:, :, per_turn - 1].set(samples.rewards)
  return r.reshape(samples.mask.shape)


def _mix32(h):
  """A 32-bit integer finaliser (the murmur3 `fmix32` constants), uint32 -> uint32."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def history_ids(actions: jax.Array, active: jax.Array) -> jax.Array:
  """[B, H] int32 hash of the action history before each turn (-1 after the end).

  h_0 = 0 for the empty history, h_{t+1} = mix(31 h_t + a_t + 1); rows of one
  task with equal h_t took the same actions so far (up to 32-bit hash collisions).
  """

  def body(h, a):
    nxt = _mix32(h * jnp.uint32(31) + a.astype(jnp.uint32) + jnp.uint32(1))
    return nxt, h

  h0 = jnp.zeros(actions.shape[:1], jnp.uint32)
  _, hs = jax.lax.scan(body, h0, jnp.swapaxes(jnp.maximum(actions, 0), 0, 1))
  hs = jax.lax.bitcast_convert_type(jnp.swapaxes(hs, 0, 1), jnp.int32) & jnp.int32(0x7FFFFFFF)
  return jnp.where(active, hs, -1)


def _groups(ctx):
  b = ctx.samples.mask.shape[0]
  g = ctx.group_size
  return dict(
    group_ids=jnp.arange(b, dtype=jnp.int32) // g, num_groups=b // g, groups_contiguous=True
  )


PROVIDERS: Dict[str, Callable] = {
  'group_ids': _groups,
  'step_ids': lambda ctx: dict(step_ids=step_ids(ctx.samples)),
  'step_rewards': lambda ctx: dict(step_rewards=ctx.samples.rewards),
  'anchor_ids': lambda ctx: dict(anchor_ids=ctx.samples.anchors),
  'history_ids': lambda ctx: dict(history_ids=history_ids(ctx.samples.actions, ctx.samples.active)),
  'log_probs': lambda ctx: dict(log_probs=ctx.log_probs),
}


def trajectory(ctx: Context, estimator, providers: Optional[Dict[str, Callable]] = None):
  """The `Trajectory` with exactly the fields in `estimator.requires` (ValueError if unprovided)."""
  table = dict(PROVIDERS, **(providers or {}))
  need = [f for f in estimator.requires if f not in ('rewards', 'mask')]
  lacking = [f for f in need if f not in table]
  if lacking:
    raise ValueError(
      f'Estimator {estimator.name!r} requires Trajectory field(s) {lacking} that no multi-turn '
      f'provider fills; pass providers={{name: fn(ctx) -> dict}} (built-in: {sorted(PROVIDERS)}).'
    )
  kwargs = {}
  for name in need:
    kwargs.update(table[name](ctx))
  traj = types.Trajectory(rewards=token_rewards(ctx.samples), mask=ctx.samples.mask)
  return traj.replace(**kwargs)


# ----------------------------------------------------------------------------- learner


def make_ppo_loss(
  policy: transformer.Policy,
  env: token_env.TokenEnv,
  *,
  temperature=1.0,
  clip_eps: float = 0.2,
  agg_mode: str = 'token_mean',
  ent_coef: float = 0.0,
) -> Callable:
  """Returns loss_fn(params, rb: Rollout) -> (loss, aux): PPO-clip over action tokens."""
  aggregation.check_agg_mode(agg_mode)

  def loss_fn(params, rb: rollout_lib.Rollout):
    logp, ent = action_log_probs(
      policy, params, rb.tokens, rb.valid, env.prompt_len, env.action_ids, temperature
    )
    return losses.ppo_objective(
      jnp.where(rb.mask, logp, 0.0),
      rb.old_log_probs,
      rb.advantages,
      rb.mask,
      clip_eps=clip_eps,
      agg_mode=agg_mode,
      entropy=jnp.where(rb.mask, ent, 0.0),
      ent_coef=ent_coef,
    )

  return loss_fn


class Batch(NamedTuple):
  """What an iteration computed, for diagnostics: samples, trajectory, advantages [B, N]."""

  samples: Samples
  traj: types.Trajectory
  advantages: jax.Array


def make_update(
  policy: transformer.Policy,
  env: token_env.TokenEnv,
  estimator,
  tx: optax.GradientTransformation,
  *,
  group_size: int,
  num_epochs: int = 1,
  num_minibatches: int = 1,
  temperature: float = 1.0,
  clip_eps: float = 0.2,
  agg_mode: str = 'token_mean',
  ent_coef: float = 0.0,
  providers: Optional[Dict[str, Callable]] = None,
) -> Callable:
  """Returns update(state, tasks, key, hparams=None) -> (state, metrics, Batch).

  `state` is `learner.init_from_params(params, tx)`; `tasks` a [P, ...] pytree of the
  env's tasks; `hparams` the estimator's hyper-parameters (traced). Metrics:
  success (mean return), turns, the PPO terms, grad_norm, params_finite.
  """
  if 'group_ids' in estimator.requires and group_size < 2:
    raise ValueError(f'Estimator {estimator.name!r} needs group_size >= 2; got {group_size}.')
  loss_fn = make_ppo_loss(
    policy, env, temperature=temperature, clip_eps=clip_eps, agg_mode=agg_mode, ent_coef=ent_coef
  )
  grad_step = train_lib.make_gradient_step(loss_fn, tx)

  def update(state, tasks, key, hparams=None):
    k_roll, k_epoch = jax.random.split(key)
    params = state['params']
    s = rollout(policy, params, k_roll, env, tasks, group_size=group_size, temperature=temperature)
    old, _ = action_log_probs(
      policy, params, s.tokens, s.valid, env.prompt_len, env.action_ids, temperature
    )
    old = jax.lax.stop_gradient(jnp.where(s.mask, old, 0.0))
    traj = trajectory(Context(s, group_size, old), estimator, providers)
    targets = estimator(traj, hparams)
    adv = jax.lax.stop_gradient(jnp.where(s.mask, targets.advantages, 0.0))
    zeros = jnp.zeros_like(old)
    rb = rollout_lib.Rollout(s.tokens, s.valid, s.mask, old, zeros, zeros, adv, zeros)
    (new_params, opt_state), m = train_lib.minibatch_epochs(
      grad_step,
      (params, state['opt_state']),
      rb,
      k_epoch,
      num_epochs=num_epochs,
      num_minibatches=num_minibatches,
    )
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_params)]))
    metrics = {k: jnp.mean(v) for k, v in m.items()}
    metrics.update(
      success=jnp.mean(s.returns),
      turns=jnp.mean(s.lengths.astype(jnp.float32)),
      adv_abs_mean=ops.masked_mean(jnp.abs(adv), s.mask),
      params_finite=finite.astype(jnp.float32),
    )
    new_state = dict(state, step=state['step'] + 1, params=new_params, opt_state=opt_state)
    return new_state, metrics, Batch(s, traj, adv)

  return update
