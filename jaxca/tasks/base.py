"""The `Task` interface every verifiable task implements (learners see only this).

Shapes: B rows, N response tokens, S = N steps at most (a step has >= 1 token).
`batch` is the dict of per-row arrays the task's data provides (keys
`Task.batch_keys`, `prompts` first), already repeated to one row per response.
Verifiers are pure JAX (jit/vmap-safe); data loading is host-side.
"""

from typing import Any
from typing import Mapping
from typing import NamedTuple
from typing import Optional
from typing import Protocol

import jax

# Step kinds (`Steps.kinds`).
STEP_NONE, STEP_VALUE, STEP_FILLER, STEP_MALFORMED = -1, 0, 1, 2


class Steps(NamedTuple):
  """A response cut into steps.

  Attributes:
    step_ids: [B, N] int32 step index of each token (the closing separator
      belongs to its step); -1 for tokens in no step (masked, after the end).
    kinds: [B, S] int32 `STEP_VALUE` | `STEP_FILLER` | `STEP_MALFORMED`, or
      `STEP_NONE` where the step does not occur.
    values: [B, S] int32 the value a value step writes; -1 otherwise.
    valid: [B, S] bool, the steps that occur.
  """

  step_ids: jax.Array
  kinds: jax.Array
  values: jax.Array
  valid: jax.Array


class Task(Protocol):
  """What a learner needs from a task (`jaxca.tasks.arith.Task` implements it).

  Attributes:
    vocab: token ids; at least `pad_id`, `eos_id` and `size`.
    prompt_len: Lp, the (padded) prompt length.
    response_len: N, the number of new tokens a sampler needs.
    batch_keys: the per-prompt arrays of a batch, `prompts` [P, Lp] first.
  """

  vocab: Any
  prompt_len: int
  response_len: int
  batch_keys: tuple

  def load_data(self, data_dir: str, *, num_train: int, num_test: int, seed: int = 0) -> dict:
    """Host side: {'train': source, 'test': source}, random-access sources of `batch_keys`."""

  def outcome(self, responses, mask, batch) -> jax.Array:
    """[B] float32 final-answer reward in {0, 1}."""

  def exact_match(self, responses, mask, batch) -> jax.Array:
    """[B] float32, 1 iff the whole response is the reference."""

  def parse_steps(self, responses, mask) -> Steps:
    """Cuts responses [B, N] into steps (S = N)."""

  def step_correct(self, responses, mask, batch) -> jax.Array:
    """[B, S] float32 per-step correctness, aligned with `parse_steps`; 0 at absent steps."""

  def anchors(self, responses, mask, batch, steps: Steps) -> Optional[jax.Array]:
    """[B, S] int32 hashed state at the start of each step (-1 where absent), or None."""

  def eval_metrics(self, responses, mask, batch) -> Mapping[str, jax.Array]:
    """Per-row [B] float32 held-out scores (averaged by the caller)."""
