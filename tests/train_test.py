"""Tests for jaxca.train: optimizer table, gradient step, minibatch epochs."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxca import train


class MakeOptimizerTest(absltest.TestCase):
  def test_unknown_name_lists_choices(self):
    with self.assertRaisesRegex(ValueError, 'adamw'):
      train.make_optimizer(ml_collections.ConfigDict(dict(name='adamax2', lr=1e-3)))

  def test_clipping_and_warmup(self):
    cfg = ml_collections.ConfigDict(dict(name='sgd', lr=1.0, max_grad_norm=1.0, warmup_steps=2))
    tx = train.make_optimizer(cfg)
    params = jnp.zeros(2)
    state = tx.init(params)
    grads = jnp.array([30.0, 40.0])  # norm 50 -> clipped to unit norm
    seen = []
    for _ in range(3):
      updates, state = tx.update(grads, state, params)
      seen.append(np.asarray(updates))
    # warm-up: lr 0 at step 0, 0.5 at step 1, 1.0 afterwards; sgd update = -lr * clipped grad.
    np.testing.assert_allclose(seen[0], [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(seen[1], [-0.3, -0.4], rtol=1e-5)
    np.testing.assert_allclose(seen[2], [-0.6, -0.8], rtol=1e-5)


class MinibatchEpochsTest(absltest.TestCase):
  def test_visits_every_row_once_per_epoch(self):
    batch = dict(x=jnp.arange(12.0))

    def step(carry, mb):
      return carry + mb['x'].sum(), dict(n=mb['x'].shape[0])

    total, metrics = jax.jit(
      lambda c, b, k: train.minibatch_epochs(step, c, b, k, num_epochs=3, num_minibatches=4)
    )(jnp.zeros([]), batch, jax.random.key(0))
    self.assertEqual(float(total), 3 * sum(range(12)))
    self.assertEqual(metrics['n'].shape, (3, 4))

  def test_unshuffled_gradient_steps_equal_manual_loop(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8,)).astype(np.float32)
    tx = optax.adam(1e-2)

    def loss_fn(w, mb):
      err = mb['x'] @ w - mb['y']
      return jnp.mean(err**2), dict(mse=jnp.mean(err**2))

    w0 = jnp.zeros(3)
    step = train.make_gradient_step(loss_fn, tx)
    (w, _), metrics = train.minibatch_epochs(
      step,
      (w0, tx.init(w0)),
      dict(x=x, y=y),
      jax.random.key(0),
      num_epochs=2,
      num_minibatches=2,
      shuffle=False,
    )
    w_ref, s_ref = w0, tx.init(w0)
    for _ in range(2):
      for i in range(2):
        mb = dict(x=x[4 * i : 4 * i + 4], y=y[4 * i : 4 * i + 4])
        g = jax.grad(lambda w: loss_fn(w, mb)[0])(w_ref)
        u, s_ref = tx.update(g, s_ref, w_ref)
        w_ref = optax.apply_updates(w_ref, u)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6)
    self.assertEqual(metrics['grad_norm'].shape, (2, 2))

  def test_indivisible_batch_is_rejected(self):
    with self.assertRaisesRegex(ValueError, 'num_minibatches'):
      train.minibatch_epochs(
        lambda c, b: (c, {}),
        0,
        dict(x=jnp.zeros(10)),
        jax.random.key(0),
        num_epochs=1,
        num_minibatches=3,
      )


if __name__ == '__main__':
  absltest.main()
