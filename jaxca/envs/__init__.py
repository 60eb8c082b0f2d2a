"""Pure-JAX environments (deterministic tables, no keys needed for stepping).

`make(name)` builds an environment by name from an explicit table; unknown names
fail with the list of choices.
"""

from typing import Callable

from jaxca.envs import gridworld

_MAKERS: dict[str, Callable[[], gridworld.Gridworld]] = {
  'bifurcated_gridworld': gridworld.bifurcated_gridworld,
}

ENV_NAMES = tuple(_MAKERS)


def make(name: str) -> gridworld.Gridworld:
  """Builds the environment `name` (one of `ENV_NAMES`)."""
  if name not in _MAKERS:
    raise ValueError(f'Unknown env name {name!r}; choices: {sorted(_MAKERS)}.')
  return _MAKERS[name]()


__all__ = ('ENV_NAMES', 'gridworld', 'make')
