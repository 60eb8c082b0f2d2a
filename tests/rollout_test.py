"""Tests for jaxca/rollout.py on the real gymnax CartPole: shapes, auto-reset, time limits."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import rollout as rollout_lib

GAMMA = 0.9


def linear_policy(params, obs):
  """Uniform policy with a linear value V(s) = s @ w (checkable by hand)."""
  logits = jnp.zeros(obs.shape[:-1] + (2,), jnp.float32)
  return logits, obs @ params


def make(num_envs, num_steps, max_steps=0):
  env, env_params, num_actions = rollout_lib.make_env('CartPole-v1', max_steps_in_episode=max_steps)
  assert num_actions == 2
  reset = rollout_lib.make_reset(env, env_params, num_envs=num_envs)
  run = rollout_lib.make_rollout(
    env, env_params, linear_policy, num_envs=num_envs, num_steps=num_steps, gamma=GAMMA
  )
  return jax.jit(reset), jax.jit(run)


W = jnp.array([1.0, -2.0, 3.0, 0.5], jnp.float32)


class RolloutTest(absltest.TestCase):
  def test_shapes_dtypes_and_alignment(self):
    reset, run = make(num_envs=3, num_steps=40)
    carry = reset(jax.random.key(0))
    carry2, traj = run(W, carry, jax.random.key(1))
    for name in ('log_probs', 'values', 'rewards', 'discounts', 'final_values', 'episode_returns'):
      self.assertEqual(getattr(traj, name).shape, (3, 40), name)
      self.assertEqual(getattr(traj, name).dtype, jnp.float32, name)
    for name in ('truncated', 'dones', 'mask'):
      self.assertEqual(getattr(traj, name).dtype, jnp.bool_, name)
    self.assertEqual(traj.obs.shape, (3, 40, 4))
    self.assertEqual(traj.actions.dtype, jnp.int32)
    self.assertEqual(traj.bootstrap_value.shape, (3,))
    t = jax.device_get(traj)
    np.testing.assert_allclose(t.values, t.obs @ np.asarray(W), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.log_probs, np.log(0.5), rtol=1e-6)
    np.testing.assert_allclose(t.bootstrap_value, np.asarray(carry2.obs) @ np.asarray(W), rtol=1e-5)
    # Where no episode ended, the true next observation is the next stored one.
    same = ~t.dones[:, :-1]
    np.testing.assert_allclose(t.final_values[:, :-1][same], t.values[:, 1:][same], rtol=1e-5)
    self.assertTrue(t.mask.all())

  def test_termination_cuts_discount_and_resets(self):
    # A uniform policy on CartPole-v1 terminates (pole falls) within ~10-60 steps.
    reset, run = make(num_envs=4, num_steps=64)
    _, traj = run(W, reset(jax.random.key(0)), jax.random.key(3))
    t = jax.device_get(traj)
    terminated = t.dones & ~t.truncated
    self.assertGreater(terminated.sum(), 0)
    self.assertFalse(t.truncated.any())  # 64 < 500 steps
    np.testing.assert_array_equal(t.discounts, np.where(terminated, 0.0, GAMMA).astype(np.float32))
    # The step after an episode end starts from a fresh reset state (|s| <= 0.05).
    b, i = np.nonzero(terminated[:, :-1])
    self.assertTrue(np.all(np.abs(t.obs[b, i + 1]) <= 0.05))
    # Episode returns are the number of steps since the previous end (reward 1 per step).
    for env_i in range(4):
      ends = np.nonzero(t.dones[env_i])[0]
      lengths = np.diff(np.concatenate([[-1], ends]))
      np.testing.assert_array_equal(t.episode_returns[env_i, ends][1:], lengths[1:])

  def test_time_limit_is_truncation_not_termination(self):
    # max_steps_in_episode=5 is too short for CartPole to terminate (|theta| needs
    # > 0.2 rad from <= 0.05), so every episode is truncated after exactly 5 steps,
    # and the count runs on across rollout calls (the env carry persists).
    reset, run = make(num_envs=2, num_steps=7, max_steps=5)
    carry = reset(jax.random.key(0))
    carry, first = run(W, carry, jax.random.key(1))
    carry, second = run(W, carry, jax.random.key(2))
    truncated = np.concatenate([first.truncated, second.truncated], axis=1)  # 14 steps
    expected = np.zeros((2, 14), bool)
    expected[:, [4, 9]] = True
    np.testing.assert_array_equal(truncated, expected)
    np.testing.assert_array_equal(np.concatenate([first.dones, second.dones], 1), expected)
    np.testing.assert_array_equal(first.discounts, np.full((2, 7), GAMMA, np.float32))
    np.testing.assert_array_equal(first.episode_returns[:, 4], [5.0, 5.0])
    np.testing.assert_array_equal(np.asarray(carry.last_length), [5, 5])
    # The bootstrap value is V(true final obs), not V(reset obs) stored next.
    self.assertTrue(np.all(np.abs(np.asarray(first.obs[:, 5])) <= 0.05))
    self.assertFalse(np.allclose(first.final_values[:, 4], first.values[:, 5]))
    # td_inputs folds gamma * V(final) into the reward and cuts the trace there.
    rewards, discounts = jax.device_get(rollout_lib.td_inputs(first))
    np.testing.assert_allclose(rewards[:, 4], 1.0 + GAMMA * first.final_values[:, 4], rtol=1e-6)
    np.testing.assert_array_equal(discounts[:, 4], [0.0, 0.0])
    keep = np.ones(7, bool)
    keep[4] = False
    np.testing.assert_array_equal(rewards[:, keep], first.rewards[:, keep])

  def test_predrawn_resets_are_bit_identical_to_env_step(self):
    # The fast path replays gymnax's Environment.step with resets drawn before the loop;
    # both paths must give the same trajectory and carry, with terminations (uniform
    # policy) and truncations: bit for bit on CartPole; on Acrobot (RK4 dynamics) XLA
    # fuses the float arithmetic differently, so floats agree to rounding (<= 2.4e-7 seen)
    # and every discrete leaf (actions, dones, truncations) exactly.
    for name, max_steps in (('CartPole-v1', 5), ('CartPole-v1', 0), ('Acrobot-v1', 7)):
      env, env_params, _ = rollout_lib.make_env(name, max_steps_in_episode=max_steps)
      dim = int(np.prod(env.observation_space(env_params).shape))
      w = jnp.linspace(-1.0, 1.0, dim, dtype=jnp.float32)
      reset = jax.jit(rollout_lib.make_reset(env, env_params, num_envs=3))
      outs = []
      for predraw in (True, False):
        run = jax.jit(
          rollout_lib.make_rollout(
            env, env_params, linear_policy, num_envs=3, num_steps=23, gamma=GAMMA,
            predraw_resets=predraw,
          )
        )  # fmt: skip
        carry = reset(jax.random.key(0))
        trajs = []
        for i in range(3):
          carry, traj = run(w, carry, jax.random.key(i + 1))
          trajs.append(traj)
        outs.append(jax.device_get((carry, trajs)))
      fast, slow = (jax.tree.leaves(o) for o in outs)
      self.assertEqual(len(fast), len(slow))
      for a, b in zip(fast, slow):
        if name == 'CartPole-v1' or not np.issubdtype(a.dtype, np.floating):
          np.testing.assert_array_equal(a, b, err_msg=name)
        else:
          np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
      self.assertTrue(np.any([t.dones.any() for t in outs[0][1]]), name)

  def test_bad_env_names_fail_with_choices(self):
    with self.assertRaisesRegex(ValueError, "Unknown gymnax env 'CartPole-v9'.*Acrobot-v1"):
      rollout_lib.make_env('CartPole-v9')
    with self.assertRaisesRegex(ValueError, 'only discrete action spaces'):
      rollout_lib.make_env('Pendulum-v1')


if __name__ == '__main__':
  absltest.main()
