"""KeyDoor: a pure-JAX grid with a key and a locked door, tokenised for a language policy.

A `size` x `size` grid holds `num_walls` wall cells, a key K and a door D. The door
is a wall until the key is held; entering K picks the key up; entering D with the
key is success (reward 1, the episode ends). A move into a wall, into the locked
door or off the grid is a no-op. There is no other reward, so an episode's
return is 1 on success and 0 otherwise (also when the rollout's horizon ends it).

A task is a (layout, start cell) pair; layouts are drawn on the host from a seed,
with every allowed start cell able to reach K and then D. Layouts
`[0, num_layouts)` are the training pool, `[num_layouts, 2 * num_layouts)` the
held-out pool (never equal to a training layout).

Tokens (`KeyDoorEnv.vocab`): the prompt is
`[BOS, KEY, Rk, Ck, DOOR, Rd, Cd, (WALL, Rw, Cw) x num_walls, SEP]`
(17 tokens for 3 walls); each turn's observation is `[R_r, C_c, NOKEY|HASKEY]`
and the action is one of `UP, DOWN, LEFT, RIGHT`. The anchor id of a state is
`r * size * 2 + c * 2 + has_key`, exactly the observation (history-free), as
GiGPO's anchor states (arXiv 2505.10978 Sec. 4.2).
"""

import collections
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxca.envs import token_env

PAD, BOS, SEP, KEY, DOOR, WALL, NOKEY, HASKEY, UP, DOWN, LEFT, RIGHT = range(12)
_FIRST_COORD = 12
ACTIONS = (UP, DOWN, LEFT, RIGHT)
_DELTAS = np.asarray([(-1, 0), (1, 0), (0, -1), (0, 1)], np.int32)  # per action index


class Task(NamedTuple):
  """A task (arrays of any leading shape): `layout` id and `start` cell `r * size + c`."""

  layout: jax.Array
  start: jax.Array


class State(NamedTuple):
  """One episode's state: layout id, `pos` [2] (r, c) int32, `has_key` bool."""

  layout: jax.Array
  pos: jax.Array
  has_key: jax.Array


def _reachable(size, blocked, start):
  """Cells reachable from `start` (r, c) through cells not in `blocked` (BFS)."""
  seen = {start}
  queue = collections.deque([start])
  while queue:
    r, c = queue.popleft()
    for dr, dc in _DELTAS:
      nr, nc = r + int(dr), c + int(dc)
      if 0 <= nr < size and 0 <= nc < size and (nr, nc) not in blocked and (nr, nc) not in seen:
        seen.add((nr, nc))
        queue.append((nr, nc))
  return seen


def _neighbours(size, cell):
  r, c = cell
  out = []
  for dr, dc in _DELTAS:
    nr, nc = r + int(dr), c + int(dc)
    if 0 <= nr < size and 0 <= nc < size:
      out.append((nr, nc))
  return out


def make_layouts(size: int, num_walls: int, num: int, seed: int, exclude=()):
  """`num` random solvable layouts (host side, numpy).

  Returns:
    dict of numpy arrays: key [num, 2], door [num, 2], walls [num, num_walls, 2],
    start_ok [num, size * size] bool (cells from which K and then D are reachable;
    never a wall, K or D). Layouts in `exclude` (tuples from `layout_signature`)
    are skipped.
  """
  rng = np.random.default_rng(seed)
  out = dict(key=[], door=[], walls=[], start_ok=[])
  seen = set(exclude)
  cells = [(r, c) for r in range(size) for c in range(size)]
  while len(out['key']) < num:
    pick = rng.choice(len(cells), size=2 + num_walls, replace=False)
    key, door = cells[pick[0]], cells[pick[1]]
    walls = sorted(cells[i] for i in pick[2:])
    sig = (key, door, tuple(walls))
    if sig in seen:
      continue
    wall_set = set(walls)
    # From K (door locked), some neighbour of D must be reachable; starts reach K likewise.
    from_key = _reachable(size, wall_set | {door}, key)
    if not any(n in from_key for n in _neighbours(size, door)):
      continue
    ok = np.zeros(size * size, bool)
    for cell in from_key:  # reachability is symmetric on this grid
      if cell != key:
        ok[cell[0] * size + cell[1]] = True
    if ok.sum() < 2:
      continue
    seen.add(sig)
    out['key'].append(key)
    out['door'].append(door)
    out['walls'].append(walls if walls else np.zeros((0, 2), np.int32))
    out['start_ok'].append(ok)
  return dict(
    key=np.asarray(out['key'], np.int32),
    door=np.asarray(out['door'], np.int32),
    walls=np.asarray(out['walls'], np.int32).reshape(num, num_walls, 2),
    start_ok=np.asarray(out['start_ok'], bool),
  )


def layout_signature(layouts, i):
  """The hashable (key, door, walls) of layout `i` of `make_layouts`' output."""
  walls = tuple(tuple(int(v) for v in w) for w in layouts['walls'][i])
  return (
    tuple(int(v) for v in layouts['key'][i]),
    tuple(int(v) for v in layouts['door'][i]),
    walls,
  )


class KeyDoorEnv(token_env.TokenEnv):
  """KeyDoor as a `TokenEnv` (see the module docstring). Build with `make`."""

  def __init__(self, size: int, num_walls: int, horizon: int, num_layouts: int, seed: int):
    self.size, self.num_walls, self.horizon = int(size), int(num_walls), int(horizon)
    self.num_layouts = int(num_layouts)
    train = make_layouts(size, num_walls, num_layouts, seed)
    sigs = [layout_signature(train, i) for i in range(num_layouts)]
    held = make_layouts(size, num_walls, num_layouts, seed + 1, exclude=sigs)
    both = {k: np.concatenate([train[k], held[k]]) for k in train}
    self.layouts = both  # numpy, host-side (figures, the notebook)
    self._key = jnp.asarray(both['key'])
    self._door = jnp.asarray(both['door'])
    self._walls = jnp.asarray(both['walls'])
    grid = np.zeros((2 * num_layouts, size, size), bool)
    for i, ws in enumerate(both['walls']):
      for r, c in ws:
        grid[i, r, c] = True
    self._wall_grid = jnp.asarray(grid)
    self._start_ok = jnp.asarray(both['start_ok'])
    self.vocab_size = _FIRST_COORD + 2 * self.size
    self.pad_id = PAD
    self.prompt_len = 8 + 3 * self.num_walls
    self.obs_len = 3
    self.action_ids = ACTIONS
    self.num_anchors = self.size * self.size * 2

  def row_token(self, r):
    return _FIRST_COORD + r

  def col_token(self, c):
    return _FIRST_COORD + self.size + c

  # ------------------------------------------------------------------ TokenEnv

  def prompt(self, task: Task):
    i = task.layout
    k, d, w = self._key[i], self._door[i], self._walls[i]
    parts = [
      jnp.asarray([BOS, KEY], jnp.int32),
      jnp.stack([self.row_token(k[0]), self.col_token(k[1])]),
      jnp.asarray([DOOR], jnp.int32),
      jnp.stack([self.row_token(d[0]), self.col_token(d[1])]),
    ]
    for j in range(self.num_walls):
      parts.append(jnp.stack([jnp.int32(WALL), self.row_token(w[j, 0]), self.col_token(w[j, 1])]))
    parts.append(jnp.asarray([SEP], jnp.int32))
    return jnp.concatenate([p.astype(jnp.int32) for p in parts])

  def reset(self, task: Task):
    pos = jnp.stack([task.start // self.size, task.start % self.size]).astype(jnp.int32)
    return State(jnp.asarray(task.layout, jnp.int32), pos, jnp.zeros((), jnp.bool_))

  def observe(self, state: State):
    flag = jnp.where(state.has_key, HASKEY, NOKEY)
    return jnp.stack([self.row_token(state.pos[0]), self.col_token(state.pos[1]), flag]).astype(
      jnp.int32
    )

  def anchor(self, state: State):
    r, c = state.pos[0], state.pos[1]
    return (r * self.size * 2 + c * 2 + state.has_key.astype(jnp.int32)).astype(jnp.int32)

  def step(self, state: State, action):
    target = state.pos + jnp.asarray(_DELTAS)[action]
    inside = jnp.all((target >= 0) & (target < self.size))
    t = jnp.clip(target, 0, self.size - 1)
    wall = self._wall_grid[state.layout, t[0], t[1]]
    at_door = jnp.all(t == self._door[state.layout])
    success = inside & at_door & state.has_key
    blocked = ~inside | wall | (at_door & ~state.has_key)
    pos = jnp.where(blocked, state.pos, t)
    has_key = state.has_key | jnp.all(pos == self._key[state.layout])
    reward = success.astype(jnp.float32)
    return State(state.layout, pos, has_key), reward, success

  # ------------------------------------------------------------------ tasks

  def sample_tasks(self, key, num: int, held_out: bool = False) -> Task:
    """`num` tasks, layout uniform over the pool, start uniform over its allowed cells."""
    k1, k2 = jax.random.split(key)
    layout = jax.random.randint(k1, (num,), 0, self.num_layouts)
    if held_out:
      layout = layout + self.num_layouts
    logits = jnp.where(self._start_ok[layout], 0.0, -jnp.inf)
    start = jax.random.categorical(k2, logits, axis=-1)
    return Task(layout.astype(jnp.int32), start.astype(jnp.int32))


def make(size=5, num_walls=3, horizon=20, num_layouts=32, seed=0) -> KeyDoorEnv:
  """A `KeyDoorEnv` (default: KeyDoor-5x5, 3 walls, 20 turns, 32 + 32 layouts)."""
  return KeyDoorEnv(size, num_walls, horizon, num_layouts, seed)


def validation_tasks(env: KeyDoorEnv, taken: Task, num: int, seed) -> Task:
  """`num` training-pool tasks (layout, start), distinct and none of them in `taken`.

  Host side: a validation split for a stop rule (e.g. a warm start's) that is never judged on
  the reported evaluation tasks `taken`; fewer than `num` when the pool has fewer left.
  """
  taken = set(zip(np.asarray(taken.layout).tolist(), np.asarray(taken.start).tolist()))
  ok = env.layouts['start_ok'][: env.num_layouts]
  pairs = [(int(l), int(c)) for l, c in zip(*np.nonzero(ok)) if (l, c) not in taken]
  pick = np.random.default_rng(seed).permutation(len(pairs))[:num]
  chosen = np.asarray([pairs[i] for i in np.sort(pick)], np.int32).reshape(-1, 2)
  return Task(jnp.asarray(chosen[:, 0]), jnp.asarray(chosen[:, 1]))


def random_policy_success(env: KeyDoorEnv, key, tasks: Task) -> jax.Array:
  """[n] float32: 1 where a uniformly random policy succeeds within `env.horizon` turns."""
  states = jax.vmap(env.reset)(tasks)
  n = tasks.layout.shape[0]

  def turn(carry, k):
    states, done = carry
    actions = jax.random.randint(k, (n,), 0, len(ACTIONS))
    new, _, success = jax.vmap(env.step)(states, actions)
    states = jax.tree.map(lambda a, b: jnp.where(_bcast(done, a), a, b), states, new)
    return (states, done | success), None

  (_, done), _ = jax.lax.scan(
    turn, (states, jnp.zeros((n,), jnp.bool_)), jax.random.split(key, env.horizon)
  )
  return done.astype(jnp.float32)


def _bcast(flag, x):
  return flag.reshape(flag.shape + (1,) * (x.ndim - flag.ndim))


# ----------------------------------------------------------------------------- BFS expert

_FAR = 1 << 20  # the distance of a cell that cannot reach the target (or is blocked)


def distance_maps(wall_grid: jax.Array, key: jax.Array, door: jax.Array) -> jax.Array:
  """[2, size, size] int32 shortest-path move counts of one layout (pure JAX).

  Map 0: moves to reach the key K while the door D is locked (D and walls block).
  Map 1: moves to reach D with the key held (walls block; entering D is success).
  Moves are the four grid steps; a blocked or unreachable cell reads `_FAR`. Computed by
  `size * size` rounds of Bellman-Ford relaxation on the grid, i.e. breadth-first search.

  Args:
    wall_grid: [size, size] bool wall cells of the layout.
    key, door: [2] int32 (r, c) of K and D.
  """
  size = wall_grid.shape[-1]
  cells = jnp.arange(size)
  at = lambda p: (cells[:, None] == p[0]) & (cells[None, :] == p[1])  # noqa: E731

  def bfs(target, blocked):
    d0 = jnp.where(at(target), 0, _FAR).astype(jnp.int32)

    def relax(_, d):
      pad = jnp.pad(d, 1, constant_values=_FAR)
      nb = jnp.minimum(
        jnp.minimum(pad[:-2, 1:-1], pad[2:, 1:-1]), jnp.minimum(pad[1:-1, :-2], pad[1:-1, 2:])
      )
      return jnp.where(blocked, _FAR, jnp.minimum(d, nb + 1))

    return jax.lax.fori_loop(0, size * size, relax, d0)

  to_key = bfs(key, wall_grid | at(door))
  to_door = bfs(door, wall_grid)
  return jnp.stack([to_key, to_door])


def legal_actions(env: KeyDoorEnv, state: State) -> jax.Array:
  """[4] bool: the actions (order of `ACTIONS`) that move (not a no-op into a wall, the locked
  door or off the grid), by the env's own `step`."""
  new, _, _ = jax.vmap(env.step, in_axes=(None, 0))(state, jnp.arange(len(ACTIONS)))
  return jnp.any(new.pos != state.pos[None, :], axis=-1)


def optimal_actions(env: KeyDoorEnv, state: State) -> jax.Array:
  """[4] bool: the actions on a shortest path to success, key first, then door.

  Without the key: the moves that bring the agent one step closer to K (the door is locked);
  with it: one step closer to D. Success needs K then D, so a shortest path to K followed by
  one from K to D is a shortest successful path. All False where the target is unreachable.
  """
  i = state.layout
  d = distance_maps(env._wall_grid[i], env._key[i], env._door[i])[state.has_key.astype(jnp.int32)]
  target = state.pos[None, :] + jnp.asarray(_DELTAS)
  inside = jnp.all((target >= 0) & (target < env.size), axis=-1)
  t = jnp.clip(target, 0, env.size - 1)
  here = d[state.pos[0], state.pos[1]]
  return inside & (d[t[:, 0], t[:, 1]] == here - 1) & (here < _FAR)


def bfs_action(env: KeyDoorEnv, state: State) -> jax.Array:
  """int32 index (into `ACTIONS`) of the first optimal action (`optimal_actions`); 0 if none."""
  return jnp.argmax(optimal_actions(env, state)).astype(jnp.int32)


def noisy_bfs_action(env: KeyDoorEnv, state: State, key: jax.Array, p_opt) -> jax.Array:
  """int32 action index of the noisy-BFS demonstrator.

  With probability `p_opt` an optimal action (`optimal_actions`, uniform among ties), else a
  uniformly random legal action (`legal_actions`, which may itself be optimal); so a step is
  optimal with probability >= p_opt. With no optimal (or no legal) action: uniform over
  the legal (or all) actions.
  """
  k_coin, k_pick = jax.random.split(key)
  opt, legal = optimal_actions(env, state), legal_actions(env, state)
  use_opt = (jax.random.uniform(k_coin) < p_opt) & jnp.any(opt)
  allowed = jnp.where(use_opt, opt, legal)
  allowed = jnp.where(jnp.any(allowed), allowed, True)
  return jax.random.categorical(k_pick, jnp.where(allowed, 0.0, -jnp.inf)).astype(jnp.int32)


def noisy_bfs_policy(env: KeyDoorEnv, p_opt):
  """A batched scripted policy `act(states, turn, key) -> [B] int32` (`noisy_bfs_action` per
  row), for `jaxca.lm.multiturn.scripted_rollout`. p_opt=1 gives an optimal demonstrator."""

  def act(states, turn, key):
    del turn
    keys = jax.random.split(key, states.layout.shape[0])
    return jax.vmap(lambda s, k: noisy_bfs_action(env, s, k, p_opt))(states, keys)

  return act
