"""Rewards of language responses: verifier scores placed on tokens (`sequence_rewards`)."""

from typing import Callable
from typing import Dict
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca.tasks import base as tasks_base


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


def _last_token_positions(task, responses, mask):
  del task, responses
  n = mask.shape[-1]
  pos = jnp.arange(n, dtype=jnp.int32)
  last = jnp.max(jnp.where(mask, pos[None, :], -1), axis=-1, keepdims=True)
  return mask & (pos[None, :] == last)


def _step_closers(task, responses, mask):
  steps = task.parse_steps(responses, mask)
  return ops.step_closers(steps.step_ids, steps.kinds.shape[-1], mask=mask)


def _process(task, responses, mask, batch):
  step_ids = task.parse_steps(responses, mask).step_ids
  correct = task.step_correct(responses, mask, batch)
  closers = ops.step_closers(step_ids, correct.shape[-1], mask=mask)
  return jnp.where(closers, ops.to_tokens(correct, step_ids), 0.0)


class Reward(NamedTuple):
  """A reward kind: token rewards and the tokens that can carry them.

  Attributes:
    rewards: (task, responses [B, N], mask [B, N], batch) -> [B, N] float32.
    positions: (task, responses, mask) -> [B, N] bool.
  """

  rewards: Callable
  positions: Callable


# Reward kind -> `Reward`. 'outcome' / 'exact_match': the task's verifier score on the last
# valid token; 'process': the task's per-step correctness on the token closing each step
# (`Task.parse_steps`).
REWARDS: Dict[str, Reward] = {
  'outcome': Reward(
    lambda task, r, m, b: last_token_rewards(task.outcome(r, m, b), m), _last_token_positions
  ),
  'exact_match': Reward(
    lambda task, r, m, b: last_token_rewards(task.exact_match(r, m, b), m),
    _last_token_positions,
  ),
  'process': Reward(_process, _step_closers),
}


def _kind(kind: str) -> Reward:
  if kind not in REWARDS:
    raise ValueError(f'Unknown reward {kind!r}; choose from {list(REWARDS)}.')
  return REWARDS[kind]


def sequence_rewards(task, kind: str, responses, mask, batch) -> jax.Array:
  """Token-level rewards [B, N] of a kind of `REWARDS` ('outcome' | 'exact_match' | 'process').

  `batch` holds the per-row arrays (already repeated G times).
  """
  return _kind(kind).rewards(task, responses, mask, batch)


def reward_positions(task, kind: str, responses, mask, batch) -> jax.Array:
  """[B, N] bool: the tokens that can carry a reward of `kind`.

  'process': the token closing each step; otherwise the last valid token.
  """
  del batch
  return _kind(kind).positions(task, responses, mask)
