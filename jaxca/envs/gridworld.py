"""Deterministic tabular gridworlds as pure JAX lookup tables.

A gridworld is built once (host side) from an ASCII layout into transition tables
`next_state[s, a]`, `reward[s, a]`, `terminal[s, a]`, indexed by *free* cells only
(walls get no state index), so a tabular `Q` has shape `[num_states, num_actions]`.
Stepping is a table lookup: `step(env, state, action)` is jit/vmap-safe and has no
randomness, so it needs no key.

Dynamics (gym-classics `Gridworld`, as used by the RBIS paper, arXiv 2301.11321):
four actions 0=up, 1=right, 2=down, 3=left; moving into a wall or off the grid leaves
the agent where it is; the action taken *in* a goal cell (any action) earns reward 1
and terminates the episode; every other transition earns 0. The start cell is `S`.
Coordinates are `(x, y)` with `(0, 0)` the bottom-left cell.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
_MOVES = ((0, 1), (1, 0), (0, -1), (-1, 0))  # (dx, dy) per action

# The "Bifurcated Gridworld" of Daley et al. (ICML 2023), official repo commit 9512ce0
# `envs/bifurcated_gridworld.py` (= `Bifurcation1` at HEAD). Top row is y = 4.
BIFURCATED_LAYOUT = """
XX...
XX.X.
XX.XG
XX.X.
S....
"""


class Gridworld(NamedTuple):
  """Transition tables of a deterministic gridworld.

  Attributes:
    next_state: int32 `[S, A]`, the state after taking action `a` in state `s`
      (for terminal transitions: the goal cell itself; callers reset).
    reward: float32 `[S, A]`, reward following `(s, a)`.
    terminal: bool `[S, A]`, True where `(s, a)` ends the episode.
    start_state: int32 scalar, the state every episode starts in.
    cells: int32 `[S, 2]`, the `(x, y)` coordinates of each state (host-side info).
  """

  next_state: jax.Array
  reward: jax.Array
  terminal: jax.Array
  start_state: jax.Array
  cells: jax.Array

  @property
  def num_states(self) -> int:
    return self.next_state.shape[0]

  @property
  def num_actions(self) -> int:
    return self.next_state.shape[1]


def from_layout(layout: str) -> Gridworld:
  """Builds a `Gridworld` from an ASCII layout.

  Args:
    layout: rows of equal width, top row first; `X` wall, `.` or space free,
      `S` the (single) start cell, `G` goal cells (at least one). Optional `|`
      borders and blank leading/trailing lines are ignored.

  Returns:
    The `Gridworld` tables (numpy-backed jnp arrays).

  Raises:
    ValueError: ragged rows, unknown characters, not exactly one `S`, or no `G`.
  """
  rows = [r.strip('|') for r in layout.strip('\n').split('\n') if r.strip()]
  if not rows or len({len(r) for r in rows}) != 1:
    raise ValueError(f'`layout` rows must be non-empty and of equal width; got {rows!r}.')
  height = len(rows)
  bad = {c for r in rows for c in r} - set('X. SG')
  if bad:
    raise ValueError(f'`layout` has unknown characters {sorted(bad)}; allowed: X . space S G.')
  cells, starts, goals = [], [], set()
  for row_index, row in enumerate(rows):
    y = height - 1 - row_index
    for x, char in enumerate(row):
      if char == 'X':
        continue
      cells.append((x, y))
      if char == 'S':
        starts.append((x, y))
      if char == 'G':
        goals.add((x, y))
  if len(starts) != 1 or not goals:
    raise ValueError(
      f'`layout` needs exactly one S and at least one G; got {len(starts)} S, {len(goals)} G.'
    )
  cells.sort(key=lambda c: (c[1], c[0]))  # row-major from the bottom-left
  index = {c: i for i, c in enumerate(cells)}
  num_states = len(cells)
  next_state = np.zeros((num_states, 4), np.int32)
  reward = np.zeros((num_states, 4), np.float32)
  terminal = np.zeros((num_states, 4), bool)
  for (x, y), s in index.items():
    for a, (dx, dy) in enumerate(_MOVES):
      if (x, y) in goals:
        next_state[s, a], reward[s, a], terminal[s, a] = s, 1.0, True
        continue
      target = (x + dx, y + dy)
      next_state[s, a] = index.get(target, s)  # walls and borders: stay
  return Gridworld(
    next_state=jnp.asarray(next_state),
    reward=jnp.asarray(reward),
    terminal=jnp.asarray(terminal),
    start_state=jnp.asarray(index[starts[0]], jnp.int32),
    cells=jnp.asarray(np.array(cells, np.int32)),
  )


def bifurcated_gridworld() -> Gridworld:
  """The RBIS paper's Bifurcated Gridworld: 14 free cells, start (0,0), goal (4,2).

  The short route (right x4, up x2) reaches the goal in 6 moves; the long route
  (up the x=2 corridor, across the top, down) in 10. With the rewarded action in
  the goal cell an optimal episode takes 7 actions: discounted return gamma**6.
  """
  return from_layout(BIFURCATED_LAYOUT)


def reset(env: Gridworld) -> jax.Array:
  """Returns the start state, an int32 scalar."""
  return env.start_state


def step(env: Gridworld, state: jax.Array, action: jax.Array):
  """One deterministic transition.

  Args:
    env: the tables.
    state: int32 `[...]` current states.
    action: int32 `[...]` actions (same shape as `state`).

  Returns:
    `(next_state, reward, terminated)`: int32, float32 and bool arrays of the
    shape of `state`. On termination `next_state` is the goal cell; reset to
    `reset(env)` yourself.
  """
  return env.next_state[state, action], env.reward[state, action], env.terminal[state, action]


def shortest_path_length(env: Gridworld) -> int:
  """Fewest moves from the start to a goal cell (host-side breadth-first search)."""
  next_state = np.asarray(env.next_state)
  goals = set(np.flatnonzero(np.asarray(env.terminal).any(axis=1)).tolist())
  frontier, seen, depth = {int(env.start_state)}, {int(env.start_state)}, 0
  while frontier:
    if frontier & goals:
      return depth
    frontier = {int(n) for s in frontier for n in next_state[s]} - seen
    seen |= frontier
    depth += 1
  raise ValueError('No goal is reachable from the start.')
