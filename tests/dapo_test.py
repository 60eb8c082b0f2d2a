"""DAPO options: overlong punishment / filtering and dynamic sampling (jaxca.lm.dapo, jaxca.lm)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import arith_rl as arith_rl_config
from jaxca import estimators
from jaxca import lm
from jaxca.lm import dapo
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401
from tests.lm_fixtures import TASK
from tests.lm_fixtures import G
from tests.lm_fixtures import tiny_policy as _policy
from tests.reference import dapo as ref


class KernelTest(parameterized.TestCase):
  @parameterized.parameters((20, 5, 1.0), (16, 16, 0.5), (8, 1, 2.0))
  def test_overlong_penalty_matches_reference(self, max_len, buffer_len, factor):
    lengths = np.arange(0, max_len + 4)  # below, on and beyond the ramp
    for fn in (dapo.overlong_penalty, jax.jit(dapo.overlong_penalty, static_argnums=(1, 2, 3))):
      got = fn(jnp.asarray(lengths), max_len, buffer_len, factor)
      np.testing.assert_allclose(got, ref.overlong_penalty(lengths, max_len, buffer_len, factor))
    got = np.asarray(dapo.overlong_penalty(lengths, max_len, buffer_len, factor))
    self.assertTrue(np.all(got <= 0) and np.all(np.diff(got) <= 0))  # monotone, non-positive
    self.assertEqual(got[max_len - buffer_len], 0.0)
    self.assertAlmostEqual(float(got[max_len]), -factor, places=6)

  def test_overlong_penalty_rejects_bad_buffer(self):
    with self.assertRaisesRegex(ValueError, 'buffer_len'):
      dapo.overlong_penalty(jnp.arange(3), 4, 5)
    with self.assertRaisesRegex(ValueError, 'buffer_len'):
      dapo.overlong_penalty(jnp.arange(3), 4, 0)

  @parameterized.parameters(0, 1, 2)
  def test_informative_groups_matches_reference(self, seed):
    rng = np.random.default_rng(seed)
    g = 4
    rewards = rng.integers(0, 2, size=(12, g)).astype(np.float32)
    rewards[:3] = 1.0  # some constant groups for sure
    rewards[3:5] = 0.0
    flat = rewards.reshape(-1)
    want = ref.informative_groups(flat, g)
    for fn in (dapo.informative_groups, jax.jit(dapo.informative_groups, static_argnums=1)):
      np.testing.assert_array_equal(fn(jnp.asarray(flat), g), want)
    np.testing.assert_array_equal(dapo.informative_groups(flat, g), want)  # NumPy input
    self.assertFalse(want[:5].any())
    with self.assertRaisesRegex(ValueError, 'seq_rewards'):
      dapo.informative_groups(flat[:-1], g)

  def test_truncated(self):
    eos = TASK.vocab.eos_id
    a, b, c = [t for t in range(TASK.vocab.size) if t != eos][:3]
    responses = jnp.array([[a, eos, c], [a, b, c], [a, b, eos], [eos, b, b]])
    mask = jnp.array([[1, 1, 0], [1, 1, 1], [1, 1, 1], [0, 0, 0]], bool)
    np.testing.assert_array_equal(dapo.truncated(responses, mask, eos), [0, 1, 0, 1])


def _fake_collect(n_tokens=3):
  """collect(state, batch, key) -> RolloutData whose rewards are batch['r'] [P, G] (row ids
  in `tokens`, so the kept rows can be traced back)."""

  def collect(state, batch, key):
    del state
    r = np.asarray(batch['r'], np.float32)
    b = r.size
    mask = np.ones((b, n_tokens), bool)
    rewards = np.zeros((b, n_tokens), np.float32)
    rewards[:, -1] = r.reshape(-1)
    ids = np.repeat(np.asarray(batch['id'])[:, None], n_tokens + 1, axis=1)
    ids = np.repeat(ids, r.shape[1], axis=0)
    ones = np.ones((b, n_tokens), np.float32)
    return lm.RolloutData(
      batch=dict(id=np.repeat(batch['id'], r.shape[1])),
      tokens=ids,
      valid=np.ones((b, n_tokens + 1), bool),
      responses=ids[:, 1:],
      mask=mask,
      rewards=rewards,
      log_probs=-ones,
      ref_log_probs=-ones,
      values=None,
      response_logits=np.zeros((b, n_tokens, 2), np.float32),
      lengths=np.full(b, n_tokens, np.int32),
      key=key,
      rollout_log_probs=-ones,
      extras=dict(active=np.ones((b, 2), bool), turn_rewards=np.ones((b, 2), np.float32)),
    )

  return collect


class DynamicSamplingTest(absltest.TestCase):
  def _batches(self, groups, p=4):
    """A next_batch() over per-group reward rows, p groups per batch, ids counting up."""
    it = iter(range(0, len(groups), p))

    def next_batch():
      i = next(it)
      return dict(r=np.asarray(groups[i : i + p]), id=np.arange(i, i + p))

    return next_batch

  def test_keeps_exactly_the_informative_groups_and_refills(self):
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 2, size=(40, G)).astype(np.float32)
    informative = ref.informative_groups(groups.reshape(-1), G)
    want_ids = np.nonzero(informative)[0][:4]
    data, m = lm.collect_dynamic(
      _fake_collect(),
      None,
      self._batches(groups),
      jax.random.key(0),
      group_size=G,
      max_gen_batches=10,
    )
    self.assertEqual(data.mask.shape[0], 4 * G)
    np.testing.assert_array_equal(data.batch['id'], np.repeat(want_ids, G))
    self.assertTrue(data.mask.all())
    self.assertEqual(m['groups_short'], 0.0)
    batches_needed = int(np.searchsorted(np.cumsum(informative), 4)) // 4 + 1
    self.assertEqual(m['gen_batches'], batches_needed)
    seen = informative[: 4 * batches_needed]
    self.assertAlmostEqual(m['frac_groups_kept'], seen.mean())
    self.assertAlmostEqual(m['gen_reward'], groups[: 4 * batches_needed].mean(), places=6)

  def test_shortfall_is_padded_with_masked_rows(self):
    groups = np.zeros((12, G), np.float32)  # constant...
    groups[5] = [0.0, 1.0]  # ... but for one group in the 2nd batch
    data, m = lm.collect_dynamic(
      _fake_collect(),
      None,
      self._batches(groups),
      jax.random.key(0),
      group_size=G,
      max_gen_batches=3,
    )
    self.assertEqual(m['gen_batches'], 3.0)
    self.assertEqual(m['groups_short'], 3.0)
    self.assertAlmostEqual(m['frac_groups_kept'], 1 / 12)
    self.assertEqual(data.mask.shape, (4 * G, 3))
    np.testing.assert_array_equal(data.batch['id'][:G], [5, 5])
    self.assertTrue(data.mask[:G].all())
    self.assertFalse(data.mask[G:].any())
    for x in (data.rewards, data.log_probs, data.ref_log_probs, data.rollout_log_probs):
      self.assertEqual(float(np.abs(x[G:]).sum()), 0.0)
    # a collect's own arrays (e.g. multi-turn turns) are kept for real rows, zero for padding
    self.assertTrue(data.extras['active'][:G].all())
    self.assertFalse(data.extras['active'][G:].any())
    self.assertEqual(float(data.extras['turn_rewards'][G:].sum()), 0.0)
    self.assertFalse(data.valid[G:, 1:].any())
    with self.assertRaisesRegex(ValueError, 'max_gen_batches'):
      lm.collect_dynamic(
        _fake_collect(),
        None,
        self._batches(groups),
        jax.random.key(0),
        group_size=G,
        max_gen_batches=0,
      )


class LearnerTest(absltest.TestCase):
  def test_dynamic_sampling_with_the_real_learner_keeps_static_shapes(self):
    policy = _policy()
    tx = optax.adam(1e-3)
    phases = lm.make_rl_phases(
      policy,
      TASK,
      estimators.make('grpo'),
      tx,
      group_size=G,
      num_minibatches=2,
      loss_cfg=dict(ent_coef=0.01),
    )
    collect, update = jax.jit(phases.collect), jax.jit(phases.update)
    state = lm.init_from_params(policy.init(jax.random.key(0)), tx)
    seeds = iter(range(100))

    def next_batch():
      return {k: jnp.asarray(v) for k, v in TASK.generate(next(seeds), 4).items()}

    for step in range(2):
      data, dm = lm.collect_dynamic(
        collect, state, next_batch, jax.random.key(step), group_size=G, max_gen_batches=3
      )
      self.assertEqual(data.mask.shape[0], 4 * G)
      seq = data.rewards.sum(1).reshape(-1, G)
      kept = 4 - int(dm['groups_short'])
      self.assertTrue(np.all(seq[:kept].max(1) != seq[:kept].min(1)))  # only informative
      state, m = update(state, data, {}, jax.random.key(10 + step))
      self.assertTrue(np.isfinite(m['loss']))
    self.assertEqual(update._cache_size(), 1)  # one compile for both iterations

  def test_overlong_shaping_and_filtering(self):
    policy = _policy()
    params = policy.init(jax.random.key(0))
    tx = optax.sgd(0.0)
    state = lm.init_from_params(params, tx)
    n = TASK.response_len
    outs = {}
    for name, shaping in (
      ('none', None),
      ('penalty', dict(overlong_buffer=n, overlong_penalty=0.5)),
      ('filter', dict(overlong_filter=True)),
    ):
      phases = lm.make_rl_phases(
        policy, TASK, estimators.make('reinforce'), tx, group_size=G, reward_shaping=shaping
      )
      data = jax.jit(phases.collect)(
        state, {k: jnp.asarray(v) for k, v in TASK.generate(0, 8).items()}, jax.random.key(1)
      )
      _, m = jax.jit(phases.update)(state, data, {}, jax.random.key(2))
      outs[name] = (data, m)
    data, m = outs['penalty']
    pen = ref.overlong_penalty(np.asarray(data.lengths), n, n, 0.5)
    np.testing.assert_allclose(m['overlong_penalty'], pen.mean(), rtol=1e-6)
    # Same samples (same key); the penalty moves the REINFORCE advantages.
    np.testing.assert_array_equal(data.responses, outs['none'][0].responses)
    self.assertNotAlmostEqual(float(m['adv_abs_mean']), float(outs['none'][1]['adv_abs_mean']), 4)
    np.testing.assert_array_equal(m['reward'], outs['none'][1]['reward'])  # the task's reward
    cut = np.asarray(dapo.truncated(data.responses, data.mask, TASK.vocab.eos_id))
    self.assertGreater(cut.mean(), 0.0)  # an untrained policy runs out of tokens sometimes
    np.testing.assert_allclose(outs['filter'][1]['frac_truncated'], cut.mean())
    # The cut responses leave the loss (its entropy term is a mean over other tokens).
    self.assertNotAlmostEqual(
      float(outs['filter'][1]['entropy']), float(outs['none'][1]['entropy']), 5
    )
    with self.assertRaisesRegex(ValueError, 'overlong_buffer'):
      lm.make_rl_phases(
        policy,
        TASK,
        estimators.make('grpo'),
        tx,
        group_size=G,
        reward_shaping=dict(overlong_buffer=n + 1),
      )
    with self.assertRaisesRegex(ValueError, 'Unknown reward_shaping'):
      lm.make_rl_phases(
        policy,
        TASK,
        estimators.make('grpo'),
        tx,
        group_size=G,
        reward_shaping=dict(buffer=2),
      )

  def test_the_flagship_defaults_are_off(self):
    """configs/arith_rl.py's DAPO options, as given, change nothing (the update is unchanged)."""
    c = arith_rl_config.get_config()
    n = TASK.response_len
    off = lm.reward_shaping_options(None, n)
    self.assertEqual(lm.reward_shaping_options(c.rl.reward_shaping.to_dict(), n), off)
    self.assertEqual(off, (0, 1.0, False))
    self.assertFalse(c.rl.dynamic_sampling)
    on = dict(c.rl.reward_shaping.to_dict(), overlong_buffer=1, overlong_filter=True)
    self.assertEqual(lm.reward_shaping_options(on, n), (1, 1.0, True))


if __name__ == '__main__':
  absltest.main()
