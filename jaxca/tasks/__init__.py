"""Verifiable reasoning tasks: host-side problem generators plus pure-JAX verifiers.

`tasks.make('arith', num_steps=3, modulus=10)` builds a task by name from the
local `TASKS` table, `tasks.from_config(config.task)` from a config section; an unknown name
raises ValueError listing the choices.
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


def from_config(section) -> Any:
  """The task of a config's `task` section: `name` (one of TASKS) and the task's options (a
  list of `ops` is read as a tuple). Raises ValueError naming the `field`."""
  name = section['name']
  if name not in TASKS:
    raise ValueError(f'Unknown `name`={name!r}; choose from {sorted(TASKS)}.')
  kwargs = {k: v for k, v in section.items() if k != 'name'}
  if 'ops' in kwargs and not isinstance(kwargs['ops'], str):  # 'invertible' stays a name
    kwargs['ops'] = tuple(kwargs['ops'])
  return make(name, **kwargs)


__all__ = ('TASKS', 'arith', 'from_config', 'gsm8k', 'make')
