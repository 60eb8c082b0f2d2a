"""FSDP + data parallelism: on a ('data', 'fsdp') = (2, 4) mesh of 8 fake CPU devices, the
RL update of a Qwen2-shaped policy with parameters and optimizer state sharded over 'fsdp'
equals the single-device update, and orbax saves and restores the sharded state.

The 8 devices need `XLA_FLAGS=--xla_force_host_platform_device_count=8` before jax is
imported, so the checks run in a subprocess spawned here.
"""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxca import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent(
  """
  import sys
  import jax
  jax.config.update('jax_threefry_partitionable', True)
  jax.config.update('jax_numpy_rank_promotion', 'raise')
  import jax.numpy as jnp
  import numpy as np
  import optax

  from jaxca import checkpoint, estimators, lm, parallel, tasks
  from jaxca.networks import hf

  assert jax.device_count() == 8, jax.devices()
  task = tasks.make('arith', num_steps=1, modulus=5)
  cfg = hf.HFConfig(family='qwen2', vocab_size=task.vocab.size, hidden_size=32,
                    intermediate_size=48, num_layers=1, num_heads=4, num_kv_heads=2,
                    head_dim=8, tie_embeddings=True, qkv_bias=True, max_position_embeddings=8)
  policy = hf.make_policy(cfg)
  tx = optax.adam(3e-3)
  update = lm.make_rl_update(policy, task, estimators.make('grpo'), tx, group_size=2,
                             num_epochs=1, num_minibatches=2, loss_cfg=dict(ent_coef=0.01))
  state = lm.make_init(policy, tx)(jax.random.key(0))
  batch = {k: jnp.asarray(v) for k, v in task.generate(0, 16).items()}
  key = jax.random.key(3)

  mesh = parallel.make_fsdp_mesh(4)
  assert mesh.shape == {'data': 2, 'fsdp': 4}, mesh.shape
  shardings = parallel.fsdp_shardings(state, mesh)
  repl = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh, axis=parallel.BATCH_AXES)
  s8 = parallel.shard_params(state, mesh)
  emb = s8['params']['embed']['embedding']
  assert emb.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp'), emb.sharding
  assert emb.addressable_shards[0].data.shape == (cfg.vocab_size, 8)
  mu = s8['opt_state'][0].mu['layer_0_mlp']['gate']['kernel']
  assert mu.addressable_shards[0].data.shape == (32, 12), mu.addressable_shards[0].data.shape

  single = jax.jit(update)
  sharded = jax.jit(update, in_shardings=(shardings, data, repl), out_shardings=(shardings, repl))
  def close(a, b, what):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5, err_msg=what)
  s1 = state
  for i in range(2):
    s1, m1 = single(s1, batch, jax.random.fold_in(key, i))
    s8, m8 = sharded(s8, parallel.shard_batch(batch, mesh), jax.random.fold_in(key, i))
    close(s1, s8, f'state after update {i}')
    close(m1, m8, f'metrics {i}')
  assert s8['params']['embed']['embedding'].sharding == shardings['params']['embed']['embedding']
  changed = any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state['params']),
                                                         jax.tree.leaves(s1['params'])))
  assert changed

  with checkpoint.Checkpointer(sys.argv[1]) as ckpt:
    ckpt.maybe_save(2, s8, force=True)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          jax.eval_shape(lambda: state), shardings)
  with checkpoint.Checkpointer(sys.argv[1]) as ckpt:
    back = ckpt.restore(abstract)
  for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(s8)):
    assert x.sharding == y.sharding, (x.sharding, y.sharding)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  print('OK reward', float(m1['reward']), 'loss', float(m1['loss']))
  """
)


def test_fsdp_update_equals_single_device_on_8_fake_devices(tmp_path):
  env = dict(os.environ)
  env.update(
    XLA_FLAGS='--xla_force_host_platform_device_count=8',
    JAX_PLATFORMS='cpu',
    JAX_DISABLE_MOST_OPTIMIZATIONS='1',  # compile time dominates; results are unaffected
    PYTHONPATH=ROOT + os.pathsep + env.get('PYTHONPATH', ''),
  )
  proc = subprocess.run(
    [sys.executable, '-c', _SCRIPT, str(tmp_path / 'ckpt')],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  assert 'OK' in proc.stdout


@pytest.mark.parametrize(
  'shape, n, spec',
  [
    ((12, 8), 4, ('fsdp',)),  # the larger divisible dimension
    ((6, 8), 4, (None, 'fsdp')),
    ((7, 3), 4, ()),
    ((), 4, ()),
    ((16,), 4, ('fsdp',)),
    ((16, 4), 1, ()),
  ],
)
def test_fsdp_spec(shape, n, spec):
  assert tuple(parallel.fsdp_spec(shape, n)) == tuple(spec)
  assert tuple(parallel.fsdp_spec((4, 4), 4, min_size=32)) == ()
  assert tuple(parallel.fsdp_spec((8, 8), 4)) == ('fsdp',)  # tie: the earlier dimension


def test_fsdp_mesh_on_local_devices():
  mesh = parallel.make_fsdp_mesh(1)
  assert mesh.axis_names == parallel.BATCH_AXES
  tree = {'w': np.arange(12.0).reshape(3, 4)}
  out = parallel.shard_params(tree, mesh)
  np.testing.assert_array_equal(out['w'], tree['w'])
  with pytest.raises(ValueError, match='divisor'):
    parallel.make_fsdp_mesh(jax.device_count() + 1)
