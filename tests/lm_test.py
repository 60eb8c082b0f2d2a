"""Tests for jaxca.lm: reward placement, PPO/SFT losses, the RL update and the eval fn."""

from typing import NamedTuple

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxca import estimators
from jaxca import lm
from jaxca import ops
from jaxca import sampling
from jaxca import types
from jaxca.objectives import aggregation
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401
from tests.lm_fixtures import TASK
from tests.lm_fixtures import G
from tests.lm_fixtures import batch as _batch
from tests.lm_fixtures import tiny_policy as _policy
from tests.reference import lm as ref


class RewardPlacementTest(parameterized.TestCase):
  @parameterized.parameters(0, 1, 2)
  def test_last_token_rewards_matches_reference(self, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 7, size=9)  # includes empty rows
    mask = np.arange(6)[None] < lengths[:, None]
    r = rng.normal(size=9).astype(np.float32)
    for fn in (lm.last_token_rewards, jax.jit(lm.last_token_rewards)):
      np.testing.assert_allclose(fn(r, mask), ref.last_token_rewards(r, mask), rtol=1e-6)

  def test_last_token_rewards_rejects_bad_shapes(self):
    with self.assertRaisesRegex(ValueError, 'seq_rewards'):
      lm.last_token_rewards(jnp.zeros(3), jnp.ones((4, 2), bool))

  def test_target_mask_matches_reference(self):
    rng = np.random.default_rng(0)
    voc = TASK.vocab
    targets = rng.choice([voc.pad_id, voc.eos_id, voc.step_id, 8, 9], size=(20, 6))
    np.testing.assert_array_equal(
      lm.target_mask(TASK, jnp.asarray(targets)), ref.target_mask(targets, voc.eos_id, voc.pad_id)
    )

  def test_reward_positions(self):
    batch = _batch(2)
    mask = jnp.array([[True, True], [True, False]])
    got = lm.reward_positions(TASK, 'process', batch['targets'], mask, batch)
    # Row 0 closes its single step with EOS (index 1); row 1 never closes it -> last valid token.
    np.testing.assert_array_equal(got, [[False, True], [True, False]])
    got = lm.reward_positions(TASK, 'outcome', batch['targets'], mask, batch)
    np.testing.assert_array_equal(got, [[False, True], [True, False]])

  def test_process_rewards_are_masked(self):
    batch = _batch(3)
    rep = {k: jnp.repeat(v, 1, axis=0) for k, v in batch.items()}
    mask = jnp.array([[True, True], [True, False], [False, False]])
    r = lm.sequence_rewards(TASK, 'process', batch['targets'], mask, rep)
    self.assertEqual(float(jnp.abs(jnp.where(mask, 0.0, r)).sum()), 0.0)
    # The canonical target of row 0 is fully visible: one correct step, on its EOS.
    np.testing.assert_allclose(r[0], [0.0, 1.0])
    with self.assertRaisesRegex(ValueError, 'outcome'):
      lm.sequence_rewards(TASK, 'length', batch['targets'], mask, rep)


class LossTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    self.policy = _policy(value_head=True)
    self.params = self.policy.init(jax.random.key(0))
    est = estimators.make('gae')
    self.rollout = jax.jit(lm.make_rollout_fn(self.policy, TASK, est, group_size=G, use_ref=True))
    self.rb, self.m = self.rollout(self.params, self.params, _batch(), jax.random.key(1))

  def test_rollout_shapes_and_masking(self):
    rb, n = self.rb, TASK.response_len
    self.assertEqual(rb.tokens.shape, (4 * G, TASK.prompt_len + n))
    self.assertEqual(rb.mask.shape, (4 * G, n))
    for x in (rb.old_log_probs, rb.ref_log_probs, rb.advantages, rb.returns, rb.old_values):
      self.assertEqual(float(jnp.abs(jnp.where(rb.mask, 0.0, x)).sum()), 0.0)
    np.testing.assert_allclose(rb.old_log_probs, rb.ref_log_probs)  # same params
    self.assertBetween(float(self.m['accuracy']), 0.0, 1.0)

  def test_ppo_loss_at_the_old_policy(self):
    """ratio = 1: pg = -agg(A), KL to an identical reference = 0; entropy and value terms add."""
    rb = self.rb._replace(advantages=jnp.where(self.rb.mask, 1.5, 0.0))
    for agg in aggregation.AGG_MODES:
      base = lm.make_ppo_loss(self.policy, prompt_len=TASK.prompt_len, agg_mode=agg)
      loss, aux = base(self.params, rb)
      np.testing.assert_allclose(
        loss, -aggregation.aggregate(rb.advantages, rb.mask, agg), rtol=1e-5
      )
      np.testing.assert_allclose(aux['ratio_mean'], 1.0, rtol=1e-5)
      full = lm.make_ppo_loss(
        self.policy,
        prompt_len=TASK.prompt_len,
        agg_mode=agg,
        kl_coef=0.3,
        ent_coef=0.1,
        vf_coef=0.5,
      )
      loss2, aux2 = full(self.params, rb)
      np.testing.assert_allclose(aux2['kl_ref'], 0.0, atol=1e-6)
      expected = loss - 0.1 * aux2['entropy'] + 0.5 * aux2['value_loss']
      np.testing.assert_allclose(loss2, expected, rtol=1e-5)
      self.assertGreater(float(aux2['entropy']), 0.0)

  def test_kl_is_positive_against_another_reference(self):
    other = self.policy.init(jax.random.key(5))
    rb = self.rb._replace(
      ref_log_probs=self.rollout(self.params, other, _batch(), jax.random.key(1))[0].ref_log_probs
    )
    fn = lm.make_ppo_loss(self.policy, prompt_len=TASK.prompt_len, kl_coef=1.0)
    _, aux = fn(self.params, rb)
    self.assertGreater(float(aux['kl_ref']), 0.0)


class UpdateTest(parameterized.TestCase):
  @parameterized.named_parameters(('grpo', 'grpo', False), ('gae', 'gae', True))
  def test_update_is_finite_changes_params_and_traces_once(self, name, value_head):
    policy = _policy(value_head)
    tx = optax.adam(1e-3)
    loss_cfg = dict(ent_coef=0.01, kl_coef=0.1, vf_coef=0.5)  # entropy: a gradient even at r=0
    update = lm.make_rl_update(
      policy,
      TASK,
      estimators.make(name),
      tx,
      group_size=G,
      num_epochs=2,
      num_minibatches=2,
      loss_cfg=loss_cfg,
    )
    state = lm.make_init(policy, tx, with_ref=True)(jax.random.key(0))
    traces = []

    def counted(state, batch, key):
      traces.append(None)  # runs only while tracing
      return update(state, batch, key)

    step = jax.jit(counted)
    s1, m = step(state, _batch(seed=1), jax.random.key(1))
    s2, m = step(s1, _batch(seed=2), jax.random.key(2))
    self.assertLen(traces, 1)
    self.assertEqual(int(s2['step']), 2)
    for k in ('loss', 'grad_norm', 'entropy', 'kl_ref', 'reward'):
      self.assertTrue(np.isfinite(m[k]), k)
    self.assertEqual(float(m['params_finite']), 1.0)
    if value_head:
      self.assertIn('value_loss', m)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state['params'], s2['params'])
    self.assertTrue(any(jax.tree.leaves(changed)))
    same = jax.tree.map(np.array_equal, state['ref_params'], s2['ref_params'])
    self.assertTrue(all(jax.tree.leaves(same)))  # the reference is frozen

  def test_group_estimator_needs_groups(self):
    with self.assertRaisesRegex(ValueError, 'group_size >= 2'):
      lm.make_rollout_fn(_policy(), TASK, estimators.make('rloo'), group_size=1)

  def test_the_default_seams_are_the_single_turn_ones(self):
    """collect / score_fn handed in explicitly give the default update, bit for bit."""
    policy, tx, est = _policy(True), optax.adam(1e-3), estimators.make('gae')
    kw = dict(group_size=G, num_minibatches=2, loss_cfg=dict(vf_coef=0.5, ent_coef=0.01))
    seams = dict(
      collect=lm.make_sample_collect(policy, TASK, group_size=G, temperature=0.9),
      score_fn=lm.make_score_fn(policy, TASK.prompt_len, 0.9),
    )
    state = lm.make_init(policy, tx)(jax.random.key(0))
    args = (state, _batch(seed=1), jax.random.key(1))
    want = jax.jit(lm.make_rl_update(policy, TASK, est, tx, temperature=0.9, **kw))(*args)
    got = jax.jit(lm.make_rl_update(policy, TASK, est, tx, temperature=0.9, **kw, **seams))(*args)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    with self.assertRaisesRegex(ValueError, 'go together'):
      lm.make_rl_update(policy, TASK, est, tx, collect=seams['collect'], **kw)


class SupervisedTest(absltest.TestCase):
  def test_sft_overfits_a_batch_and_eval_reads_greedy_answers(self):
    policy = _policy()
    tx = optax.adam(1e-2)
    state = lm.make_init(policy, tx)(jax.random.key(0))
    batch = _batch(8)
    update = jax.jit(lm.make_sft_update(policy, TASK, tx))
    first = None
    for _ in range(60):
      state, m = update(state, batch)
      first = float(m['loss']) if first is None else first
    self.assertLess(float(m['loss']), 0.3 * first)
    scores = jax.jit(lm.make_eval_fn(policy, TASK))(state['params'], batch)
    # Greedy decoding of a model fitted on this very batch reproduces its targets.
    self.assertGreaterEqual(float(jnp.mean(scores['exact_match'])), 0.75)
    for k in ('exact_match', 'final_answer', 'step_accuracy'):
      self.assertEqual(scores[k].shape, (8,))
    # exact match implies the right final answer.
    self.assertTrue(bool(jnp.all(scores['final_answer'] >= scores['exact_match'])))

  def test_make_sampler_is_sampling_sample_with_the_task_settings(self):
    policy, batch = _policy(), _batch(3)
    params = policy.init(jax.random.key(1))
    key = jax.random.key(2)
    got = lm.make_sampler(policy, TASK)(params, batch['prompts'], key, num_samples=2)
    want = sampling.sample(
      policy, params, key, batch['prompts'], lm.prompt_mask(TASK, batch['prompts']),
      num_samples=2, max_new_tokens=TASK.response_len, eos_id=TASK.vocab.eos_id,
      pad_id=TASK.vocab.pad_id,
    )  # fmt: skip
    np.testing.assert_array_equal(got.responses, want.responses)
    np.testing.assert_array_equal(got.mask, want.mask)


def _toy_stage(scale=1.0):
  """A stage that needs a field no built-in provider fills: `resp_len` [B]."""

  def apply(traj, prev, hp):
    del prev
    adv = hp['scale'] * jnp.broadcast_to(traj.get('resp_len')[:, None], traj.mask.shape)
    return estimators.Targets(adv, adv)

  return estimators.Stage('toy_len', ('resp_len',), dict(scale=scale), apply)


def _spy_stage(seen):
  def build():
    def apply(traj, prev, hp):
      del prev, hp
      seen.append(sorted(n for n in types.FIELDS if traj.get(n) is not None) + sorted(traj.extras))
      z = jnp.zeros(traj.mask.shape)
      return estimators.Targets(z, z)

    return estimators.Stage('spy', ('entropies', 'log_probs'), {}, apply)

  return build


class ProviderTest(absltest.TestCase):
  def test_toy_stage_with_a_new_field_runs_through_the_learner(self):
    """A new estimator stage + a new Trajectory field, with no edit to jaxca/lm/."""
    est = estimators.make('grpo + 0.5*toy_len', stages={'toy_len': _toy_stage}, scale=2.0)
    providers = {'resp_len': lambda ctx: dict(resp_len=ops.masked_count(ctx.mask, axis=-1))}
    with self.assertRaisesRegex(ValueError, 'resp_len'):
      lm.make_rollout_fn(_policy(), TASK, est, group_size=G)
    policy = _policy()
    params = policy.init(jax.random.key(0))
    rollout = jax.jit(lm.make_rollout_fn(policy, TASK, est, group_size=G, providers=providers))
    rb, _ = rollout(params, params, _batch(), jax.random.key(1))
    lengths = rb.mask.sum(-1).astype(np.float32)
    toy = np.where(rb.mask, 0.5 * 2.0 * lengths[:, None], 0.0)
    grpo = np.asarray(rb.advantages) - toy
    # The grpo part is constant over each row's valid tokens and sums to ~0 per group.
    for row in range(rb.mask.shape[0]):
      vals = grpo[row][np.asarray(rb.mask[row])]
      if vals.size:
        np.testing.assert_allclose(vals, vals[0], atol=1e-5)
    # And the whole RL update runs (jitted, finite).
    tx = optax.adam(1e-3)
    update = jax.jit(lm.make_rl_update(policy, TASK, est, tx, group_size=G, providers=providers))
    state = lm.make_init(policy, tx)(jax.random.key(0))
    state, m = update(state, _batch(seed=3), jax.random.key(2))
    self.assertTrue(np.isfinite(m['loss']))
    # Hyper-parameters are traced: a new omega needs no recompile and changes the result.
    hp = jax.tree.map(np.asarray, est.hparams)
    hp['weights'] = np.array([1.0, 0.0], np.float32)
    rb0, _ = rollout(params, params, _batch(), jax.random.key(1), hp)
    np.testing.assert_allclose(rb0.advantages, grpo, atol=1e-5)

  def test_rollout_fills_exactly_the_required_fields(self):
    seen = []
    est = estimators.make('spy', stages={'spy': _spy_stage(seen)})
    policy = _policy()
    params = policy.init(jax.random.key(0))
    lm.make_rollout_fn(policy, TASK, est, group_size=G)(params, params, _batch(), jax.random.key(1))
    self.assertEqual(seen[-1], ['entropies', 'log_probs', 'mask', 'rewards'])
    for name, fields in (
      ('grpo', ['group_ids', 'mask', 'rewards']),
      ('min_form', ['group_ids', 'mask', 'rewards', 'step_ids', 'step_rewards']),
    ):
      got = lm.check_providers(estimators.make(name))
      self.assertEqual(sorted(list(got) + ['mask', 'rewards']), fields)

  def test_missing_providers_and_value_head_fail_at_build_time(self):
    with self.assertRaisesRegex(ValueError, 'value head'):
      lm.make_rollout_fn(_policy(False), TASK, estimators.make('gae'), group_size=G)
    est = estimators.make('grpo')
    est_mc = estimators.Estimator(
      'mc',
      est.terms + (est.terms[0]._replace(requires=('mc_values', 'token_weights')),),
      est.post,
      dict(est.hparams, weights=np.ones(2, np.float32), terms=est.hparams['terms'] * 2),
    )
    with self.assertRaisesRegex(ValueError, r"\['mc_values', 'token_weights'\]"):
      lm.make_rollout_fn(_policy(), TASK, est_mc, group_size=G)

  def test_min_form_with_process_rewards_runs(self):
    policy = _policy()
    params = policy.init(jax.random.key(0))
    est = estimators.make('min_form | whiten', skip_zeros=True)
    rollout = jax.jit(lm.make_rollout_fn(policy, TASK, est, group_size=G, reward='process'))
    rb, m = rollout(params, params, _batch(), jax.random.key(1))
    self.assertTrue(np.all(np.isfinite(rb.advantages)))
    closers = lm.reward_positions(TASK, 'process', rb.tokens[:, TASK.prompt_len :], rb.mask, None)
    np.testing.assert_array_equal(np.asarray(rb.advantages)[np.asarray(closers)], 0.0)


if __name__ == '__main__':
  absltest.main()


class _Ctx(NamedTuple):
  responses: jax.Array
  mask: jax.Array


class _Targets(NamedTuple):
  advantages: jax.Array


class AdvantageByClassTest(absltest.TestCase):
  def test_matches_a_loop_with_and_without_jit(self):
    rng = np.random.default_rng(0)
    responses = rng.integers(0, 4, (3, 5))
    mask = rng.random((3, 5)) < 0.8
    adv = rng.normal(size=(3, 5)).astype(np.float32)
    classes = {'c1': lambda r: r == 1, 'c23': lambda r: r >= 2, 'none': lambda r: r > 9}
    fn = lm.advantage_by_class(classes)
    ctx = _Ctx(jnp.asarray(responses), jnp.asarray(mask))
    targets = _Targets(jnp.asarray(adv))
    want = {}
    for name, pred in classes.items():
      total, count = 0.0, 0
      for i in range(3):
        for t in range(5):
          if mask[i, t] and pred(responses[i, t]):
            total, count = total + abs(float(adv[i, t])), count + 1
      want[name] = total / max(count, 1)
    jitted = jax.jit(lambda c, a: fn(c, None, a))
    for got in (fn(ctx, None, targets), jitted(ctx, targets)):
      for name in classes:
        np.testing.assert_allclose(float(got[name]), want[name], rtol=1e-6, atol=1e-7)
