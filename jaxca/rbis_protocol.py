"""The RBIS paper's tabular control protocol: online off-policy control with per-start traces.

The pure, vmappable pieces of the RBIS control protocol (Daley et al., ICML 2023;
arXiv 2301.11321): epsilon-greedy behaviour and target policies recomputed from the live
Q every step, expected-SARSA TD errors, online updates
`Q(S_k, A_k) += alpha * gamma^(t-k) beta_{k,t} delta_t` for every start time k of the
current episode through `jaxca.credit.traces`, Q snapshots at episode ends and evaluation
episodes on those snapshots, plus the official curve smoothing. Nothing here is jitted;
`experiments/rbis_gridworld.py` vmaps and jits the trial functions.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxca.credit import traces
from jaxca.envs import gridworld


class Trial(NamedTuple):
  """Per-trial state (one vmapped lane); shapes are per trial.

  Attributes:
    q: float32 `[S, A]` live action values.
    state: int32 current training state.
    episodes: int32 completed training episodes.
    finished: bool, the official stopping rule fired (later steps are not recorded).
    trace: `traces.TraceState` of `[H]` per-start-time traces (circular, slot t % H).
    sa: int32 `[H]` flat index `s * A + a` of each slot's start pair.
    eval_state: int32 state of the persistent evaluation env.
    snap_q: float32 `[E + 1, S, A]` Q after each episode end of this chunk (last: dump).
    snap_x: int32 `[E + 1]` the step index of each snapshot.
    num_snaps: int32 snapshots taken this chunk.
  """

  q: jax.Array
  state: jax.Array
  episodes: jax.Array
  finished: jax.Array
  trace: traces.TraceState
  sa: jax.Array
  eval_state: jax.Array
  snap_q: jax.Array
  snap_x: jax.Array
  num_snaps: jax.Array


def epsilon_greedy_probs(q_row, eps):
  """epsilon-greedy probabilities with argmax ties split uniformly. q_row: `[A]`."""
  is_max = q_row == jnp.max(q_row, axis=-1, keepdims=True)
  greedy = is_max / jnp.sum(is_max, axis=-1, keepdims=True)
  return eps / q_row.shape[-1] + (1.0 - eps) * greedy


def sample_categorical(u, probs):
  """Inverse-CDF sample of `probs` `[A]` with a uniform `u` in [0, 1)."""
  cdf = jnp.cumsum(probs[:-1])
  return jnp.sum(u >= cdf).astype(jnp.int32)


def max_snapshots(chunk_steps: int, min_episode_len: int) -> int:
  """Most snapshots one chunk can take: episode ends >= min_episode_len apart + the cap."""
  return (chunk_steps - 1) // min_episode_len + 2


def make_trial_fns(env: gridworld.Gridworld, config, method: str):
  """Builds (init, chunk) for one method; both act on one trial (vmap them)."""
  num_states, num_actions = env.num_states, env.num_actions
  window = config.window
  gamma = config.gamma
  last_step = config.timesteps + config.max_episode_len + 1  # official hard cap
  min_len = gridworld.shortest_path_length(env) + 1
  num_slots = max_snapshots(config.chunk_steps, min_len)
  eval_len = config.max_episode_len + 1

  def init(key, lambda_, alpha):
    del lambda_, alpha
    q_key, _, _ = jax.random.split(key, 3)
    q = config.q_init_std * jax.random.normal(q_key, (num_states, num_actions), jnp.float32)
    return Trial(
      q=q,
      state=gridworld.reset(env),
      episodes=jnp.zeros((), jnp.int32),
      finished=jnp.zeros((), bool),
      trace=traces.empty(window),
      sa=jnp.zeros((window,), jnp.int32),
      eval_state=gridworld.reset(env),
      snap_q=jnp.zeros((num_slots + 1, num_states, num_actions), jnp.float32),
      snap_x=jnp.zeros((num_slots + 1,), jnp.int32),
      num_snaps=jnp.zeros((), jnp.int32),
    )

  def train_step(trial: Trial, t, u, lambda_, alpha):
    q, s = trial.q, trial.state
    eps_b = jnp.where(
      trial.episodes < config.explore_episodes, config.explore_eps, config.behaviour_eps
    )
    q_s = q[s]
    mu = epsilon_greedy_probs(q_s, eps_b)
    pi = epsilon_greedy_probs(q_s, config.target_eps)
    a = sample_categorical(u, mu)
    log_rho = jnp.log(pi[a]) - jnp.log(mu[a])
    s2, r, term = gridworld.step(env, s, a)
    q_s2 = q[s2]
    v2 = jnp.sum(epsilon_greedy_probs(q_s2, config.target_eps) * q_s2)
    delta = r + jnp.where(term, 0.0, gamma * v2) - q_s[a]

    slot = t % window
    trace, weights = traces.step(trial.trace, slot, log_rho, lambda_, gamma, method)
    sa = jax.lax.dynamic_update_index_in_dim(trial.sa, s * num_actions + a, slot, 0)
    q = q.reshape(-1).at[sa].add(alpha * delta * weights).reshape(q.shape)

    capped = t >= last_step
    record = ~trial.finished & (term | capped)
    finished = trial.finished | (term & (t > config.timesteps)) | capped
    index = jnp.where(record, trial.num_snaps, num_slots)  # slot num_slots is a dump
    snap_q = jax.lax.dynamic_update_index_in_dim(trial.snap_q, q, index, 0)
    snap_x = jax.lax.dynamic_update_index_in_dim(trial.snap_x, t, index, 0)
    return Trial(
      q=q,
      state=jnp.where(term, gridworld.reset(env), s2),
      episodes=trial.episodes + term,
      finished=finished,
      trace=traces.clear(trace, term),
      sa=sa,
      eval_state=trial.eval_state,
      snap_q=snap_q,
      snap_x=snap_x,
      num_snaps=trial.num_snaps + record,
    )

  def eval_episode(q, s0, key):
    """One evaluation episode from s0; returns (discounted return, final env state)."""
    us = jax.random.uniform(key, (eval_len,))

    def body(carry, u):
      s, done, ret, disc = carry
      a = sample_categorical(u, epsilon_greedy_probs(q[s], config.eval_eps))
      s2, r, term = gridworld.step(env, s, a)
      ret = ret + jnp.where(done, 0.0, disc * r)
      s = jnp.where(done, s, jnp.where(term, gridworld.reset(env), s2))
      return (s, done | term, ret, disc * gamma), None

    init = (s0, jnp.zeros((), bool), jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32))
    (s, _, ret, _), _ = jax.lax.scan(body, init, us)
    return ret, s

  def chunk(trial: Trial, t0, key, lambda_, alpha):
    """`chunk_steps` training steps from step t0, then the evaluations of their episodes.

    Returns (trial, (x [E], y [E], valid [E])) with the step index, evaluation return and
    validity of each snapshot slot.
    """
    _, act_key, eval_key = jax.random.split(key, 3)
    trial = trial._replace(num_snaps=jnp.zeros((), jnp.int32))
    episodes0 = trial.episodes  # includes the cap record's index if any; see below

    def body(trial, t):
      u = jax.random.uniform(jax.random.fold_in(act_key, t))
      return train_step(trial, t, u, lambda_, alpha), None

    trial, _ = jax.lax.scan(body, trial, t0 + jnp.arange(config.chunk_steps))

    def eval_body(eval_state, i):
      valid = i < trial.num_snaps
      # Evaluation i of this chunk follows training episode episodes0 + i (0-based).
      ret, s = eval_episode(
        trial.snap_q[i], eval_state, jax.random.fold_in(eval_key, episodes0 + i)
      )
      return jnp.where(valid, s, eval_state), (jnp.where(valid, ret, 0.0), valid)

    eval_state, (ys, valid) = jax.lax.scan(eval_body, trial.eval_state, jnp.arange(num_slots))
    xs = trial.snap_x[:num_slots]
    return trial._replace(eval_state=eval_state), (xs, ys, valid)

  return init, chunk


def smoothed_curve(xs, ys, count, timesteps: int, window: int):
  """Official `smooth` + `linear_interpolation` of one trial's evaluation points.

  Args:
    xs: int32 `[M]` step index of each point (xs[0] = 0, strictly increasing for the
      first `count` entries; the last valid one > timesteps).
    ys: float32 `[M]` evaluation returns (ys[0] = 0.0).
    count: int32, number of valid points.
    timesteps: the curve covers steps 0..timesteps.
    window: moving-average window (points).

  Returns:
    float32 `[timesteps + 1]` curve.
  """
  m = xs.shape[-1]
  idx = jnp.arange(m)
  valid = idx < count
  ys = jnp.where(valid, ys, 0.0)
  csum = jnp.cumsum(ys)
  lagged = jnp.where(idx >= window, jnp.roll(csum, window), 0.0)
  smooth = (csum - lagged) / jnp.minimum(idx + 1, window)
  big = jnp.iinfo(jnp.int32).max
  xs = jnp.where(valid, xs, big)
  grid = jnp.arange(timesteps + 1)
  seg = jnp.searchsorted(xs, grid, side='right') - 1  # xs[seg] <= x < xs[seg + 1]
  x1, x2 = xs[seg], xs[seg + 1]
  y1, y2 = smooth[seg], smooth[seg + 1]
  dx = x2 - x1
  frac = (grid - x1) / jnp.maximum(dx - 1, 1)
  return jnp.where(dx > 1, y1 + (y2 - y1) * frac, y1).astype(jnp.float32)
