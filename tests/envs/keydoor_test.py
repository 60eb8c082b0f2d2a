"""KeyDoor dynamics (key, door as wall, success, no-op moves), layouts, tokens."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from jaxca.envs import keydoor


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


if __name__ == '__main__':
  absltest.main()
