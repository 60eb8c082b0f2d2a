"""Data parallelism: the sharded RL/SFT updates equal the single-device ones (8 fake CPU devices).

The 8 devices need `XLA_FLAGS=--xla_force_host_platform_device_count=8` before
jax is imported, so the multi-device checks run in a subprocess spawned here.
"""

import os
import subprocess
import sys
import textwrap
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np

from jaxca import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent(
  """
  import jax
  jax.config.update('jax_threefry_partitionable', True)
  jax.config.update('jax_numpy_rank_promotion', 'raise')
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  import optax

  from jaxca import estimators, lm, ops, parallel, tasks
  from jaxca.networks import transformer

  assert jax.device_count() == 8, jax.devices()
  task = tasks.make('arith', num_steps=1, modulus=5)
  policy = transformer.make_policy(ml_collections.ConfigDict(dict(
      width=16, depth=1, num_heads=2, max_len=8, dtype='float32', value_head=False)),
      vocab_size=task.vocab.size)
  tx = optax.adam(3e-3)
  update = lm.make_rl_update(policy, task, estimators.make('grpo'), tx, group_size=2,
                             num_epochs=1, num_minibatches=2, loss_cfg=dict(ent_coef=0.01))
  sft = lm.make_sft_update(policy, task, tx)
  state = lm.make_init(policy, tx)(jax.random.key(0))
  batch = {k: jnp.asarray(v) for k, v in task.generate(0, 16).items()}
  key = jax.random.key(3)

  mesh = parallel.make_mesh()
  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  # Warm up the policy a little so that rewards (hence advantages) are not all zero.
  sft_single = jax.jit(sft)
  sft_sharded = jax.jit(sft, in_shardings=(repl, data), out_shardings=repl)
  s1, s8 = state, parallel.replicate(state, mesh)
  for _ in range(3):
    s1, m1 = sft_single(s1, batch)
    s8, m8 = sft_sharded(s8, parallel.shard_batch(batch, mesh))
  def close(a, b, what):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5, err_msg=what)
  close(s1['params'], s8['params'], 'sft params')
  close(m1, m8, 'sft metrics')

  single = jax.jit(update)
  sharded = jax.jit(update, in_shardings=(repl, data, repl), out_shardings=repl)
  r1, n1 = single(s1, batch, key)
  r8, n8 = sharded(s8, parallel.shard_batch(batch, mesh), key)
  assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(r8['params']))
  close(r1['params'], r8['params'], 'rl params')
  close(r1['opt_state'], r8['opt_state'], 'rl opt_state')
  close(n1, n8, 'rl metrics')
  changed = any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s1['params']),
                                                         jax.tree.leaves(r1['params'])))
  assert changed

  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 5)), jnp.float32)
  m = jnp.asarray(np.random.default_rng(1).random((16, 5)) < 0.6)
  xs, ms = parallel.shard_batch((x, m), mesh)
  got = jax.jit(lambda a, b: parallel.global_masked_mean(a, b, mesh))(xs, ms)
  np.testing.assert_allclose(got, ops.masked_mean(x, m), rtol=1e-6)
  try:
    parallel.shard_batch(np.zeros((9, 2)), mesh)
    raise AssertionError('9 rows over 8 devices must fail')
  except ValueError as e:
    assert 'divisible' in str(e)
  print('OK rl_reward', float(n1['reward']), 'loss', float(n1['loss']))
  """
)


class ParallelSubprocessTest(absltest.TestCase):
  def test_sharded_updates_equal_single_device_on_8_fake_devices(self):
    env = dict(os.environ)
    env.update(
      XLA_FLAGS='--xla_force_host_platform_device_count=8',
      JAX_PLATFORMS='cpu',
      JAX_DISABLE_MOST_OPTIMIZATIONS='1',  # compile time dominates; results are unaffected
      PYTHONPATH=ROOT + os.pathsep + env.get('PYTHONPATH', ''),
    )
    proc = subprocess.run(
      [sys.executable, '-c', _SCRIPT],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
    )
    self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-6000:])
    self.assertIn('OK', proc.stdout)


class MeshHelpersTest(absltest.TestCase):
  def test_mesh_and_shardings_on_the_local_devices(self):
    mesh = parallel.make_mesh()
    self.assertEqual(mesh.axis_names, ('data',))
    self.assertEqual(mesh.devices.size, jax.device_count())
    x = np.arange(2 * jax.device_count() * 3).reshape(3, 2 * jax.device_count())
    y = parallel.shard_batch(x, mesh, batch_axis=1)
    np.testing.assert_array_equal(y, x)
    self.assertEqual(y.sharding, parallel.batch_sharding(mesh, 1))

  def test_initialize_distributed_is_a_noop_when_disabled(self):
    self.assertFalse(parallel.maybe_initialize_distributed(False))

  def test_initialize_distributed_reads_process_count_and_id_from_the_environment(self):
    # JAX itself reads only JAX_COORDINATOR_ADDRESS; `--multihost` outside a managed cluster
    # needs the other two (the same command on every host, only JAX_PROCESS_ID differs).
    seen = []
    env = dict(JAX_NUM_PROCESSES='2', JAX_PROCESS_ID='1')
    with (
      mock.patch.dict(os.environ, env),
      mock.patch.object(jax.distributed, 'initialize', lambda **kw: seen.append(kw)),
    ):
      self.assertTrue(parallel.maybe_initialize_distributed(True))
      parallel.maybe_initialize_distributed(True, process_id=0)  # kwargs win
      os.environ['JAX_PROCESS_ID'] = 'one'
      with self.assertRaisesRegex(ValueError, 'JAX_PROCESS_ID must be a non-negative integer'):
        parallel.maybe_initialize_distributed(True)
    self.assertEqual(
      seen, [dict(num_processes=2, process_id=1), dict(num_processes=2, process_id=0)]
    )


if __name__ == '__main__':
  absltest.main()
