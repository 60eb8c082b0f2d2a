"""The interface of a tokenised, pure-JAX multi-turn environment (`multiturn.rollout`).

A `TokenEnv` talks to a language policy in tokens: a task becomes a prompt of
`prompt_len` tokens, every turn starts with an observation of `obs_len` tokens
(prefilled, no loss), and the policy answers with ONE action token drawn from
`action_ids` (every other logit is masked). The rollout (`jaxca.lm.multiturn`) only
calls the methods below, each on ONE task / state (it vmaps them), so a second
environment implements this class and needs no change to the rollout.

Per-task methods (pure, jit/vmap-safe, no keys: the dynamics are deterministic):
  prompt(task) -> [prompt_len] int32
  reset(task) -> state (a pytree)
  observe(state) -> [obs_len] int32 observation tokens
  anchor(state) -> [] int32, a history-free id of the observation (GiGPO's
                   anchor state, arXiv 2505.10978 Sec. 4.2); equal ids mean equal
                   observations
  step(state, action) -> (state, reward [] float32, done [] bool); `action` is
                   the index into `action_ids`. After `done` the rollout stops
                   the row, so `step` is never called on a finished state's result.

Attributes: `vocab_size`, `pad_id`, `prompt_len`, `obs_len`, `horizon` (turns),
`action_ids` (a tuple of token ids) and `num_actions`.
"""

from typing import Any


class TokenEnv:
  """Base class (documentation of the interface; see the module docstring)."""

  vocab_size: int
  pad_id: int
  prompt_len: int
  obs_len: int
  horizon: int
  action_ids: tuple

  @property
  def num_actions(self) -> int:
    return len(self.action_ids)

  def prompt(self, task: Any):
    raise NotImplementedError

  def reset(self, task: Any):
    raise NotImplementedError

  def observe(self, state: Any):
    raise NotImplementedError

  def anchor(self, state: Any):
    raise NotImplementedError

  def step(self, state: Any, action):
    raise NotImplementedError
