"""ToolArith: a tool-integrated arithmetic task for the jitted multi-turn rollout (a `TokenEnv`).

A problem is a start value x0 and K operations (op_k, a_k) modulo M; its answer is
y = (((x0 op_1 a_1) op_2 a_2) ...) mod M. The policy may call a calculator: the action
`CALL(op, a)` applies `op a` to the tool's accumulator (which starts at x0) and the tool
replies with the observation `[RES, acc]`; with probability `error_rate` the call fails,
the reply is `[ERR, acc]` and the accumulator is unchanged. The action `ANS(d)` ends the
episode with reward 1 if d == y (0 otherwise); every call costs `call_cost` (reward -c on
its turn), so whether to call, or to answer from the prompt alone, matters (the trade-off
of AdaSearch between tool use and parametric knowledge). The reply tokens are observation
tokens of the rollout (`jaxca.lm.multiturn`): prefilled, never sampled, masked out of the
loss and in no turn (`turn_ids` -1), so they are transparent to credit.

The reference tool calls of a problem are (op_k, a_k), k = 1..K, in order: a call's fields
are its name (the op) and one argument slot (the operand), so MatchTIR's matching
(arXiv 2601.10712; `jaxca.credit.turns`) scores a call 1 (same op and operand), 2/3 (same
op) or 0. Tool failures are deterministic per (problem seed, call number): the G rollouts of
a problem see the same tool (a key folded from the seed, no randomness in `step`).

Tokens: the prompt is `[BOS, V(x0), (OP_k, V(a_k)) x K, SEP]`; observations are two tokens
(`[START, V(x0)]` at the first turn); actions are `CALL(op, a)` (n_ops * M tokens) and
`ANS(d)` (M tokens). Tasks are dicts of arrays (`x0`, `ops`, `operands`, `seed`), drawn on
the host by `make_splits` (train and test disjoint by problem). The state also carries the
reference calls and how many of them succeeded in order (`State.progress`, no effect on the
rewards or observations), which `noisy_reference_policy`, a noisy scripted demonstrator for
supervised warm starts, reads.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxca.credit import turns
from jaxca.envs import token_env

PAD, BOS, SEP, START, RES, ERR = range(6)
_FIRST_OP = 6
OPS = ('add', 'sub', 'mul')


class State(NamedTuple):
  acc: jax.Array  # [] int32 tool accumulator
  calls: jax.Array  # [] int32 calls made so far
  answer: jax.Array  # [] int32 the correct answer y
  seed: jax.Array  # [] int32 problem seed (tool failures)
  failed: jax.Array  # [] bool: the last call failed
  ref_ops: jax.Array  # [K] int32 the reference calls' ops (for scripted demonstrators)
  ref_operands: jax.Array  # [K] int32 the reference calls' operands
  progress: jax.Array  # [] int32 reference calls done in order (the next one succeeded)


def _apply(op_index, x, a, modulus, ops):
  out = x
  for i, name in enumerate(ops):
    val = {'add': x + a, 'sub': x - a, 'mul': x * a}[name]
    out = jnp.where(op_index == i, val, out)
  return jnp.mod(out, modulus).astype(jnp.int32)


class ToolArithEnv(token_env.TokenEnv):
  """ToolArith as a `TokenEnv` (see the module docstring). Build with `make`."""

  def __init__(self, num_steps=2, modulus=5, ops=('add', 'mul'), horizon=None, error_rate=0.0,
               call_cost=0.0):  # fmt: skip
    ops = tuple(ops)
    if not ops or any(o not in OPS for o in ops) or len(set(ops)) != len(ops):
      raise ValueError(f'`ops` must be distinct names from {OPS}; got {ops}.')
    if int(num_steps) < 1 or int(modulus) < 2:
      raise ValueError(f'`num_steps` >= 1 and `modulus` >= 2; got {num_steps}, {modulus}.')
    if not 0.0 <= float(error_rate) < 1.0 or float(call_cost) < 0.0:
      raise ValueError(f'`error_rate` in [0, 1), `call_cost` >= 0; got {error_rate}, {call_cost}.')
    self.num_steps, self.modulus, self.ops = int(num_steps), int(modulus), ops
    self.horizon = int(horizon) if horizon else self.num_steps + 2
    self.error_rate, self.call_cost = float(error_rate), float(call_cost)
    m, n_ops = self.modulus, len(ops)
    self.first_value = _FIRST_OP + n_ops
    self.first_call = self.first_value + m
    self.first_answer = self.first_call + n_ops * m
    self.vocab_size = self.first_answer + m
    self.pad_id = PAD
    self.prompt_len = 3 + 2 * self.num_steps
    self.obs_len = 2
    self.action_ids = tuple(range(self.first_call, self.vocab_size))
    self.num_calls = n_ops * m  # action indices [0, num_calls) are calls, the rest answers

  # ------------------------------------------------------------------ TokenEnv

  def prompt(self, task):
    v = self.first_value
    steps = jnp.stack([_FIRST_OP + task['ops'], v + task['operands']], axis=-1).reshape(-1)
    head = jnp.stack([jnp.int32(BOS), v + task['x0']])
    return jnp.concatenate([head, steps, jnp.asarray([SEP])]).astype(jnp.int32)

  def answer(self, task):
    acc = jnp.asarray(task['x0'], jnp.int32)
    for k in range(self.num_steps):
      acc = _apply(task['ops'][k], acc, task['operands'][k], self.modulus, self.ops)
    return acc

  def reset(self, task):
    x0 = jnp.asarray(task['x0'], jnp.int32)
    seed = jnp.asarray(task['seed'], jnp.int32)
    ops = jnp.asarray(task['ops'], jnp.int32)
    operands = jnp.asarray(task['operands'], jnp.int32)
    return State(x0, jnp.int32(0), self.answer(task), seed, jnp.zeros((), bool), ops, operands,
                 jnp.int32(0))  # fmt: skip

  def observe(self, state):
    kind = jnp.where(state.calls == 0, START, jnp.where(state.failed, ERR, RES))
    return jnp.stack([kind, self.first_value + state.acc]).astype(jnp.int32)

  def anchor(self, state):
    kind = jnp.where(state.calls == 0, 0, jnp.where(state.failed, 2, 1))
    return (kind * self.modulus + state.acc).astype(jnp.int32)

  def step(self, state, action):
    is_call = action < self.num_calls
    op, operand = action // self.modulus, action % self.modulus
    key = jax.random.fold_in(jax.random.key(0), state.seed)
    fail = jax.random.uniform(jax.random.fold_in(key, state.calls)) < self.error_rate
    new_acc = jnp.where(fail, state.acc, _apply(op, state.acc, operand, self.modulus, self.ops))
    correct = (~is_call) & (action - self.num_calls == state.answer)
    reward = jnp.where(is_call, -self.call_cost, correct.astype(jnp.float32))
    k = jnp.minimum(state.progress, self.num_steps - 1)
    next_ref = (state.progress < self.num_steps) & (op == state.ref_ops[k])
    next_ref &= operand == state.ref_operands[k]
    new = State(
      jnp.where(is_call, new_acc, state.acc),
      state.calls + is_call.astype(jnp.int32),
      state.answer,
      state.seed,
      is_call & fail,
      state.ref_ops,
      state.ref_operands,
      state.progress + (is_call & ~fail & next_ref).astype(jnp.int32),
    )
    return new, reward.astype(jnp.float32), ~is_call

  # ------------------------------------------------------------------ calls

  def predicted_calls(self, actions, active):
    """(names [..., H], args [..., H, 1], valid [..., H]) of the calls among `actions`."""
    valid = active & (actions >= 0) & (actions < self.num_calls)
    a = jnp.maximum(actions, 0)
    names = jnp.where(valid, a // self.modulus, -1).astype(jnp.int32)
    args = jnp.where(valid, a % self.modulus, -1).astype(jnp.int32)[..., None]
    return names, args, valid

  def reference_calls(self, tasks):
    """(names [..., K], args [..., K, 1]) of the problems' reference calls."""
    return jnp.asarray(tasks['ops'], jnp.int32), jnp.asarray(tasks['operands'], jnp.int32)[
      ..., None
    ]

  def similarity(self, tasks, actions, active):
    """(sim [..., H, K]: MatchTIR similarity of each turn's call to each reference call,
    valid [..., H]: the turns that made a call)."""
    names, args, valid = self.predicted_calls(actions, active)
    ref_names, ref_args = self.reference_calls(tasks)
    return turns.call_similarity(names, args, ref_names, ref_args, valid), valid


def make(num_steps=2, modulus=5, ops=('add', 'mul'), horizon=None, error_rate=0.0, call_cost=0.0):
  """A `ToolArithEnv` (see the module docstring)."""
  return ToolArithEnv(num_steps, modulus, ops, horizon, error_rate, call_cost)


def noisy_reference_policy(env: ToolArithEnv, p_opt):
  """A batched scripted demonstrator `act(states, turn, key) -> [B] int32` (action indices) for
  `jaxca.lm.multiturn.scripted_rollout`, as `jaxca.envs.keydoor.noisy_bfs_policy`.

  Per turn and row: while fewer than K reference calls have succeeded in order
  (`State.progress`), with probability `p_opt` the next reference call (op_k, a_k) (the same
  call again after an ERR reply), else a uniformly random action (call or answer); after the
  K calls, with probability `p_opt` the answer ANS(acc) (the tool's accumulator), else a
  uniformly random answer. p_opt=1 solves every problem whose calls succeed within the
  horizon; p_opt=0 acts uniformly until K reference calls have succeeded by chance.
  """
  m, k_max, n_calls = env.modulus, env.num_steps, env.num_calls
  n_actions = len(env.action_ids)

  def act(states, turn, key):
    del turn
    b = states.acc.shape[0]
    k_coin, k_any, k_ans = jax.random.split(key, 3)
    use_opt = jax.random.uniform(k_coin, (b,)) < p_opt
    k = jnp.minimum(states.progress, k_max - 1)[:, None]
    ref_op = jnp.take_along_axis(states.ref_ops, k, axis=1)[:, 0]
    ref_a = jnp.take_along_axis(states.ref_operands, k, axis=1)[:, 0]
    calling = states.progress < k_max
    opt = jnp.where(calling, ref_op * m + ref_a, n_calls + states.acc)
    noise = jnp.where(
      calling,
      jax.random.randint(k_any, (b,), 0, n_actions),
      n_calls + jax.random.randint(k_ans, (b,), 0, m),
    )
    return jnp.where(use_opt, opt, noise).astype(jnp.int32)

  return act


def make_splits(env: ToolArithEnv, num_train: int, num_test: int, seed: int = 0):
  """({'x0', 'ops', 'operands', 'seed'} train, test) numpy dicts of distinct problems (host)."""
  m, k, n_ops = env.modulus, env.num_steps, len(env.ops)
  total = m * (n_ops * m) ** k
  if num_train + num_test > total:
    raise ValueError(
      f'num_train + num_test must be <= {total} distinct problems; got {num_train + num_test}.'
    )
  rng = np.random.default_rng(seed)
  codes = rng.choice(total, num_train + num_test, replace=False)
  x0 = codes % m
  rest = codes // m
  steps = np.stack([(rest // (n_ops * m) ** i) % (n_ops * m) for i in range(k)], axis=1)
  out = dict(
    x0=x0.astype(np.int32),
    ops=(steps // m).astype(np.int32),
    operands=(steps % m).astype(np.int32),
    seed=rng.integers(0, 2**31 - 1, size=len(codes)).astype(np.int32),
  )
  train = {key: v[:num_train] for key, v in out.items()}
  test = {key: v[num_train:] for key, v in out.items()}
  return train, test


def turn_reward_provider(env: ToolArithEnv, assignment='km', unmatched_penalty=-0.5, weight=1.0):
  """The multi-turn provider of `turn_rewards`: env reward + weight * matched call reward.

  A call's matched reward (`credit.turns.matched_call_rewards` with `assignment`) sits on
  its turn; the answer turn keeps the outcome, call turns their cost (the environment's
  per-turn rewards, `multiturn.Turns.rewards`). `assignment` None: the env rewards only.
  """

  def provide(ctx):
    s = ctx.extras
    if assignment is None:
      return dict(turn_rewards=s.rewards)
    sim, valid = env.similarity(ctx.batch, s.actions, s.active)
    r = turns.matched_call_rewards(
      sim, valid, None, assignment=assignment, unmatched_penalty=unmatched_penalty
    )
    return dict(turn_rewards=s.rewards + weight * r)

  return provide


def call_metrics(env: ToolArithEnv, tasks, actions, active):
  """Per-row [B] float32: calls made, exact calls (matched with similarity 1 by the optimal
  assignment) and the row's precision (exact / calls; 1 for a row without calls)."""
  sim, valid = env.similarity(tasks, actions, active)
  a = turns.optimal_assignment(sim, valid)
  got = jnp.take_along_axis(sim, jnp.maximum(a, 0)[..., None], -1)[..., 0]
  exact = jnp.sum((a >= 0) & (got >= 1.0 - 1e-6), -1).astype(jnp.float32)
  calls = jnp.sum(valid, -1).astype(jnp.float32)
  return calls, exact, jnp.where(calls > 0, exact / jnp.maximum(calls, 1.0), 1.0)
