"""multiturn: env replay, loss on actions only, log-probs, a 2nd env, the one learner."""

import os
from typing import NamedTuple

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxca import estimators
from jaxca import lm
from jaxca.envs import keydoor
from jaxca.envs import token_env
from jaxca.lm import multiturn
from jaxca.networks import critic as critic_lib
from jaxca.networks import transformer

G = 4


def _policy(vocab_size, max_len=64):
  cfg = dict(width=32, depth=1, num_heads=2, max_len=max_len, dtype='float32', value_head=False)
  return transformer.make_policy(ml_collections.ConfigDict(cfg), vocab_size=vocab_size)


class Counter(token_env.TokenEnv):
  """A second environment: count up from the task's start; reaching `goal` ends with reward 1.

  Actions: 0 = +1, 1 = +0. Tokens: 0 pad, 1 BOS, 2..9 digits (value mod 8).
  """

  vocab_size, pad_id, prompt_len, obs_len, horizon = 12, 0, 2, 1, 5
  action_ids = (10, 11)

  class State(NamedTuple):
    value: jax.Array
    goal: jax.Array

  def prompt(self, task):
    return jnp.stack([jnp.int32(1), 2 + task['goal'] % 8]).astype(jnp.int32)

  def reset(self, task):
    return self.State(task['start'], task['goal'])

  def observe(self, state):
    return (2 + state.value % 8)[None].astype(jnp.int32)

  def anchor(self, state):
    return state.value.astype(jnp.int32)

  def step(self, state, action):
    value = state.value + (action == 0)
    done = value == state.goal
    return self.State(value, state.goal), done.astype(jnp.float32), done


def fixture():
  """(env, policy, params, tasks): KeyDoor 4x4, a 1-layer policy, 6 tasks."""
  env = keydoor.make(size=4, num_walls=1, horizon=8, num_layouts=4, seed=1)
  policy = _policy(env.vocab_size)
  return env, policy, policy.init(jax.random.key(0)), env.sample_tasks(jax.random.key(1), 6)


class RolloutTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    self.env, self.policy, self.params, self.tasks = fixture()

  def _rollout(self, key=2, **kw):
    fn = jax.jit(
      lambda p, k, t: multiturn.rollout(self.policy, p, k, self.env, t, group_size=G, **kw)
    )
    return jax.device_get(fn(self.params, jax.random.key(key), self.tasks))

  def test_tokens_replay_the_env_and_mask_only_actions(self):
    s = self._rollout()
    lp, k = self.env.prompt_len, self.env.obs_len + 1
    b = s.tokens.shape[0]
    self.assertEqual(s.tokens.shape, (b, lp + self.env.horizon * k))
    for row in range(b):
      task = jax.tree.map(lambda x: x[row // G], self.tasks)
      np.testing.assert_array_equal(s.tokens[row, :lp], self.env.prompt(task))
      state = self.env.reset(task)
      done = False
      for t in range(self.env.horizon):
        block = s.tokens[row, lp + t * k : lp + (t + 1) * k]
        cols = slice(t * k, (t + 1) * k)
        if done:
          self.assertFalse(s.active[row, t])
          self.assertFalse(s.valid[row, lp + t * k : lp + (t + 1) * k].any())
          self.assertFalse(s.mask[row, cols].any())
          self.assertEqual(s.anchors[row, t], -1)
          continue
        np.testing.assert_array_equal(block[:-1], self.env.observe(state))
        # observation tokens carry no loss, the action token does
        np.testing.assert_array_equal(s.mask[row, cols], [False] * (k - 1) + [True])
        self.assertEqual(s.anchors[row, t], int(self.env.anchor(state)))
        a = s.actions[row, t]
        self.assertEqual(block[-1], self.env.action_ids[a])
        self.assertEqual(s.action_pos[row, t], t * k + k - 1)
        state, reward, d = self.env.step(state, a)
        self.assertEqual(s.rewards[row, t], float(reward))
        self.assertEqual(s.done[row, t], bool(d))
        done = bool(d)

  def test_log_probs_match_teacher_forcing_and_are_normalised_over_actions(self):
    s = self._rollout(temperature=0.7)
    lp, ent = multiturn.action_log_probs(
      self.policy, self.params, s.tokens, s.valid, self.env.prompt_len, self.env.action_ids, 0.7
    )
    np.testing.assert_allclose(np.where(s.mask, lp, 0.0), s.log_probs, atol=1e-5)
    self.assertTrue(np.all(np.asarray(ent) <= np.log(4) + 1e-5))

  def test_greedy_is_deterministic(self):
    a, b = self._rollout(key=3, greedy=True), self._rollout(key=4, greedy=True)
    np.testing.assert_array_equal(a.tokens, b.tokens)

  def test_history_ids(self):
    actions = np.asarray([[0, 1, 2], [0, 1, 3], [0, 2, 2], [1, -1, -1]], np.int32)
    active = actions >= 0
    h = np.asarray(multiturn.history_ids(jnp.asarray(actions), jnp.asarray(active)))
    self.assertTrue(np.all(h[:, 0] == h[0, 0]))  # empty history
    self.assertEqual(h[0, 1], h[1, 1])
    self.assertEqual(h[0, 2], h[1, 2])
    self.assertNotEqual(h[0, 2], h[2, 2])
    self.assertEqual(h[0, 1], h[2, 1])  # same first action
    np.testing.assert_array_equal(h[3, 1:], -1)


FIXTURE = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'data', 'multiturn_update_2it.npz'
)


class ScriptedRolloutTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    self.env, self.policy, self.params, self.tasks = fixture()

  def test_replaying_a_policy_rollout_gives_its_layout(self):
    s = jax.device_get(
      jax.jit(lambda p, k, t: multiturn.rollout(self.policy, p, k, self.env, t, group_size=G))(
        self.params, jax.random.key(2), self.tasks
      )
    )
    actions = jnp.asarray(np.maximum(s.actions, 0))
    act = lambda states, turn, key: actions[:, turn]  # noqa: E731
    fn = lambda k, t: multiturn.scripted_rollout(self.env, k, t, act, group_size=G)  # noqa: E731
    for f in (jax.jit(fn), fn):
      d = jax.device_get(f(jax.random.key(0), self.tasks))
      for name in ('tokens', 'valid', 'mask', 'actions', 'anchors', 'rewards', 'done', 'active'):
        np.testing.assert_array_equal(getattr(d, name), getattr(s, name), err_msg=name)
      np.testing.assert_array_equal(d.log_probs, 0.0)

  def test_sft_loss_is_action_masked_cross_entropy(self):
    s = jax.device_get(
      multiturn.scripted_rollout(
        self.env, jax.random.key(3), self.tasks, keydoor.noisy_bfs_policy(self.env, 0.3)
      )
    )
    batch = dict(tokens=s.tokens, valid=s.valid, mask=s.mask)
    loss_fn = multiturn.make_sft_loss(self.policy, self.env)
    loss, aux = jax.jit(loss_fn)(self.params, batch)
    logits = np.asarray(self.policy.apply(self.params, s.tokens, s.valid).logits, np.float64)
    lp, ids = self.env.prompt_len, list(self.env.action_ids)
    nll, hits, n = 0.0, 0.0, 0
    for row in range(s.tokens.shape[0]):
      for j in np.flatnonzero(s.mask[row]):  # response column j predicts token lp + j
        z = logits[row, lp + j - 1, ids]
        logp = z - np.log(np.sum(np.exp(z - z.max()))) - z.max()
        target = ids.index(int(s.tokens[row, lp + j]))
        nll -= logp[target]
        hits += float(np.argmax(z) == target)
        n += 1
    np.testing.assert_allclose(float(loss), nll / n, rtol=1e-5)
    np.testing.assert_allclose(float(aux['action_accuracy']), hits / n, rtol=1e-6)
    # the loss reads one token per turn taken (its action), never an observation token
    np.testing.assert_array_equal(s.mask.sum(-1), s.active.sum(-1))


class OneLearnerTest(absltest.TestCase):
  """The multi-turn run through the one LM learner (`lm.make_rl_update` with its two seams)."""

  def setUp(self):
    super().setUp()
    self.env, self.policy, self.params, self.tasks = fixture()
    self.est = estimators.make('gigpo_episode + gigpo_step', history=True)

  def _update(self, tx, **kw):
    return lm.make_rl_update(
      self.policy,
      self.env,
      self.est,
      tx,
      group_size=G,
      num_minibatches=2,
      collect=multiturn.make_collect(self.policy, self.env, group_size=G),
      score_fn=multiturn.make_score_fn(self.policy, self.env),
      **kw,
    )

  def test_default_update_matches_the_old_multiturn_update(self):
    # tests/data/multiturn_update_2it.npz: the deleted `multiturn.make_update` (same policy,
    # tasks, estimator, adam(1e-3), G=4, 2 minibatches, keys fold_in(key(5), i)), recorded by
    # tests/record_multiturn_fixture.py (commit b60f23d, removed with the old learner).
    tx = optax.adam(1e-3)
    update = jax.jit(self._update(tx))
    state = lm.init_from_params(self.params, tx)
    got = {}
    for i in range(2):
      state, m = update(state, self.tasks, jax.random.fold_in(jax.random.key(5), i))
      got.update({f'metrics/{i}/{k}': np.asarray(v) for k, v in m.items()})
    for path, leaf in jax.tree_util.tree_leaves_with_path(state['params']):
      got['params' + jax.tree_util.keystr(path)] = np.asarray(leaf)
    with np.load(FIXTURE) as z:
      want = {k: z[k] for k in z.files}
    self.assertEmpty(set(want) - set(got))
    for k, v in want.items():
      np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-6, err_msg=k)

  def test_fills_exactly_the_required_fields_with_the_multiturn_overrides(self):
    seen = {}

    def metrics_fn(ctx, traj, targets):
      seen.update(traj=traj, extras=ctx.extras, mask=ctx.mask, adv=targets.advantages)
      return {}

    tx = optax.adam(1e-3)
    phases = lm.make_rl_phases(
      self.policy,
      self.env,
      self.est,
      tx,
      group_size=G,
      collect=multiturn.make_collect(self.policy, self.env, group_size=G),
      score_fn=multiturn.make_score_fn(self.policy, self.env),
      metrics_fn=metrics_fn,
    )
    state = lm.init_from_params(self.params, tx)
    data = phases.collect(state, self.tasks, jax.random.key(5))
    phases.update(state, data, {}, jax.random.key(6))
    traj, extras = seen['traj'], seen['extras']
    self.assertIsNotNone(traj.get('history_ids'))
    self.assertIsNone(traj.values)
    np.testing.assert_array_equal(traj.step_rewards, extras.rewards)
    np.testing.assert_array_equal(traj.anchor_ids, extras.anchors)
    np.testing.assert_allclose(traj.rewards.sum(-1), extras.returns)
    # step ids: the turn index at action tokens (a slow loop)
    mask = np.asarray(seen['mask'])
    k = self.env.obs_len + 1
    want = np.where(mask, np.arange(mask.shape[1])[None, :] // k, -1)
    np.testing.assert_array_equal(traj.step_ids, want)

  def test_gspo_and_adaptive_kl_run_on_the_multiturn_path(self):
    tx = optax.adam(1e-3)
    loss = dict(
      objective='gspo', kl_coef=0.05, kl_ctrl='adaptive', kl_target=0.01, kl_horizon=100.0
    )
    update = jax.jit(self._update(tx, loss_cfg=loss))
    state = lm.init_from_params(self.params, tx, with_ref=True, kl_coef=0.05)
    for i in range(2):
      state, m = update(state, self.tasks, jax.random.fold_in(jax.random.key(7), i))
      for name in ('kl_coef', 'kl_measured', 'kl_ref', 'loss', 'success'):
        self.assertIn(name, m)
      self.assertTrue(all(np.isfinite(np.asarray(v)).all() for v in m.values()), m)
    self.assertEqual(int(state['step']), 2)
    self.assertTrue(np.isfinite(float(state['kl_coef'])))
    self.assertNotEqual(float(state['kl_coef']), 0.05)  # the controller moved it
    self.assertGreater(float(m['kl_measured']), 0.0)  # the policy left the reference

  def test_separate_critic_kl_in_reward_and_dynamic_sampling_on_the_multiturn_path(self):
    cfg = dict(width=32, depth=1, num_heads=2, max_len=64, dtype='float32', value_head=False)
    critic = critic_lib.make_critic(ml_collections.ConfigDict(cfg), vocab_size=self.env.vocab_size)
    cparams = critic_lib.critic_params_from_policy(critic, self.params, jax.random.key(3))
    tx, ctx = optax.adam(1e-3), optax.adam(1e-2)
    phases = lm.make_rl_phases(
      self.policy,
      self.env,
      estimators.make('gae'),
      tx,
      group_size=G,
      loss_cfg=dict(vf_coef=0.5, kl_coef=0.1, kl_in_reward=True),
      critic=critic,
      critic_tx=ctx,
      collect=multiturn.make_collect(self.policy, self.env, group_size=G),
      score_fn=multiturn.make_score_fn(self.policy, self.env),
    )
    state = lm.init_from_params(
      self.params, tx, with_ref=True, critic_params=cparams, critic_tx=ctx
    )
    collect, update = jax.jit(phases.collect), jax.jit(phases.update)
    data, dm = lm.collect_dynamic(
      collect,
      state,
      lambda: self.tasks,
      jax.random.key(8),
      group_size=G,
      max_gen_batches=2,
    )
    self.assertEqual(data.mask.shape[0], 6 * G)  # static shape, padded if short
    new, m = update(state, data, {}, jax.random.key(9))
    for name in ('critic_value_loss', 'kl_reward', 'success', 'turns'):
      self.assertIn(name, m)
    self.assertTrue(all(np.isfinite(np.asarray(v)).all() for v in m.values()), m)
    changed = jax.tree.map(
      lambda a, b: not np.array_equal(a, b), state['critic_params'], new['critic_params']
    )
    self.assertTrue(any(jax.tree.leaves(changed)))


class SecondEnvTest(absltest.TestCase):
  def test_counter_env_runs_through_the_same_rollout(self):
    env = Counter()
    policy = _policy(env.vocab_size, max_len=32)
    params = policy.init(jax.random.key(0))
    tasks = dict(start=jnp.asarray([0, 1], jnp.int32), goal=jnp.asarray([2, 3], jnp.int32))
    s = multiturn.rollout(policy, params, jax.random.key(1), env, tasks, group_size=3)
    self.assertEqual(s.tokens.shape, (6, 2 + 5 * 2))
    for row in range(6):
      value, goal = int(tasks['start'][row // 3]), int(tasks['goal'][row // 3])
      for t in range(5):
        if not s.active[row, t]:
          break
        self.assertEqual(s.anchors[row, t], value)
        value += int(s.actions[row, t] == 0)
        self.assertEqual(bool(s.done[row, t]), value == goal)
      self.assertEqual(float(s.returns[row]), float(value == goal))


if __name__ == '__main__':
  absltest.main()
