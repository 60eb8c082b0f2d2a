"""Tests for jaxca/networks/mlp.py: shapes, dtypes, initialisation, bad names."""

from absl.testing import absltest
from absl.testing import parameterized
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


if __name__ == '__main__':
  absltest.main()
