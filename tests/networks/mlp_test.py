"""Tests for jaxca/networks/mlp.py: shapes, dtypes, initialisation, bad names."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxca.networks import mlp


class ActorCriticTest(parameterized.TestCase):
  @parameterized.parameters(((5, 4),), ((2, 3, 4),), ((4,),))
  def test_shapes_and_dtypes(self, obs_shape):
    net = mlp.ActorCritic(num_actions=3, hidden_sizes=(8, 8))
    params = net.init(jax.random.key(0), jnp.zeros((1, 4)))
    logits, values = net.apply(params, jnp.ones(obs_shape, jnp.float32))
    self.assertEqual(logits.shape, obs_shape[:-1] + (3,))
    self.assertEqual(values.shape, obs_shape[:-1])
    self.assertEqual(logits.dtype, jnp.float32)
    self.assertEqual(values.dtype, jnp.float32)

  def test_orthogonal_init_gains(self):
    # Hidden kernels: rows orthogonal with norm sqrt(2); policy head near-uniform.
    net = mlp.ActorCritic(num_actions=2, hidden_sizes=(16,))
    params = net.init(jax.random.key(1), jnp.zeros((1, 4)))['params']
    w = np.asarray(params['actor_0']['kernel'])  # [4, 16]
    np.testing.assert_allclose(w @ w.T, 2.0 * np.eye(4), atol=1e-5)
    logits, _ = net.apply({'params': params}, jax.random.normal(jax.random.key(2), (64, 4)))
    self.assertLess(float(jnp.max(jnp.abs(logits))), 0.5)

  def test_towers_are_separate(self):
    net = mlp.ActorCritic(num_actions=2, hidden_sizes=(8,))
    params = net.init(jax.random.key(0), jnp.zeros((1, 3)))
    obs = jnp.ones((2, 3))
    grads = jax.grad(lambda p: net.apply(p, obs)[1].sum())(params)['params']
    self.assertEqual(float(jnp.abs(grads['actor_0']['kernel']).sum()), 0.0)
    self.assertGreater(float(jnp.abs(grads['critic_0']['kernel']).sum()), 0.0)

  def test_unknown_activation_lists_choices(self):
    cfg = ml_collections.ConfigDict(dict(hidden_sizes=(4,), activation='swishy'))
    with self.assertRaisesRegex(ValueError, "Unknown activation 'swishy'.*tanh"):
      mlp.make_actor_critic(cfg, num_actions=2)

  def test_make_actor_critic(self):
    cfg = ml_collections.ConfigDict(dict(hidden_sizes=(4, 5), activation='relu'))
    net = mlp.make_actor_critic(cfg, num_actions=6)
    self.assertEqual(
      (net.num_actions, tuple(net.hidden_sizes), net.activation), (6, (4, 5), 'relu')
    )


def _qr_batch_sizes(jaxpr):
  """Leading batch size of every QR-like primitive's operand, at any nesting depth."""
  sizes = []
  for eqn in jaxpr.eqns:
    if any(n in eqn.primitive.name for n in ('qr', 'geqrf', 'householder', 'orgqr')):
      sizes.append(tuple(eqn.invars[0].aval.shape[:-2]))
    for sub in jax.core.jaxprs_in_params(eqn.params):
      sizes.extend(_qr_batch_sizes(sub))
  return sizes


class OrthogonalTest(parameterized.TestCase):
  """`mlp.orthogonal`: flax's values, but no batched QR under vmap (issue 17)."""

  @parameterized.parameters(((64, 64), 1.0), ((4, 16), 2.0**0.5), ((16, 3), 0.01))
  def test_same_values_as_flax(self, shape, scale):
    ours, flax_init = mlp.orthogonal(scale), nn.initializers.orthogonal(scale)
    key = jax.random.key(3)
    np.testing.assert_array_equal(ours(key, shape), flax_init(key, shape))
    keys = jax.random.split(key, 5)
    for fn in (jax.vmap, lambda f: jax.jit(jax.vmap(f))):
      np.testing.assert_array_equal(
        fn(lambda k: ours(k, shape))(keys), fn(lambda k: flax_init(k, shape))(keys)
      )

  def test_vmap_has_no_batched_qr(self):
    keys = jax.random.split(jax.random.key(0), 8)
    flax_init = nn.initializers.orthogonal(1.0)
    batched = _qr_batch_sizes(jax.make_jaxpr(jax.vmap(lambda k: flax_init(k, (8, 8))))(keys).jaxpr)
    self.assertTrue(any(b == (8,) for b in batched), batched)  # the probe sees flax's batch
    ours = mlp.orthogonal(1.0)
    looped = _qr_batch_sizes(jax.make_jaxpr(jax.vmap(lambda k: ours(k, (8, 8))))(keys).jaxpr)
    self.assertNotEmpty(looped)
    self.assertTrue(all(b == () for b in looped), looped)

  def test_vmapped_inits_do_not_hang(self):
    # With flax's initializer this program (six orthogonal inits vmapped over 64 seeds)
    # deadlocked jaxlib 0.10.2 on the 2-core CPU in 5 of 5 runs, mostly on the first call
    # (BUILD_NOTES.md > Gotchas); the timeout turns a regression into a failure.
    code = textwrap.dedent("""
      import jax
      from jaxca.networks import mlp
      init = mlp.orthogonal(1.0)
      def six(key):
        keys = jax.random.split(key, 6)
        return [init(keys[i], (64 + i, 64)) for i in range(6)]
      program = jax.jit(jax.vmap(six))
      keys = jax.random.split(jax.random.key(0), 64)
      for _ in range(100):
        jax.block_until_ready(program(keys))
      print('ok')
    """)
    try:
      out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=240,
        env=dict(os.environ, JAX_PLATFORMS='cpu'),
      )  # fmt: skip
    except subprocess.TimeoutExpired as e:
      self.fail(f'vmapped orthogonal init hung (issue 17): {e.stdout!r} {e.stderr!r}')
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    self.assertIn('ok', out.stdout)


if __name__ == '__main__':
  absltest.main()
