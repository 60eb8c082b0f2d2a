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

The learner is the single-turn one (`learner.make_rl_phases` / `make_rl_update`) with
two seams handed in: `make_collect` (this rollout, old and reference log-probs from
`make_score_fn`, one row per episode with each turn's reward on its action token, and
the provider overrides `PROVIDERS`: `step_ids` = `turn_ids` = turn index, `step_rewards` =
`turn_rewards` = per-turn rewards, `agent_ids` = 0, `anchor_ids` = the env's anchor at the
start of each turn, `history_ids`, `entropies` of the action distribution) and
`make_score_fn` (teacher-forced log-probs of the action-masked distribution). So every
objective, KL option, value head or critic and DAPO option applies here too. Nothing here is jitted.
"""

from typing import Callable
from typing import Dict
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca.envs import token_env
from jaxca.lm import rollout as rollout_lib
from jaxca.networks import transformer


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
    scaled = _action_logits(logits, action_ids, temperature)
    if greedy:
      action = jnp.argmax(scaled, axis=-1)
    else:
      action = jax.random.categorical(key, scaled, axis=-1)
    action = action.astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(scaled), action[:, None], axis=-1)[:, 0]
    states, next_obs, done_next, feed, feed_valid, ys = _env_turn(
      env, states, obs, done, action, logp
    )
    out, cache = forward(feed, feed_valid, cache)
    return (cache, out.logits[:, -1], states, next_obs, done_next), ys

  done0 = jnp.zeros((batch,), jnp.bool_)
  _, ys = jax.lax.scan(turn, (cache, logits, states, obs, done0), jax.random.split(key, horizon))
  return _assemble(rep(prompts), ys, obs_len)


def _assemble(prompts, ys, obs_len) -> Samples:
  """`Samples` from the prompts [B, Lp] and a turn scan's outputs `ys` ([H, B, ...] each)."""
  batch, prompt_len = prompts.shape
  horizon, per_turn = ys['alive'].shape[0], obs_len + 1
  t_major = lambda x: jnp.swapaxes(x, 0, 1)  # [H, B, ...] -> [B, H, ...]
  alive = t_major(ys['alive'])  # [B, H]
  response = t_major(ys['block']).reshape(batch, horizon * per_turn)
  resp_valid = jnp.repeat(alive, per_turn, axis=1)
  is_action = jnp.tile(jnp.arange(per_turn) == obs_len, horizon)[None, :]
  mask = resp_valid & is_action
  log_probs = jnp.zeros((batch, horizon, per_turn), jnp.float32)
  log_probs = log_probs.at[:, :, obs_len].set(t_major(ys['logp'])).reshape(batch, -1)
  return Samples(
    tokens=jnp.concatenate([prompts, response], axis=1),
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


def _env_turn(env, states, obs, done, action, logp):
  """One env turn of B rows: (states, next_obs, done_next, feed [B, K], feed_valid, ys)."""
  batch, obs_len = obs.shape
  alive = ~done
  anchor = jax.vmap(env.anchor)(states)
  new, reward, ended = jax.vmap(env.step)(states, action)
  states = jax.tree.map(lambda a, b: jnp.where(_bcast(alive, a), a, b), new, states)
  ended = alive & ended
  done_next = done | ended
  next_obs = jax.vmap(env.observe)(states)
  token = jnp.where(alive, jnp.asarray(env.action_ids, jnp.int32)[action], env.pad_id)
  feed = jnp.concatenate([token[:, None], next_obs], axis=1)
  feed_valid = jnp.concatenate(
    [alive[:, None], jnp.broadcast_to(~done_next[:, None], (batch, obs_len))], axis=1
  )
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
  return states, next_obs, done_next, feed, feed_valid, ys


def scripted_rollout(
  env: token_env.TokenEnv, key: jax.Array, tasks, act: Callable, *, group_size: int = 1
) -> Samples:
  """`rollout`'s episodes and token layout with a scripted policy instead of a language policy.

  For demonstrations (supervised warm starts with `make_sft_loss`). `act(states, turn, key)
  -> [B] int32` picks each row's action index into `env.action_ids` from the batched env
  states, the turn index and a PRNG key (e.g. `jaxca.envs.keydoor.noisy_bfs_policy`).
  `log_probs` are 0. Same arguments and output as `rollout` otherwise.
  """
  if not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f'`group_size` must be a positive int; got {group_size!r}.')
  rep = lambda x: jnp.repeat(x, group_size, axis=0)  # noqa: E731
  prompts = rep(jax.vmap(env.prompt)(tasks).astype(jnp.int32))
  states = jax.vmap(env.reset)(jax.tree.map(rep, tasks))
  obs = jax.vmap(env.observe)(states)
  batch = prompts.shape[0]

  def turn(carry, xs):
    states, obs, done = carry
    t, k = xs
    action = act(states, t, k).astype(jnp.int32)
    states, obs, done, _, _, ys = _env_turn(env, states, obs, done, action, jnp.zeros((batch,)))
    return (states, obs, done), ys

  horizon = int(env.horizon)
  xs = (jnp.arange(horizon), jax.random.split(key, horizon))
  _, ys = jax.lax.scan(turn, (states, obs, jnp.zeros((batch,), jnp.bool_)), xs)
  return _assemble(prompts, ys, int(env.obs_len))


def _action_scores(logits, tokens, prompt_len, action_ids, temperature):
  """Log-probs and entropies [B, N] of the masked action distribution at the response columns."""
  scaled = _action_logits(logits[:, prompt_len - 1 : -1], action_ids, temperature)  # [B, N, A]
  logp_all = jax.nn.log_softmax(scaled)
  targets = tokens[:, prompt_len:]
  index = jnp.argmax(targets[..., None] == jnp.asarray(action_ids)[None, None, :], axis=-1)
  logp = jnp.take_along_axis(logp_all, index[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy


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
  logits = policy.apply(params, tokens, valid).logits
  return _action_scores(logits, tokens, prompt_len, action_ids, temperature)


def make_score_fn(policy: transformer.Policy, env: token_env.TokenEnv, temperature=1.0):
  """The multi-turn score: score(params, tokens, valid) -> (log_probs, entropies, values).

  `action_log_probs` (the action-masked distribution at `temperature`) and the value head's
  values [B, N] at the response columns (None without a value head), from one pass; the
  learner's `score_fn` seam (`learner.make_rl_phases`).
  """
  lp = int(env.prompt_len)

  def score(params, tokens, valid):
    out = policy.apply(params, tokens, valid)
    logp, entropy = _action_scores(out.logits, tokens, lp, env.action_ids, temperature)
    values = None if out.values is None else transformer.response_values(out.values, lp)
    return logp, entropy, values

  return score


def make_sft_loss(policy: transformer.Policy, env: token_env.TokenEnv) -> Callable:
  """Returns loss_fn(params, batch) -> (loss, aux): behaviour cloning on the action tokens.

  `batch` = dict(tokens [B, L], valid [B, L], mask [B, N]) in `rollout`'s layout (e.g. a
  `scripted_rollout` of demonstrations). The loss is the mean over action tokens (`mask`)
  of the cross-entropy of the action-masked distribution (`action_log_probs` at T=1, the
  one the RL learner samples and scores); observation tokens carry no loss. `aux` holds
  `action_accuracy` (the argmax action equals the demonstrated one).
  """
  lp = int(env.prompt_len)

  def loss_fn(params, batch):
    tokens, valid, mask = batch['tokens'], batch['valid'], batch['mask']
    logits = policy.apply(params, tokens, valid).logits
    logp, _ = _action_scores(logits, tokens, lp, env.action_ids, 1.0)
    scaled = _action_logits(logits[:, lp - 1 : -1], env.action_ids, 1.0)
    best = jnp.take(jnp.asarray(env.action_ids), jnp.argmax(scaled, axis=-1))
    hit = (best == tokens[:, lp:]).astype(jnp.float32)
    aux = dict(action_accuracy=ops.masked_mean(hit, mask))
    return ops.masked_mean(-logp, mask), jax.lax.stop_gradient(aux)

  return loss_fn


# ----------------------------------------------------------------------------- providers


class Turns(NamedTuple):
  """What a multi-turn rollout adds to `RolloutData.extras` ([B, H] per turn, [B, N] per token).

  Attributes:
    actions, anchors, active, rewards: as `Samples` ([B, H]).
    entropies: [B, N] float32 entropy of the old policy's action distribution (0 where masked).
  """

  actions: jax.Array
  anchors: jax.Array
  active: jax.Array
  rewards: jax.Array
  entropies: jax.Array

  @property
  def returns(self) -> jax.Array:
    """[B] float32 undiscounted episode return."""
    return jnp.sum(self.rewards, axis=-1)


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


def _turn_index(ctx):
  n, horizon = ctx.mask.shape[1], ctx.extras.active.shape[1]
  turn = jnp.repeat(jnp.arange(horizon, dtype=jnp.int32), n // horizon)[None, :]
  return jnp.where(ctx.mask, turn, -1).astype(jnp.int32)


# The multi-turn rollout's overrides of `providers.PROVIDERS` (`ctx.extras` is its `Turns`);
# groups, log-probs, values and reference log-probs come from the one table.
# `turn_ids` / `turn_rewards` are the same turns and per-turn rewards under the turn-level names
# (`estimators.turns`); `agent_ids` is 0 (one agent).
PROVIDERS: Dict[str, Callable] = {
  'step_ids': lambda ctx: dict(step_ids=_turn_index(ctx)),
  'turn_ids': lambda ctx: dict(turn_ids=_turn_index(ctx)),
  'turn_rewards': lambda ctx: dict(turn_rewards=ctx.extras.rewards),
  'agent_ids': lambda ctx: dict(agent_ids=jnp.zeros(ctx.mask.shape[:1], jnp.int32)),
  'step_rewards': lambda ctx: dict(step_rewards=ctx.extras.rewards),
  'anchor_ids': lambda ctx: dict(anchor_ids=ctx.extras.anchors),
  'history_ids': lambda ctx: dict(history_ids=history_ids(ctx.extras.actions, ctx.extras.active)),
  'entropies': lambda ctx: dict(entropies=ctx.extras.entropies),
}


# ----------------------------------------------------------------------------- the collect seam


def make_collect(
  policy: transformer.Policy,
  env: token_env.TokenEnv,
  *,
  group_size: int,
  temperature=1.0,
  score_fn: Optional[Callable] = None,
) -> rollout_lib.Collect:
  """The multi-turn `rollout_lib.Collect`: G episodes per task in the env, scored by `score_fn`.

  The batch is a [P, ...] pytree of the env's tasks. `rollout`, then one teacher-forced
  `score_fn` pass (default `make_score_fn(policy, env, temperature)`) for the old log-probs
  (and value-head values), one with `ref_params` when the learner needs the reference. Rows
  carry each turn's reward on its action token (`token_rewards`), `extras` the `Turns`.
  Statistics: success (mean return), turns (mean turns taken), adv_abs_mean. `lengths` are
  turns taken, so DAPO's overlong penalty (`reward_shaping.overlong_buffer`) counts turns
  against `env.horizon`.
  """
  score_fn = make_score_fn(policy, env, temperature) if score_fn is None else score_fn
  lp = int(env.prompt_len)

  def collect(params, ref_params, tasks, key, critic_params=None):
    del critic_params  # the learner adds a separate critic's values
    s = rollout(policy, params, key, env, tasks, group_size=group_size, temperature=temperature)
    old, entropy, values = score_fn(params, s.tokens, s.valid)
    old = jnp.where(s.mask, old, 0.0)
    if ref_params is not None:
      ref, _, _ = score_fn(ref_params, s.tokens, s.valid)
      ref = jnp.where(s.mask, ref, 0.0)
    else:
      ref = jnp.zeros_like(old)
    return rollout_lib.RolloutData(
      batch=jax.tree.map(lambda x: jnp.repeat(x, group_size, axis=0), tasks),
      tokens=s.tokens,
      valid=s.valid,
      responses=s.tokens[:, lp:],
      mask=s.mask,
      rewards=token_rewards(s),
      log_probs=old,
      ref_log_probs=ref,
      values=values,
      response_logits=None,
      lengths=s.lengths,
      key=jax.random.fold_in(key, 1),
      rollout_log_probs=s.log_probs,
      extras=Turns(s.actions, s.anchors, s.active, s.rewards, jnp.where(s.mask, entropy, 0.0)),
    )

  def stats(data, advantages):
    return dict(
      success=jnp.mean(data.extras.returns),
      turns=jnp.mean(data.lengths.astype(jnp.float32)),
      adv_abs_mean=ops.masked_mean(jnp.abs(advantages), data.mask),
    )

  # Lengths are turns: DAPO's overlong penalty counts turns against the horizon; responses
  # have no EOS token, so the overlong filter does not apply.
  return rollout_lib.Collect(collect, stats, PROVIDERS, int(env.horizon), None)
