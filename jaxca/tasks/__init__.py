"""Verifiable reasoning tasks: host-side problem generators plus pure-JAX verifiers.

`tasks.make('arith', num_steps=3, modulus=10)` builds a task by name from the
local `TASKS` table; an unknown name raises ValueError listing the choices.
Verifiers live in the task's module (`tasks.arith.outcome_reward(task, ...)`).
"""

from collections.abc import Callable
from typing import Any

from jaxca.tasks import arith
from jaxca.tasks import gsm8k

TASKS: dict[str, Callable[..., Any]] = {
  'arith': arith.make_task,
  'gsm8k': gsm8k.make_task,
}


def make(name: str, cfg: Any = None, **kwargs) -> Any:
  """Builds the task `name` from a config (ConfigDict / mapping / dataclass) and/or keyword args."""
  if name not in TASKS:
    raise ValueError(f'Unknown task {name!r}; choices: {sorted(TASKS)}.')
  return TASKS[name](cfg, **kwargs)


__all__ = ('TASKS', 'arith', 'gsm8k', 'make')
