"""Tests for jaxca/ppo.py: one update, trace-once, and the time-limit GAE difference."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxca import credit
from jaxca import ppo
from jaxca import rollout as rollout_lib
from jaxca import train
from jaxca.networks import mlp


def gae_truncation_aware_loop(r, v, final_v, boot, term, trunc, gamma, lam):
  """NumPy loop: delta bootstraps from V(true final obs) at truncations, 0 at terminations."""
  T = len(r)
  adv = np.zeros(T)
  acc = 0.0
  for t in reversed(range(T)):
    next_v = boot if t == T - 1 else v[t + 1]
    if trunc[t]:
      next_v = final_v[t]
    delta = r[t] + gamma * (1.0 - term[t]) * next_v - v[t]
    acc = delta + gamma * lam * (1.0 - term[t]) * (1.0 - trunc[t]) * acc
    adv[t] = acc
  return adv


def gae_merged_done_loop(r, v, boot, done, gamma, lam):
  """NumPy loop of PureJaxRL's GAE: `done = terminated | truncated` cuts the bootstrap."""
  T = len(r)
  adv = np.zeros(T)
  acc, next_v = 0.0, boot
  for t in reversed(range(T)):
    delta = r[t] + gamma * next_v * (1.0 - done[t]) - v[t]
    acc = delta + gamma * lam * (1.0 - done[t]) * acc
    adv[t] = acc
    next_v = v[t]
  return adv


def constructed_trajectory(gamma):
  """One env, T=6: truncation (time limit) after t=1, termination after t=4."""
  rng = np.random.default_rng(0)
  T = 6
  values = rng.normal(size=T).astype(np.float32)
  final_values = rng.normal(size=T).astype(np.float32)
  rewards = np.ones(T, np.float32)
  term = np.zeros(T, bool)
  term[4] = True
  trunc = np.zeros(T, bool)
  trunc[1] = True
  traj = rollout_lib.Trajectory(
    obs=np.zeros((1, T, 1), np.float32),
    actions=np.zeros((1, T), np.int32),
    log_probs=np.zeros((1, T), np.float32),
    values=values[None],
    rewards=rewards[None],
    discounts=(gamma * (1.0 - term)).astype(np.float32)[None],
    truncated=trunc[None],
    final_values=final_values[None],
    dones=(term | trunc)[None],
    episode_returns=np.zeros((1, T), np.float32),
    mask=np.ones((1, T), bool),
    bootstrap_value=np.array([0.7], np.float32),
  )
  return traj, term, trunc


class TimeLimitTest(absltest.TestCase):
  def test_truncation_bootstraps_from_true_final_value(self):
    gamma, lam = 0.9, 0.8
    traj, term, trunc = constructed_trajectory(gamma)
    rewards, discounts = rollout_lib.td_inputs(traj)
    adv, ret = jax.jit(credit.gae, static_argnums=())(
      rewards, traj.values, discounts, traj.bootstrap_value, lam
    )
    adv = np.asarray(adv)[0]
    r, v, fv = traj.rewards[0], traj.values[0], traj.final_values[0]
    want = gae_truncation_aware_loop(r, v, fv, 0.7, term, trunc, gamma, lam)
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ret)[0], want + v, rtol=1e-5, atol=1e-6)
    # At the truncated step: A_1 = r + gamma V(final obs) - V(s_1) (the trace is cut) ...
    np.testing.assert_allclose(adv[1], r[1] + gamma * fv[1] - v[1], rtol=1e-5)
    # ... while PureJaxRL's merged done treats the time limit as a terminal: r - V(s_1).
    merged = gae_merged_done_loop(r, v, 0.7, term | trunc, gamma, lam)
    np.testing.assert_allclose(merged[1], r[1] - v[1], rtol=1e-5)
    self.assertGreater(abs(adv[1] - merged[1]), 0.1)
    # Away from the time limit both agree (termination handled identically).
    np.testing.assert_allclose(adv[2:], merged[2:], rtol=1e-5, atol=1e-6)

  def test_terminated_and_truncated_together_does_not_bootstrap(self):
    gamma = 0.9
    traj, _, _ = constructed_trajectory(gamma)
    # The rollout never sets `truncated` on a terminal step; check td_inputs keeps d=0 there.
    rewards, discounts = rollout_lib.td_inputs(traj)
    self.assertEqual(float(discounts[0, 4]), 0.0)
    self.assertEqual(float(rewards[0, 4]), 1.0)


def tiny_setup(advantage_norm='minibatch'):
  env, env_params, num_actions = rollout_lib.make_env('CartPole-v1', max_steps_in_episode=5)
  net = mlp.ActorCritic(num_actions=num_actions, hidden_sizes=(16, 16))
  tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(1e-3))
  rollout = rollout_lib.make_rollout(
    env, env_params, net.apply, num_envs=4, num_steps=16, gamma=0.99
  )
  init = ppo.make_init(
    lambda key: net.init(key, jnp.zeros((1, 4))),
    tx,
    rollout_lib.make_reset(env, env_params, num_envs=4),
  )
  loss_fn = ppo.make_loss(
    net.apply, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, value_clip_eps=0.2,
    advantage_norm=advantage_norm,
  )  # fmt: skip
  update = ppo.make_update(
    rollout, loss_fn, tx, lambda_=0.95, num_epochs=2, num_minibatches=4,
    advantage_norm=advantage_norm,
  )  # fmt: skip
  return init, update


class UpdateTest(absltest.TestCase):
  def test_one_update_is_finite_changes_params_and_traces_once(self):
    init, update = tiny_setup()
    traces = []

    def counted(state, key):
      traces.append(1)  # runs only while tracing
      return update(state, key)

    step = jax.jit(counted)
    state0 = init(jax.random.key(0))
    state1, metrics = step(state0, jax.random.key(1))
    state2, metrics2 = step(state1, jax.random.key(1))
    self.assertLen(traces, 1)
    for m in (metrics, metrics2):
      for name, value in m.items():
        self.assertTrue(np.isfinite(value), name)
    self.assertEqual(int(state2.step), 2)
    diffs = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state0.params, state1.params)
    self.assertGreater(max(jax.tree.leaves(diffs)), 0.0)
    self.assertFalse(np.allclose(state0.env.obs, state1.env.obs))
    # A 5-step time limit (too short for CartPole to terminate): truncations after
    # steps 4, 9, 14 (first rollout) and 19, 24, 29 (second) in each of the 4 envs.
    self.assertEqual(float(metrics['truncations']), 12.0)
    self.assertEqual(float(metrics2['truncations']), 12.0)

  def test_unknown_advantage_norm_lists_choices(self):
    with self.assertRaisesRegex(ValueError, "Unknown advantage_norm 'global'.*minibatch"):
      ppo.make_loss(
        lambda p, o: None, clip_eps=0.2, vf_coef=0.5, ent_coef=0.0, advantage_norm='global'
      )
    with self.assertRaisesRegex(ValueError, "Unknown advantage_norm 'x'"):
      ppo.make_update(
        None, None, None, lambda_=0.9, num_epochs=1, num_minibatches=1, advantage_norm='x'
      )

  def test_minibatch_epochs_shared_machinery_is_used(self):
    # The update composes train.minibatch_epochs: B*T must divide into minibatches.
    with self.assertRaisesRegex(ValueError, 'not divisible'):
      train.minibatch_epochs(lambda c, b: (c, {}), 0, jnp.zeros((6,)), jax.random.key(0),
                             num_epochs=1, num_minibatches=4)  # fmt: skip


if __name__ == '__main__':
  absltest.main()
