"""Vectorised gymnax rollouts with auto-reset and correct time-limit handling.

A rollout steps `num_envs` copies of a gymnax (>= 1.0) environment for
`num_steps` steps with `lax.scan` (time-major inside the scan) and returns a
batch-major `Trajectory` (`[B, T]`, B = num_envs; one swap at the boundary).
The environment carry (`EnvCarry`) persists between calls, so episodes run
across rollout segments, as in PureJaxRL.

Time alignment: index t is the transition (s_t, a_t, r_t, s_{t+1}).

Termination vs truncation (gymnax 1.0.1 `Environment.step` returns
`(obs, state, reward, terminated, truncated, info)`, auto-resets when either
flag is set, and keeps the pre-reset observation in `info['final_observation']`;
`truncated` is `state.time >= max_steps_in_episode` and can be True together
with `terminated`):

  * `discounts[t] = gamma * (1 - terminated[t])`: a true terminal never bootstraps.
  * `truncated[t]` is True only for time-limit ends that are *not* terminal. The
    value of the true final observation, `final_values[t] = V(final_obs_t)`, is
    recorded (for every step; it is only used where `truncated`).
  * `td_inputs(traj)` folds the bootstrap into the reward and cuts the trace:
        rewards'[t]   = r_t + discounts[t] * V(final_obs_t)   where truncated[t]
        discounts'[t] = 0                                     where truncated[t]
    so GAE gives delta_t = r_t + gamma V(final_obs_t) - V(s_t) at a truncated
    step, and nothing after the boundary leaks into the advantage before it.
    PureJaxRL instead uses `done = terminated | truncated`, i.e. delta_t =
    r_t - V(s_t) at a time-limit end (it treats the time limit as a terminal).
"""

from typing import Any
from typing import Callable
from typing import Tuple

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class EnvCarry:
  """Environment state persisting between rollouts ([B] = num_envs leading axis).

  Attributes:
    obs: [B, D] float32; current (flattened) observation s_t.
    env_state: gymnax env state pytree with leading axis B.
    episode_return: [B] float32; return of the running episode so far.
    episode_length: [B] int32; length of the running episode so far.
    last_return: [B] float32; return of the last finished episode (0 before any).
    last_length: [B] int32; length of the last finished episode (0 before any).
  """

  obs: jax.Array
  env_state: Any
  episode_return: jax.Array
  episode_length: jax.Array
  last_return: jax.Array
  last_length: jax.Array


@flax.struct.dataclass
class Trajectory:
  """One rollout segment, batch-major: every `[B, T]` array is indexed by transition t.

  Attributes:
    obs: [B, T, D] float32; s_t (flattened).
    actions: [B, T] int32; a_t.
    log_probs: [B, T] float32; log pi_old(a_t | s_t) at sampling time.
    values: [B, T] float32; V(s_t) at sampling time.
    rewards: [B, T] float32; raw environment reward r_t.
    discounts: [B, T] float32; gamma * (1 - terminated_t).
    truncated: [B, T] bool; time-limit end that is not a termination.
    final_values: [B, T] float32; V of the true (pre-reset) next observation.
    dones: [B, T] bool; an episode ended at t (terminated or truncated).
    episode_returns: [B, T] float32; return of the episode that ended at t, else 0.
    mask: [B, T] bool; True where the policy acted (all True here).
    bootstrap_value: [B] float32; V(s_T), the value of the observation after the segment.
  """

  obs: jax.Array
  actions: jax.Array
  log_probs: jax.Array
  values: jax.Array
  rewards: jax.Array
  discounts: jax.Array
  truncated: jax.Array
  final_values: jax.Array
  dones: jax.Array
  episode_returns: jax.Array
  mask: jax.Array
  bootstrap_value: jax.Array


def log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
  """log pi(a | s) from logits [..., A] and int actions [...] (float32).

  A one-hot select-and-sum rather than `take_along_axis`, so it stays an
  elementwise, fusable op (no gather) under the seed vmap.
  """
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.sum(
    jnp.where(jax.nn.one_hot(actions, logits.shape[-1], dtype=jnp.bool_), log_p, 0.0), -1
  )


def _flat(obs: jax.Array, batch_ndim: int) -> jax.Array:
  return obs.reshape(obs.shape[:batch_ndim] + (-1,)).astype(jnp.float32)


def make_reset(env, env_params, *, num_envs: int) -> Callable[[jax.Array], EnvCarry]:
  """Returns reset(key) -> EnvCarry for `num_envs` fresh episodes. Pure."""

  def reset(key):
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
      jax.random.split(key, num_envs), env_params
    )
    zeros_f = jnp.zeros((num_envs,), jnp.float32)
    zeros_i = jnp.zeros((num_envs,), jnp.int32)
    return EnvCarry(_flat(obs, 1), env_state, zeros_f, zeros_i, zeros_f, zeros_i)

  return reset


def _plain_gymnax_step(env) -> bool:
  """True if `env` uses gymnax's own `Environment.step` (step_env + auto-reset)."""
  from gymnax.environments import environment  # pylint: disable=g-import-not-at-top

  return getattr(type(env), 'step', None) is environment.Environment.step


def _split_pairs(keys: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """`jax.random.split(k)` for every key of a [T, B] key array: ([T, B], [T, B])."""
  pairs = jax.vmap(jax.vmap(jax.random.split))(keys)
  return pairs[:, :, 0], pairs[:, :, 1]


def _step_with_reset(env, env_params, step_keys, state, action, reset):
  """gymnax 1.0 `Environment.step` for B envs, with the reset state drawn beforehand.

  `step_keys` are the first halves of `split(key)` of each env's step key, `reset` the
  `reset_env(second half)` (obs, state); the selection is gymnax's, so the result equals
  `vmap(env.step)` (to float rounding of the fused dynamics).
  """
  obs_st, state_st, reward, terminated, info = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(
    step_keys, state, action, env_params
  )
  truncated = jax.vmap(env.is_truncated, in_axes=(0, None))(state_st, env_params)
  done = jnp.logical_or(terminated, truncated)

  def pick(reset_leaf, step_leaf):
    return jnp.where(done.reshape(done.shape + (1,) * (step_leaf.ndim - 1)), reset_leaf, step_leaf)

  obs_re, state_re = reset
  info = {**info, 'terminated': terminated, 'truncated': truncated, 'final_observation': obs_st}
  return (
    jax.tree.map(pick, obs_re, obs_st),
    jax.tree.map(pick, state_re, state_st),
    reward,
    terminated,
    truncated,
    info,
  )


def make_rollout(
  env,
  env_params,
  apply_fn: Callable[[Any, jax.Array], Tuple[jax.Array, jax.Array]],
  *,
  num_envs: int,
  num_steps: int,
  gamma: float,
  predraw_resets: bool = True,
) -> Callable[[Any, EnvCarry, jax.Array], Tuple[EnvCarry, Trajectory]]:
  """Builds a pure rollout for a discrete-action gymnax environment.

  Args:
    env, env_params: a gymnax >= 1.0 environment (6-value `step`) and its params.
    apply_fn: apply(params, obs [N, D]) -> (logits [N, A], values [N]).
    num_envs: B, environments stepped in parallel (static).
    num_steps: T, steps per segment (static).
    gamma: discount factor (traceable).
    predraw_resets: draw the auto-reset states of all T x B steps in one batched call
      before the time loop instead of inside every step (gymnax's `step` resets every
      env at every step and keeps the reset only where the episode ended; on CPU each
      draw is a rolled threefry loop inside the scan). The trajectory equals stepping
      with `env.step`: bit for bit on CartPole, to float rounding where XLA fuses longer
      dynamics differently (Acrobot, <= 2.4e-7; tested); the reset states of a segment are held in
      memory (T x B states). Ignored for environments that override `step`.

  Returns:
    rollout(params, carry, key) -> (carry, Trajectory with [B, T] leaves).
  """
  predraw = predraw_resets and _plain_gymnax_step(env)

  def rollout(params, carry: EnvCarry, key: jax.Array):
    keys = jax.random.split(key, (num_steps, 2))
    env_keys = jax.vmap(lambda k: jax.random.split(k, num_envs))(keys[:, 1])

    if predraw:
      step_keys, reset_keys = _split_pairs(env_keys)
      resets = jax.vmap(
        jax.vmap(env.reset_env, in_axes=(0, None)), in_axes=(0, None)
      )(reset_keys, env_params)  # fmt: skip
      xs = (keys[:, 0], step_keys, resets)
    else:
      xs = (keys[:, 0], env_keys, None)

    def step(c: EnvCarry, xs):
      act_key, env_key, reset = xs
      logits, value = apply_fn(params, c.obs)
      action = jax.random.categorical(act_key, logits).astype(jnp.int32)
      logp = log_prob(logits, action)
      if predraw:
        obs, env_state, reward, terminated, truncated, info = _step_with_reset(
          env, env_params, env_key, c.env_state, action, reset
        )
      else:
        obs, env_state, reward, terminated, truncated, info = jax.vmap(
          env.step, in_axes=(0, 0, 0, None)
        )(env_key, c.env_state, action, env_params)
      reward = reward.astype(jnp.float32)
      done = jnp.logical_or(terminated, truncated)
      ep_ret = c.episode_return + reward
      ep_len = c.episode_length + 1
      new = EnvCarry(
        obs=_flat(obs, 1),
        env_state=env_state,
        episode_return=jnp.where(done, 0.0, ep_ret),
        episode_length=jnp.where(done, 0, ep_len),
        last_return=jnp.where(done, ep_ret, c.last_return),
        last_length=jnp.where(done, ep_len, c.last_length),
      )
      record = dict(
        obs=c.obs,
        actions=action,
        log_probs=logp,
        values=value,
        rewards=reward,
        discounts=gamma * (1.0 - terminated.astype(jnp.float32)),
        truncated=jnp.logical_and(truncated, jnp.logical_not(terminated)),
        final_obs=_flat(info['final_observation'], 1),
        dones=done,
        episode_returns=jnp.where(done, ep_ret, 0.0),
      )
      return new, record

    carry, rec = jax.lax.scan(step, carry, xs)
    # One batched pass for V(true final obs) and V(s_T), outside the time loop.
    final_obs = rec.pop('final_obs')
    num_steps_, num_envs_, dim = final_obs.shape
    _, final_values = apply_fn(params, final_obs.reshape(num_steps_ * num_envs_, dim))
    rec['final_values'] = final_values.reshape(num_steps_, num_envs_)
    _, bootstrap_value = apply_fn(params, carry.obs)
    rec = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rec)  # [T, B] -> [B, T]
    traj = Trajectory(
      **rec, mask=jnp.ones(rec['rewards'].shape, jnp.bool_), bootstrap_value=bootstrap_value
    )
    return carry, traj

  return rollout


def td_inputs(traj: Trajectory) -> Tuple[jax.Array, jax.Array]:
  """Rewards and discounts for a GAE/TD kernel with time-limit bootstrapping.

  At truncated steps the value of the true final observation is folded into
  the reward and the discount is set to 0 (the trace is cut, the value is not):
    rewards'[t] = r_t + discounts[t] * final_values[t],  discounts'[t] = 0.
  Elsewhere both are unchanged. `final_values` carries no gradient.

  Args:
    traj: a `Trajectory` ([B, T] leaves).

  Returns:
    (rewards [B, T] float32, discounts [B, T] float32).
  """
  bonus = traj.discounts * jax.lax.stop_gradient(traj.final_values)
  rewards = jnp.where(traj.truncated, traj.rewards + bonus, traj.rewards)
  discounts = jnp.where(traj.truncated, 0.0, traj.discounts)
  return rewards, discounts


def check_discrete(env, env_params) -> int:
  """Returns the number of actions; fails clearly for non-discrete action spaces."""
  space = env.action_space(env_params)
  num = getattr(space, 'n', None)
  if num is None or type(space).__name__ != 'Discrete':
    raise ValueError(
      f'{env.name}: only discrete action spaces are supported; got {type(space).__name__}.'
    )
  return int(num)


def make_env(name: str, *, max_steps_in_episode: int = 0):
  """gymnax.make with a clear error and an optional time-limit override.

  Args:
    name: a gymnax environment id; unknown ids fail with `gymnax.registered_envs`.
    max_steps_in_episode: time limit override; 0 keeps the environment default.

  Returns:
    (env, env_params, num_actions); non-discrete action spaces are rejected.
  """
  import gymnax  # pylint: disable=g-import-not-at-top  (optional dependency of jaxca)

  if name not in gymnax.registered_envs:
    raise ValueError(f'Unknown gymnax env {name!r}; choose from {list(gymnax.registered_envs)}.')
  env, env_params = gymnax.make(name)
  if max_steps_in_episode:
    env_params = env_params.replace(max_steps_in_episode=int(max_steps_in_episode))
  return env, env_params, check_discrete(env, env_params)
