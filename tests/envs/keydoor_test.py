"""KeyDoor dynamics (key, door as wall, success, no-op moves), layouts, tokens; the BFS expert."""

import collections

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from jaxca.envs import keydoor
from jaxca.lm import multiturn


def _state(env, layout, r, c, has_key=False):
  return keydoor.State(jnp.int32(layout), jnp.asarray([r, c], jnp.int32), jnp.bool_(has_key))


UP, DOWN, LEFT, RIGHT = range(4)  # action indices (order of keydoor.ACTIONS)


class KeyDoorTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    self.env = keydoor.make(size=5, num_walls=3, horizon=20, num_layouts=8, seed=3)
    self.lay = {k: v[0] for k, v in self.env.layouts.items()}

  def _next_to(self, target):
    """A free in-grid neighbour of `target` and the action index that moves from it onto target."""
    walls = {tuple(w) for w in self.lay['walls']}
    for a, (dr, dc) in enumerate(keydoor._DELTAS):
      r, c = target[0] - dr, target[1] - dc
      blocked = walls | {tuple(self.lay['door']), tuple(self.lay['key'])}
      if 0 <= r < 5 and 0 <= c < 5 and (r, c) not in blocked:
        return (r, c), a
    self.skipTest('no free neighbour')

  def test_key_is_picked_up(self):
    (r, c), a = self._next_to(self.lay['key'])
    s, reward, done = self.env.step(_state(self.env, 0, r, c), a)
    self.assertTrue(bool(s.has_key))
    np.testing.assert_array_equal(s.pos, self.lay['key'])
    self.assertEqual(float(reward), 0.0)
    self.assertFalse(bool(done))

  def test_door_is_a_wall_without_the_key_and_success_with_it(self):
    (r, c), a = self._next_to(self.lay['door'])
    s, reward, done = self.env.step(_state(self.env, 0, r, c), a)
    np.testing.assert_array_equal(s.pos, [r, c])
    self.assertEqual((float(reward), bool(done)), (0.0, False))
    s, reward, done = self.env.step(_state(self.env, 0, r, c, True), a)
    self.assertEqual((float(reward), bool(done)), (1.0, True))

  def test_walls_and_borders_are_no_ops(self):
    (r, c), a = self._next_to(self.lay['walls'][0])
    s, _, _ = self.env.step(_state(self.env, 0, r, c), a)
    np.testing.assert_array_equal(s.pos, [r, c])
    s, _, _ = self.env.step(_state(self.env, 0, 0, 0), UP)
    np.testing.assert_array_equal(s.pos, [0, 0])
    s, _, _ = self.env.step(_state(self.env, 0, 4, 4), RIGHT)
    np.testing.assert_array_equal(s.pos, [4, 4])

  def test_anchor_and_tokens(self):
    s = _state(self.env, 0, 2, 3, True)
    self.assertEqual(int(self.env.anchor(s)), 2 * 5 * 2 + 3 * 2 + 1)
    np.testing.assert_array_equal(
      self.env.observe(s), [self.env.row_token(2), self.env.col_token(3), keydoor.HASKEY]
    )
    prompt = np.asarray(self.env.prompt(keydoor.Task(jnp.int32(0), jnp.int32(0))))
    self.assertLen(prompt, 17)
    self.assertEqual(prompt[0], keydoor.BOS)
    self.assertEqual(prompt[-1], keydoor.SEP)
    self.assertEqual(
      list(prompt[2:4]),
      [self.env.row_token(self.lay['key'][0]), self.env.col_token(self.lay['key'][1])],
    )
    self.assertLess(prompt.max(), self.env.vocab_size)

  def test_layouts_solvable_and_held_out_distinct(self):
    n = self.env.num_layouts
    sigs = [keydoor.layout_signature(self.env.layouts, i) for i in range(2 * n)]
    self.assertLen(set(sigs), 2 * n)
    for i in range(2 * n):
      key, door = tuple(self.env.layouts['key'][i]), tuple(self.env.layouts['door'][i])
      walls = {tuple(w) for w in self.env.layouts['walls'][i]}
      ok = self.env.layouts['start_ok'][i]
      for cell in np.flatnonzero(ok):
        start = (cell // 5, cell % 5)
        self.assertNotIn(start, walls | {key, door})
        self.assertIn(key, keydoor._reachable(5, walls | {door}, start))
      from_key = keydoor._reachable(5, walls | {door}, key)
      self.assertTrue(any(nb in from_key for nb in keydoor._neighbours(5, door)))
    tasks = self.env.sample_tasks(jax.random.key(0), 64, held_out=True)
    self.assertTrue(np.all(np.asarray(tasks.layout) >= n))
    self.assertTrue(np.all(self.env.layouts['start_ok'][tasks.layout, tasks.start]))

  def test_random_policy_sometimes_succeeds(self):
    tasks = self.env.sample_tasks(jax.random.key(1), 256)
    rate = float(keydoor.random_policy_success(self.env, jax.random.key(2), tasks).mean())
    self.assertBetween(rate, 0.005, 0.5)


# Hand-made layouts (S marks nothing here; every free cell is a start): K key, D door, # wall.
HAND = (
  ('K..#.', '.#...', '...#D', '.....', '.....'),  # the door's only way in is from the right/below
  ('#....', '.#.#.', 'D#K#.', '.#.#.', '.....'),  # K in a pocket; D reached around the bottom
  ('.....', '.###.', '.#K#.', '.#D#.', '.....'),  # K walled in except through D: unsolvable
  ('..D..', '.....', '..K..', '.....', '.....'),  # open grid: many tied shortest paths
)


def _parse(rows):
  size = len(rows)
  walls = {(r, c) for r in range(size) for c in range(size) if rows[r][c] == '#'}
  find = lambda ch: next((r, c) for r in range(size) for c in range(size) if rows[r][c] == ch)  # noqa: E731
  return size, walls, find('K'), find('D')


def _hand_env(rows):
  """A KeyDoorEnv whose layout 0 is the hand-made one."""
  size, walls, key, door = _parse(rows)
  env = keydoor.make(size=size, num_walls=1, horizon=30, num_layouts=1, seed=0)
  grid = np.zeros((1, size, size), bool)
  for r, c in walls:
    grid[0, r, c] = True
  env._wall_grid = jnp.asarray(grid)
  env._key = jnp.asarray([key], jnp.int32)
  env._door = jnp.asarray([door], jnp.int32)
  return env


def _ref_bfs(size, blocked, target):
  """{cell: moves to target} by a plain breadth-first search through cells not in blocked."""
  dist, queue = {target: 0}, collections.deque([target])
  while queue:
    r, c = queue.popleft()
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
      n = (r + dr, c + dc)
      if 0 <= n[0] < size and 0 <= n[1] < size and n not in blocked and n not in dist:
        dist[n] = dist[(r, c)] + 1
        queue.append(n)
  return dist


def _ref_step(size, walls, key, door, pos, has_key, a):
  """(pos, has_key, success) of one move, written out from the rules."""
  dr, dc = ((-1, 0), (1, 0), (0, -1), (0, 1))[a]
  t = (pos[0] + dr, pos[1] + dc)
  if not (0 <= t[0] < size and 0 <= t[1] < size) or t in walls or (t == door and not has_key):
    return pos, has_key, False
  if t == door:
    return t, has_key, True
  return t, has_key or t == key, False


def _ref_optimal(size, walls, key, door):
  """{(pos, has_key): set of optimal actions}: value iteration on moves-to-success over the
  full state (pos, has_key), independent of the key-first decomposition."""
  states = [
    ((r, c), k)
    for r in range(size)
    for c in range(size)
    for k in (False, True)
    if (r, c) not in walls and (r, c) != door and ((r, c) != key or k)
  ]  # standing on K without the key cannot happen
  inf = float('inf')
  dist = {s: inf for s in states}
  for _ in range(len(states) + 1):
    for pos, k in states:
      best = inf
      for a in range(4):
        npos, nk, won = _ref_step(size, walls, key, door, pos, k, a)
        best = min(best, 1 if won else 1 + dist[(npos, nk)])
      dist[(pos, k)] = best
  out = {}
  for pos, k in states:
    here = dist[(pos, k)]
    opt = set()
    for a in range(4):
      npos, nk, won = _ref_step(size, walls, key, door, pos, k, a)
      after = 0 if won else dist[(npos, nk)]
      if here < inf and after == here - 1:
        opt.add(a)
    out[(pos, k)] = opt
  return out


class BfsExpertTest(absltest.TestCase):
  def test_distance_maps_match_a_python_bfs(self):
    fn = jax.jit(keydoor.distance_maps)
    for rows in HAND:
      size, walls, key, door = _parse(rows)
      grid = np.zeros((size, size), bool)
      for r, c in walls:
        grid[r, c] = True
      args = (jnp.asarray(grid), jnp.asarray(key), jnp.asarray(door))
      for f in (fn, keydoor.distance_maps):
        d = np.asarray(f(*args))
        for phase, (target, blocked) in enumerate(((key, walls | {door}), (door, walls))):
          ref = _ref_bfs(size, blocked, target)
          want = np.full((size, size), keydoor._FAR)
          for (r, c), v in ref.items():
            want[r, c] = v
          np.testing.assert_array_equal(d[phase], want, err_msg=f'{rows} phase {phase}')

  def test_optimal_and_legal_actions_match_value_iteration_on_hand_grids(self):
    for rows in HAND:
      size, walls, key, door = _parse(rows)
      env = _hand_env(rows)
      ref = _ref_optimal(size, walls, key, door)
      cells = list(ref)
      states = keydoor.State(
        jnp.zeros((len(cells),), jnp.int32),
        jnp.asarray([pos for pos, _ in cells], jnp.int32),
        jnp.asarray([k for _, k in cells]),
      )
      fns = dict(
        opt=lambda s, env=env: keydoor.optimal_actions(env, s),
        legal=lambda s, env=env: keydoor.legal_actions(env, s),
        first=lambda s, env=env: keydoor.bfs_action(env, s),
      )
      jitted = {k: np.asarray(jax.jit(jax.vmap(f))(states)) for k, f in fns.items()}
      for i, (pos, k) in enumerate(cells):
        want = ref[(pos, k)]
        got = set(np.flatnonzero(jitted['opt'][i]).tolist())
        self.assertEqual(got, want, f'{rows} at {pos} key={k}')
        steps = [_ref_step(size, walls, key, door, pos, k, a) for a in range(4)]
        legal = {a for a, (npos, _, won) in enumerate(steps) if npos != pos or won}
        self.assertEqual(set(np.flatnonzero(jitted['legal'][i]).tolist()), legal)
        if want:  # the deterministic expert takes the first optimal action
          self.assertEqual(int(jitted['first'][i]), min(want))
      # eager (no jit, no vmap) agrees on one state
      i = cells.index(((4, 4), False))
      s = jax.tree.map(lambda x, i=i: x[i], states)
      np.testing.assert_array_equal(keydoor.optimal_actions(env, s), jitted['opt'][i])

  def test_noisy_bfs_action_frequencies(self):
    env = _hand_env(HAND[3])  # open grid: from (4, 0) without key, UP and RIGHT are optimal
    s = _state(env, 0, 4, 0)
    keys = jax.random.split(jax.random.key(0), 4000)
    for p_opt in (0.0, 0.3, 1.0):
      acts = np.asarray(
        jax.jit(jax.vmap(lambda k, p=p_opt: keydoor.noisy_bfs_action(env, s, k, p)))(keys)
      )
      freq = np.bincount(acts, minlength=4) / len(acts)
      # legal: UP, RIGHT (both optimal); never DOWN / LEFT (off the grid)
      self.assertEqual(freq[keydoor.DOWN - keydoor.UP] + freq[keydoor.LEFT - keydoor.UP], 0.0)
      np.testing.assert_allclose(freq[[0, 3]], [0.5, 0.5], atol=0.03)
    s = _state(env, 0, 2, 0)  # legal UP, DOWN, RIGHT; optimal RIGHT only (K at (2, 2))
    for p_opt in (0.0, 0.3, 1.0):
      acts = np.asarray(jax.vmap(lambda k, p=p_opt: keydoor.noisy_bfs_action(env, s, k, p))(keys))
      freq = np.bincount(acts, minlength=4) / len(acts)
      want = np.asarray([1, 1, 0, 1]) * (1 - p_opt) / 3 + np.asarray([0, 0, 0, 1]) * p_opt
      np.testing.assert_allclose(freq, want, atol=0.03)

  def test_optimal_demonstrations_succeed_within_the_shortest_path(self):
    env = keydoor.make(size=5, num_walls=3, horizon=20, num_layouts=8, seed=3)
    tasks = env.sample_tasks(jax.random.key(0), 32)
    s = jax.device_get(
      jax.jit(
        lambda k, t: multiturn.scripted_rollout(env, k, t, keydoor.noisy_bfs_policy(env, 1.0))
      )(jax.random.key(1), tasks)
    )
    for i in range(32):
      size, l = 5, int(tasks.layout[i])
      walls = {tuple(w) for w in env.layouts['walls'][l]}
      key, door = tuple(env.layouts['key'][l]), tuple(env.layouts['door'][l])
      start = divmod(int(tasks.start[i]), size)
      need = _ref_bfs(size, walls | {door}, key)[start] + _ref_bfs(size, walls, door)[key]
      if need <= env.horizon:
        self.assertEqual((s.returns[i], s.lengths[i]), (1.0, need))
      else:
        self.assertEqual(s.returns[i], 0.0)


class ValidationTasksTest(absltest.TestCase):
  def test_distinct_in_pool_and_disjoint_from_the_taken_tasks(self):
    env = keydoor.make(size=4, num_walls=0, horizon=8, num_layouts=4)  # few tasks: collisions
    taken = env.sample_tasks(jax.random.key(5), 8)
    val = keydoor.validation_tasks(env, taken, 8, seed=3)
    pairs = list(zip(np.asarray(val.layout).tolist(), np.asarray(val.start).tolist()))
    used = set(zip(np.asarray(taken.layout).tolist(), np.asarray(taken.start).tolist()))
    self.assertTrue(len(pairs) == 8 and len(set(pairs)) == 8 and not set(pairs) & used)
    ok = env.layouts['start_ok']
    self.assertTrue(all(lay < env.num_layouts and ok[lay, c] for lay, c in pairs))
    again = keydoor.validation_tasks(env, taken, 8, seed=3)
    np.testing.assert_array_equal(again.start, val.start)


if __name__ == '__main__':
  absltest.main()
