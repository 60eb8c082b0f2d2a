"""tasks.tool_arith: prompt, tool semantics, failures, cost, the rollout's masks, providers."""

from types import SimpleNamespace

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxca import estimators
from jaxca.lm import multiturn
from jaxca.networks import transformer
from jaxca.tasks import tool_arith
from tests.reference import turns as ref

OPS = {'add': lambda x, a: x + a, 'sub': lambda x, a: x - a, 'mul': lambda x, a: x * a}


def _task(x0, ops, operands, seed=0):
  return dict(
    x0=np.int32(x0), ops=np.asarray(ops, np.int32), operands=np.asarray(operands, np.int32),
    seed=np.int32(seed),
  )  # fmt: skip


def _play(env, task, actions):
  """Steps the env through `actions` (indices); returns [(obs, reward, done)]."""
  state, out = env.reset(task), []
  for a in actions:
    state, r, d = env.step(state, jnp.int32(a))
    out.append((np.asarray(env.observe(state)), float(r), bool(d)))
  return out


class EnvTest(absltest.TestCase):
  def test_prompt_and_answer_match_a_loop(self):
    env = tool_arith.make(num_steps=3, modulus=7, ops=('add', 'sub', 'mul'))
    rng = np.random.default_rng(0)
    for _ in range(20):
      x0, ops, operands = rng.integers(0, 7), rng.integers(0, 3, 3), rng.integers(0, 7, 3)
      want = x0
      for o, a in zip(ops, operands):
        want = OPS[env.ops[o]](want, a) % 7
      task = _task(x0, ops, operands)
      self.assertEqual(int(env.answer(task)), want)
      p = np.asarray(env.prompt(task))
      self.assertLen(p, env.prompt_len)
      self.assertEqual(p[1], env.first_value + x0)
      np.testing.assert_array_equal(p[2:-1:2], tool_arith._FIRST_OP + ops)
      np.testing.assert_array_equal(p[3:-1:2], env.first_value + operands)

  def test_calls_answer_and_cost(self):
    env = tool_arith.make(num_steps=2, modulus=5, call_cost=0.1)
    task = _task(2, [0, 1], [4, 3])  # (2 + 4) * 3 mod 5 = 3
    call = lambda op, a: op * 5 + a  # noqa: E731
    steps = _play(env, task, [call(0, 4), call(1, 3), env.num_calls + 3])
    (o1, r1, d1), (o2, r2, d2), (_, r3, d3) = steps
    np.testing.assert_array_equal(o1, [tool_arith.RES, env.first_value + 1])
    np.testing.assert_array_equal(o2, [tool_arith.RES, env.first_value + 3])
    np.testing.assert_allclose((r1, r2, r3), (-0.1, -0.1, 1.0), rtol=1e-6)
    self.assertEqual((d1, d2, d3), (False, False, True))
    (_, r, d), = _play(env, task, [env.num_calls + 4])  # fmt: skip
    self.assertEqual((r, d), (0.0, True))  # a wrong answer, no call: 0

  def test_failures_deterministic_per_seed_and_rate(self):
    env = tool_arith.make(num_steps=2, modulus=5, error_rate=0.5)
    fails = []
    for seed in range(200):
      (obs, _, _), = _play(env, _task(1, [0, 0], [1, 1], seed), [1])  # fmt: skip
      again = _play(env, _task(1, [0, 0], [1, 1], seed), [1])[0][0]
      np.testing.assert_array_equal(obs, again)
      fails.append(obs[0] == tool_arith.ERR)
      if obs[0] == tool_arith.ERR:
        self.assertEqual(obs[1], env.first_value + 1)  # the accumulator is unchanged
    self.assertBetween(np.mean(fails), 0.35, 0.65)

  def test_bad_config(self):
    with self.assertRaisesRegex(ValueError, 'ops'):
      tool_arith.make(ops=('add', 'pow'))
    with self.assertRaisesRegex(ValueError, 'error_rate'):
      tool_arith.make(error_rate=1.0)

  def test_splits_disjoint(self):
    env = tool_arith.make(num_steps=2, modulus=5)
    train, test = tool_arith.make_splits(env, 300, 100, seed=1)
    key = lambda d: {(int(a), *b, *c) for a, b, c in zip(d['x0'], d['ops'], d['operands'])}  # noqa: E731
    self.assertLen(key(train), 300)
    self.assertEmpty(key(train) & key(test))
    with self.assertRaisesRegex(ValueError, 'num_train'):
      tool_arith.make_splits(env, 500, 1)


class RolloutTest(absltest.TestCase):
  def test_tool_results_out_of_the_loss_and_matched_turn_rewards(self):
    env = tool_arith.make(num_steps=2, modulus=5, call_cost=0.05)
    cfg = dict(width=16, depth=1, num_heads=2, max_len=32, dtype='float32', value_head=False)
    policy = transformer.make_policy(ml_collections.ConfigDict(cfg), vocab_size=env.vocab_size)
    train, _ = tool_arith.make_splits(env, 3, 1)
    tasks = jax.tree.map(jnp.asarray, train)
    s = multiturn.rollout(
      policy, policy.init(jax.random.key(0)), jax.random.key(1), env, tasks, group_size=4
    )
    per = env.obs_len + 1
    cols = np.arange(s.mask.shape[1]) % per
    self.assertFalse(np.any(np.asarray(s.mask)[:, cols != per - 1]))  # replies never in the loss
    rep = jax.tree.map(lambda x: jnp.repeat(x, 4, axis=0), tasks)
    ctx = SimpleNamespace(
      batch=rep, mask=s.mask,
      extras=multiturn.Turns(s.actions, s.anchors, s.active, s.rewards, jnp.zeros(s.mask.shape)),
    )  # fmt: skip
    got = tool_arith.turn_reward_provider(env, 'greedy', -0.5)(ctx)['turn_rewards']
    for b in range(12):  # a loop over the official rule on the row's calls
      calls = [
        {'name': str(a // 5), 'arguments': {'p': int(a % 5)}}
        for a in np.asarray(s.actions[b])[np.asarray(s.active[b])]
        if a < env.num_calls
      ]
      refs = [
        {'name': str(o), 'parameters': {'p': int(v)}}
        for o, v in zip(rep['ops'][b], rep['operands'][b])
      ]
      want = ref.hard_rewards(calls, refs, -0.5)
      is_call = np.asarray(s.active[b]) & (np.asarray(s.actions[b]) < env.num_calls)
      np.testing.assert_allclose(
        np.asarray(got[b])[is_call] - np.asarray(s.rewards[b])[is_call], want, atol=1e-6
      )
    calls, exact, prec = tool_arith.call_metrics(env, rep, s.actions, s.active)
    self.assertTrue(np.all(np.asarray(exact) <= np.asarray(calls)))
    self.assertTrue(np.all((np.asarray(prec) >= 0) & (np.asarray(prec) <= 1)))
    # the turn stages run on a multiturn trajectory's fields
    self.assertIn('turn_ids', multiturn.PROVIDERS)
    self.assertEqual(estimators.make('matchtir').name, 'matchtir')


if __name__ == '__main__':
  absltest.main()


def _fails(seed, n, rate):
  """The tool's failures of a problem seed, call number 0..n-1 (the env's documented rule)."""
  key = jax.random.fold_in(jax.random.key(0), seed)
  return [bool(jax.random.uniform(jax.random.fold_in(key, i)) < rate) for i in range(n)]


def _ref_demo(env, task, fails):
  """The p_opt=1 demonstrator as a plain loop: (actions, return)."""
  m, k, acc, done_calls, calls, actions, ret = (
    env.modulus,
    env.num_steps,
    int(task['x0']),
    0,
    0,
    [],
    0.0,
  )
  for _ in range(env.horizon):
    if done_calls < k:
      op, a = int(task['ops'][done_calls]), int(task['operands'][done_calls])
      actions.append(op * m + a)
      ret -= env.call_cost
      if not fails[calls]:
        acc, done_calls = OPS[env.ops[op]](acc, a) % m, done_calls + 1
      calls += 1
    else:
      actions.append(env.num_calls + acc)
      ret += float(acc == int(env.answer(task)))
      break
  return actions, ret


class DemonstratorTest(absltest.TestCase):
  def test_optimal_demonstrations_match_a_loop(self):
    env = tool_arith.make(num_steps=2, modulus=7, ops=('add', 'sub', 'mul'), horizon=4,
                          error_rate=0.3, call_cost=0.05)  # fmt: skip
    rng = np.random.default_rng(1)
    n = 24
    tasks = dict(
      x0=rng.integers(0, 7, n).astype(np.int32), ops=rng.integers(0, 3, (n, 2)).astype(np.int32),
      operands=rng.integers(0, 7, (n, 2)).astype(np.int32),
      seed=rng.integers(0, 2**31 - 1, n).astype(np.int32),
    )  # fmt: skip
    act = tool_arith.noisy_reference_policy(env, 1.0)
    fn = lambda k, t: multiturn.scripted_rollout(env, k, t, act)  # noqa: E731
    for f in (fn, jax.jit(fn)):
      s = jax.device_get(f(jax.random.key(2), tasks))
      solved = 0
      for i in range(n):
        task = {key: v[i] for key, v in tasks.items()}
        want, ret = _ref_demo(env, task, _fails(int(task['seed']), env.horizon, env.error_rate))
        np.testing.assert_array_equal(s.actions[i, : len(want)], want)
        self.assertTrue(np.all(s.actions[i, len(want) :] == -1))
        self.assertAlmostEqual(float(s.returns[i]), ret, places=5)
        solved += ret > 0.5
      self.assertBetween(solved, 12, n - 1)  # some problems run out of turns (failures)

  def test_action_frequencies(self):
    env = tool_arith.make(num_steps=2, modulus=5, horizon=4)
    task = _task(2, [1, 0], [3, 4])
    n, a = 20_000, len(env.action_ids)
    states = jax.vmap(env.reset)(jax.tree.map(lambda x: np.broadcast_to(x, (n,) + x.shape), task))
    done = states._replace(progress=jnp.full((n,), 2, jnp.int32), acc=jnp.full((n,), 4, jnp.int32))
    for p_opt in (0.0, 0.4):
      act = tool_arith.noisy_reference_policy(env, p_opt)
      first = np.asarray(jax.jit(act)(states, 0, jax.random.key(3)))
      want = np.full(a, (1 - p_opt) / a)
      want[1 * 5 + 3] += p_opt  # the first reference call, mul 3
      np.testing.assert_allclose(np.bincount(first, minlength=a) / n, want, atol=0.012)
      last = np.asarray(act(done, 3, jax.random.key(4)))
      want = np.zeros(a)
      want[env.num_calls :] = (1 - p_opt) / 5
      want[env.num_calls + 4] += p_opt  # ANS(acc)
      np.testing.assert_allclose(np.bincount(last, minlength=a) / n, want, atol=0.012)

  def test_progress_counts_reference_calls_in_order(self):
    env = tool_arith.make(num_steps=2, modulus=5)
    task = _task(2, [0, 1], [4, 3])
    state = env.reset(task)
    for a, want in ((1 * 5 + 3, 0), (0 * 5 + 4, 1), (0 * 5 + 4, 1), (1 * 5 + 3, 2), (8, 2)):
      state, _, _ = env.step(state, jnp.int32(a))  # wrong, first, first again, second, extra
      self.assertEqual(int(state.progress), want)
