"""jaxca.estimators.token (GTPO, GRPO-S, HICRA stages; FAI planning sets) vs NumPy loops, and the
learner / MC hooks they use (`metrics_fn`, HICRA's host field, chunked MC completions)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxca import estimators
from jaxca import lm
from jaxca import prefixes
from jaxca import tasks
from jaxca import types
from jaxca.lm import providers as providers_lib
from jaxca.networks import transformer
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401
from tests.reference import token_credit as ref

P, G, T = 4, 4, 7


def _traj(seed, contiguous=True):
  """B = P*G rows: an all-correct group, an all-wrong group, a one-correct group with an
  empty row, a mixed group; zero entropies scattered; right padding and one hole."""
  rng = np.random.default_rng(seed)
  b = P * G
  ent = rng.exponential(1.0, size=(b, T)).astype(np.float32)
  ent[rng.random((b, T)) < 0.15] = 0.0
  lengths = rng.integers(2, T + 1, size=b)
  mask = np.arange(T)[None, :] < lengths[:, None]
  mask[11] = False
  mask[12, 1] = False
  correct = rng.random(b) < 0.5
  correct[:G], correct[G : 2 * G] = True, False
  correct[2 * G : 3 * G] = [True, False, False, False]
  ids = np.repeat(np.arange(P), G).astype(np.int32)
  if not contiguous:
    perm = np.random.default_rng(3).permutation(b)
    ent, mask, correct, ids = ent[perm], mask[perm], correct[perm], ids[perm]
  last = np.where(mask.any(1), T - 1 - np.argmax(mask[:, ::-1], axis=1), -1)
  rewards = np.zeros((b, T), np.float32)
  for i in range(b):
    if last[i] >= 0:
      rewards[i, last[i]] = float(correct[i])
  traj = types.Trajectory(
    rewards=jnp.asarray(rewards),
    mask=jnp.asarray(mask),
    entropies=jnp.asarray(ent),
    group_ids=jnp.asarray(ids),
    num_groups=P,
    groups_contiguous=contiguous,
  )
  # A response without a valid token is never "correct" (its outcome is 0).
  return traj, ent, mask, correct & mask.any(1), ids


def _grpo_ref(correct, mask, ids, eps=1e-6):
  out = np.zeros(mask.shape)
  for g in set(ids.tolist()):
    members = [i for i in range(len(ids)) if ids[i] == g and mask[i].any()]
    r = np.array([float(correct[i]) for i in members])
    if len(r) < 2:
      continue
    a = (r - r.mean()) / (r.std(ddof=1) + eps)
    for i, v in zip(members, a):
      out[i] = np.where(mask[i], v, 0.0)
  return out


class StagesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(pooling=('joint', 'separate'), contiguous=(True, False))
  def test_gtpo_stage_matches_reference(self, pooling, contiguous):
    traj, ent, mask, correct, ids = _traj(1, contiguous)
    est = estimators.make('gtpo', pooling=pooling)
    self.assertEqual(est.requires, ('rewards', 'mask', 'group_ids', 'entropies'))
    hp = jax.tree.map(jnp.asarray, est.hparams)
    hp['terms'][0]['alpha2'] = jnp.float32(0.3)  # traced hyper-parameter
    got = self.variant(est)(traj, hp).advantages
    want = ref.gtpo_advantages(ent, correct, mask, ids, 1.0, 0.3, pooling)
    np.testing.assert_allclose(got, want, atol=2e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('joint', 'separate')
  def test_grpo_s_stage_matches_reference(self, pooling):
    traj, ent, mask, correct, ids = _traj(2, contiguous=False)
    est = estimators.make('grpo_s', pooling=pooling, beta2=0.2)
    got = self.variant(est)(traj).advantages
    want = ref.grpo_s_advantages(ent, correct, mask, ids, 1.0, 0.2, pooling)
    np.testing.assert_allclose(got, want, atol=2e-5)

  def test_separate_pools_cancel_alpha1_through_the_stage(self):
    traj, *_ = _traj(3)
    est = estimators.make('gtpo', pooling='separate')
    joint = estimators.make('gtpo')
    hp = jax.tree.map(jnp.asarray, est.hparams)
    big = jax.tree.map(jnp.asarray, est.hparams)
    big['terms'][0]['alpha1'] = jnp.float32(7.0)
    np.testing.assert_allclose(est(traj, hp).advantages, est(traj, big).advantages, atol=2e-5)
    # ... while the joint pool keeps the outcome sign (and so depends on alpha1).
    self.assertGreater(
      float(jnp.max(jnp.abs(joint(traj, hp).advantages - joint(traj, big).advantages))), 1e-3
    )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(True, False)
  def test_hicra_paper_form(self, contiguous):
    traj, _, mask, correct, ids = _traj(4, contiguous)
    grpo = estimators.make('grpo')
    est = estimators.make('grpo | hicra', hicra_alpha=0.2)
    self.assertIn('planning', est.requires)
    empty = traj.replace(planning=jnp.zeros(mask.shape, bool))
    np.testing.assert_array_equal(
      self.variant(est)(empty).advantages, self.variant(grpo)(traj).advantages
    )
    planning = np.random.default_rng(0).random(mask.shape) < 0.4
    got = self.variant(est)(traj.replace(planning=jnp.asarray(planning))).advantages
    base = _grpo_ref(correct, mask, ids)
    np.testing.assert_allclose(got, ref.hicra(base, planning, mask, 0.2), atol=2e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_hicra_official_form(self):
    traj, ent, mask, correct, ids = _traj(5, contiguous=False)
    est = estimators.make('grpo | hicra_official')
    got = self.variant(est)(traj).advantages
    base = _grpo_ref(correct, mask, ids)
    np.testing.assert_allclose(got, ref.hicra_official(base, ent, mask, ids, 0.2, 0.3), atol=2e-5)
    hp = jax.tree.map(jnp.asarray, est.hparams)
    hp['post'][0]['hicra_top_fraction'] = jnp.float32(0.0)  # empty set: GRPO
    np.testing.assert_array_equal(
      self.variant(est)(traj, hp).advantages, estimators.make('grpo')(traj).advantages
    )

  def test_unknown_pooling_raises(self):
    with self.assertRaisesRegex(ValueError, 'pooling'):
      estimators.make('gtpo', pooling='both')

  def test_missing_entropies_raise(self):
    traj, *_ = _traj(6)
    with self.assertRaisesRegex(ValueError, 'entropies'):
      estimators.make('gtpo')(traj.replace(entropies=None))


TASK = tasks.make('arith', num_steps=2, modulus=5, ops='invertible')


def _policy():
  cfg = ml_collections.ConfigDict(
    dict(
      width=16,
      depth=2,
      num_heads=2,
      max_len=TASK.prompt_len + 2 * TASK.response_len,
      dtype='float32',
      value_head=False,
    )
  )
  return transformer.make_policy(cfg, vocab_size=TASK.vocab.size)


def _batch(n=3, seed=0):
  return {k: jnp.asarray(v) for k, v in TASK.generate(seed, n).items()}


class PlanningAndLearnerTest(absltest.TestCase):
  def test_fai_planning_matches_numpy(self):
    policy = _policy()
    params = policy.init(jax.random.key(0))
    phases = lm.make_rl_phases(policy, TASK, estimators.make('grpo'), optax.sgd(0.0), group_size=2)
    state = lm.init_from_params(params, optax.sgd(0.0))
    data = phases.collect(state, _batch(), jax.random.key(1))
    lp = TASK.prompt_len
    got = jax.jit(providers_lib.fai_planning, static_argnums=(0, 4))(
      policy, params, data.tokens, data.valid, lp, 0.2
    )
    att = np.asarray(policy.apply(params, data.tokens, data.valid, return_attention=True).attention)
    b, layers, h, length, _ = att.shape
    att = att.reshape(b, layers * h, length, length).astype(np.float64)
    valid = np.asarray(data.valid)
    resp = valid & (np.arange(length) >= lp)[None, :]
    dist = ref.mean_attention_distance(att, resp, valid)
    heads = dist > np.median(dist)
    fai = ref.fai(att, valid, heads, query_mask=resp)[:, lp:]
    want = ref.top_fraction_mask(fai, resp[:, lp:], 0.2)
    np.testing.assert_array_equal(got, want)
    m = providers_lib.attention_metrics(jnp.asarray(att), valid, resp, 4.0)
    np.testing.assert_allclose(m.waad, ref.waad(att, valid, ~heads, 4), atol=1e-5)
    np.testing.assert_allclose(m.fai_all, ref.fai(att, valid, None, query_mask=resp), atol=1e-6)

  def test_hicra_host_field_and_metrics_fn_in_the_learner(self):
    policy = _policy()
    params = policy.init(jax.random.key(0))
    tx = optax.adam(1e-3)
    est = estimators.make('grpo | hicra')

    def metrics_fn(ctx, traj, targets):
      del traj
      adv = jnp.where(ctx.mask, targets.advantages, 0.0)
      return dict(sep_adv=jnp.sum(jnp.abs(adv) * (ctx.responses == TASK.vocab.step_id)))

    phases = lm.make_rl_phases(
      policy, TASK, est, tx, group_size=4, host_fields=('planning',), metrics_fn=metrics_fn
    )
    grpo = lm.make_rl_phases(policy, TASK, estimators.make('grpo'), tx, group_size=4)
    state = lm.init_from_params(params, tx)
    data = jax.jit(phases.collect)(state, _batch(), jax.random.key(1))
    empty = dict(planning=jnp.zeros(data.mask.shape, bool))
    s1, m = jax.jit(phases.update)(state, data, empty, jax.random.key(2))
    s2, m2 = jax.jit(grpo.update)(state, data, {}, jax.random.key(2))
    self.assertIn('sep_adv', m)
    np.testing.assert_allclose(m['loss'], m2['loss'], atol=1e-6)  # empty S: GRPO
    for a, b in zip(jax.tree.leaves(s1['params']), jax.tree.leaves(s2['params'])):
      np.testing.assert_allclose(a, b, atol=1e-6)

  def test_gtpo_learner_update_is_finite(self):
    policy = _policy()
    tx = optax.adam(1e-3)
    update = jax.jit(
      lm.make_rl_update(
        policy, TASK, estimators.make('gtpo'), tx, group_size=4, loss_cfg=dict(clip_eps_high=0.28)
      )
    )
    state = lm.init_from_params(policy.init(jax.random.key(0)), tx)
    _, m = update(state, _batch(), jax.random.key(1))
    self.assertTrue(np.isfinite(m['loss']))
    self.assertGreater(float(m['adv_abs_mean']), 0.0)


class ChunkedMCTest(absltest.TestCase):
  def test_chunks_give_the_unchunked_values(self):
    rng = np.random.default_rng(0)
    b, s, length = 6, 4, 5
    tokens = rng.integers(0, 4, (b, s, length))
    mask = rng.random((b, s, length)) > 0.3
    mask[..., 0] = True
    exists = rng.random((b, s)) > 0.2
    batch = {'answers': rng.integers(0, 9, b)}
    calls = []

    def complete(tok, m, rows):
      calls.append(len(tok))
      score = (np.asarray(tok) * np.asarray(m)).sum(1) % 3 + rows['answers']
      return (
        np.repeat(score, 2).astype(np.float32),
        np.ones(2 * len(tok), bool),
        np.ones(2 * len(tok)),
      )

    whole = prefixes.mc_step_values(complete, tokens, mask, exists, batch, num_samples=2)
    calls.clear()
    parts = prefixes.mc_step_values(complete, tokens, mask, exists, batch, num_samples=2, chunk=4)
    np.testing.assert_array_equal(whole.values, parts.values)
    self.assertEqual(parts.samples, whole.samples)
    self.assertEqual(calls, [4] * (whole.bucket // 4))
    with self.assertRaisesRegex(ValueError, 'power of two'):
      prefixes.mc_step_values(complete, tokens, mask, exists, batch, num_samples=2, chunk=3)


if __name__ == '__main__':
  absltest.main()
