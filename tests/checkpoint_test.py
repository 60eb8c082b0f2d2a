"""Tests for jaxca.checkpoint: round trips, save intervals, async + donation, init_from."""

import os
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxca import checkpoint


def _state(seed=0):
  rng = np.random.default_rng(seed)
  params = {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), 'b': jnp.zeros(4)}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)  # non-trivial moments and count
  return dict(step=jnp.asarray(seed + 1, jnp.int32), params=params, opt_state=opt_state)


def _assert_tree_equal(a, b):
  self_a, self_b = jax.tree.structure(a), jax.tree.structure(b)
  assert self_a == self_b, (self_a, self_b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class CheckpointerTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    self.dir = self.enter_context(tempfile.TemporaryDirectory())

  def test_restore_or_init_initialises_when_empty(self):
    with checkpoint.Checkpointer(self.dir, every=1) as ckpt:
      state, step = ckpt.restore_or_init(lambda: _state(3))
    self.assertIsNone(step)
    _assert_tree_equal(state, _state(3))

  def test_round_trip_keeps_structure_and_values(self):
    expected = _state(1)
    with checkpoint.Checkpointer(self.dir, every=1) as ckpt:
      self.assertTrue(ckpt.maybe_save(7, _state(1)))
    with checkpoint.Checkpointer(self.dir, every=1) as ckpt:
      state, step = ckpt.restore_or_init(lambda: _state(0))
    self.assertEqual(step, 7)
    _assert_tree_equal(state, expected)  # the optax namedtuples come back as namedtuples

  def test_save_interval_force_and_max_to_keep(self):
    with checkpoint.Checkpointer(self.dir, every=4, max_to_keep=2) as ckpt:
      saved = [ckpt.maybe_save(s, _state(s)) for s in range(1, 10)]
      self.assertTrue(ckpt.maybe_save(9, _state(9), force=True))
      ckpt.wait()
      self.assertEqual([s for s, ok in zip(range(1, 10), saved) if ok], [4, 8])
      self.assertEqual(ckpt.all_steps(), [8, 9])
      self.assertEqual(ckpt.latest_step(), 9)
      self.assertFalse(ckpt.maybe_save(9, _state(9), force=True))  # already there

  def test_async_save_survives_deleting_the_arrays(self):
    """The caller may donate/delete the state right after `maybe_save` returns."""
    state = _state(2)
    expected = jax.tree.map(np.asarray, state)
    ckpt = checkpoint.Checkpointer(self.dir, every=1, async_save=True)
    ckpt.maybe_save(1, state)
    for leaf in jax.tree.leaves(state):
      leaf.delete()
    ckpt.close()
    with checkpoint.Checkpointer(self.dir) as ckpt:
      restored = ckpt.restore(jax.eval_shape(lambda: _state(0)))
    _assert_tree_equal(restored, expected)

  def test_restore_lands_on_the_requested_sharding(self):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with checkpoint.Checkpointer(self.dir) as ckpt:
      ckpt.maybe_save(1, _state(1))
      ckpt.wait()
      abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), jax.eval_shape(lambda: _state(0))
      )
      state = ckpt.restore(abstract, sharding=sharding)
    for leaf in jax.tree.leaves(state):
      self.assertEqual(leaf.sharding, sharding)

  def test_restore_without_checkpoint_raises(self):
    with checkpoint.Checkpointer(self.dir) as ckpt:
      with self.assertRaisesRegex(FileNotFoundError, 'No checkpoint'):
        ckpt.restore(_state(0))

  def test_load_params_reads_only_the_params(self):
    with checkpoint.Checkpointer(self.dir) as ckpt:
      ckpt.maybe_save(3, _state(4))
    params = checkpoint.load_params(self.dir)
    _assert_tree_equal(params, _state(4)['params'])
    empty = os.path.join(self.dir, 'empty')
    os.makedirs(empty)
    with self.assertRaisesRegex(FileNotFoundError, 'no checkpoint'):
      checkpoint.load_params(empty)
    # A missing directory is an error and is not created (orbax would create it).
    missing = os.path.join(self.dir, 'missing')
    with self.assertRaisesRegex(FileNotFoundError, 'not a directory'):
      checkpoint.load_params(missing)
    self.assertFalse(os.path.exists(missing))

  def _truncate(self, step):
    for root, _, files in os.walk(os.path.join(self.dir, str(step))):
      if os.path.basename(root) == 'd':  # the array data files (OCDBT)
        for name in files:
          with open(os.path.join(root, name), 'r+b') as f:
            f.truncate(8)

  def test_restore_latest_refuses_other_shapes_and_arrays(self):
    with checkpoint.Checkpointer(self.dir, every=1) as ckpt:
      ckpt.maybe_save(1, _state(1))
    other = _state(1)
    other['params']['w'] = jnp.zeros((3, 5))
    with checkpoint.Checkpointer(self.dir) as ckpt:
      with self.assertRaisesRegex(
        checkpoint.runs.ConfigError, r'^checkpoint step 1 .* holds params\.w of shape \(3, 4\)'
      ):
        ckpt.restore_latest(other)
      other = _state(1)
      other['params']['v'] = jnp.zeros(2)
      with self.assertRaisesRegex(checkpoint.runs.ConfigError, 'builds params.v'):
        ckpt.restore_latest(other)
      self.assertEqual(ckpt.all_steps(), [1])  # nothing moved aside

  def test_restore_latest_skips_an_unreadable_step(self):
    """A truncated file in the latest step: named, moved aside, the step before restored."""
    with checkpoint.Checkpointer(self.dir, every=1) as ckpt:
      ckpt.maybe_save(1, _state(1))
      ckpt.maybe_save(2, _state(2))
    self._truncate(2)
    notes = []
    original, checkpoint.runs.note = checkpoint.runs.note, notes.append
    try:
      with checkpoint.Checkpointer(self.dir) as ckpt:
        state, step = ckpt.restore_latest(_state(0))
        self.assertEqual(step, 1)
        self.assertEqual(ckpt.all_steps(), [1])
        self.assertTrue(ckpt.maybe_save(2, _state(2)))  # the step can be saved again
    finally:
      checkpoint.runs.note = original
    _assert_tree_equal(state, _state(1))
    (line,) = notes
    self.assertRegex(line, r'^checkpoint step\(s\) 2 in .* cannot be read .*resuming from step 1')
    self.assertTrue(os.path.isdir(self.dir + '_unreadable/2'))

  def test_restore_latest_with_no_readable_step_is_one_line(self):
    with checkpoint.Checkpointer(self.dir, every=1) as ckpt:
      ckpt.maybe_save(1, _state(1))
    self._truncate(1)
    with checkpoint.Checkpointer(self.dir) as ckpt:
      with self.assertRaisesRegex(checkpoint.runs.ConfigError, r'no checkpoint in .* can be read'):
        ckpt.restore_latest(_state(0))
      self.assertEqual(ckpt.all_steps(), [1])  # left in place: the user decides
    with checkpoint.Checkpointer(self.dir + '_empty') as ckpt:
      self.assertEqual(ckpt.restore_latest(_state(0)), (None, None))

  def test_bad_interval(self):
    with self.assertRaisesRegex(ValueError, 'every'):
      checkpoint.Checkpointer(self.dir, every=0)


if __name__ == '__main__':
  absltest.main()
