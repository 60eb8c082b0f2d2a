"""Tests for jaxca.objectives against NumPy loops (tests/reference/objectives.py)."""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import arith_rl
from jaxca import objectives
from jaxca.objectives import aggregation
from jaxca.objectives import losses
from tests.reference import losses as ref_losses
from tests.reference import objectives as ref


def _inputs(seed, shape=(4, 7), spread=0.3):
  rng = np.random.default_rng(seed)
  log_probs = rng.normal(-1.0, 0.5, shape).astype(np.float32)
  old = (log_probs + rng.normal(0.0, spread, shape)).astype(np.float32)
  adv = rng.normal(size=shape).astype(np.float32)
  mask = rng.random(shape) < 0.7
  mask.reshape(-1, shape[-1])[0] = False  # one fully masked sequence
  return log_probs, old, adv, mask


def _flat(*arrays):
  return [np.asarray(a).reshape(-1, a.shape[-1]) for a in arrays]


# name, hyper-parameters, reference per-token loss matrix (on [B, T] arrays).
CASES = {
  'ppo_clip': (dict(eps_low=0.2), lambda lp, o, a, m: ref.ppo_clip(lp, o, a, m, 0.2, 0.2)),
  'ppo_clip_higher_dual': (
    dict(eps_low=0.2, eps_high=0.28, dual_clip_c=1.5),
    lambda lp, o, a, m: ref.ppo_clip(lp, o, a, m, 0.2, 0.28, 1.5),
  ),
  'gspo': (
    dict(eps_low=0.1, eps_high=0.15),
    lambda lp, o, a, m: ref.gspo(lp, o, a, m, 0.1, 0.15),
  ),
  'gspo_default_eps': (dict(), lambda lp, o, a, m: ref.gspo(lp, o, a, m, 3e-4, 4e-4)),
  'gspo_token': (
    dict(eps_low=0.1, eps_high=0.15),
    lambda lp, o, a, m: ref.gspo(lp, o, a, m, 0.1, 0.15),
  ),
  'cispo': (dict(eps_high=0.2), lambda lp, o, a, m: ref.cispo(lp, o, a, m, None, 0.2)),
  'cispo_two_sided': (
    dict(eps_low=0.1, eps_high=0.3),
    lambda lp, o, a, m: ref.cispo(lp, o, a, m, 0.1, 0.3),
  ),
  'sapo': (dict(), lambda lp, o, a, m: ref.sapo(lp, o, a, m, 1.0, 1.05)),
  'gpg': (dict(), lambda lp, o, a, m: ref.gpg(lp, a, m)),
  'reinforce': (dict(), lambda lp, o, a, m: ref.reinforce(lp, o, a, m)),
  'reinforce_tis': (dict(is_max=1.1), lambda lp, o, a, m: ref.reinforce(lp, o, a, m, 1.1)),
  'clip_cov': (
    dict(clip_cov_ratio=0.125, clip_cov_lb=0.05, clip_cov_ub=5.0),
    lambda lp, o, a, m: ref.clip_cov(lp, o, a, m, 0.2, 0.2, 0.125, 0.05, 5.0),
  ),
  'kl_cov': (
    dict(kl_cov_ratio=0.25, ppo_kl_coef=0.5),
    lambda lp, o, a, m: ref.kl_cov(lp, o, a, m, 0.25, 0.5),
  ),
  'gmpo': (dict(eps_low=0.2, eps_high=0.3), lambda lp, o, a, m: ref.gmpo(lp, o, a, m, 0.2, 0.3)),
  'dppo_tv': (
    dict(eps_low=0.05, eps_high=0.08, is_max=1.2),
    lambda lp, o, a, m: ref.verl_dppo(lp, o, a, m, 'tv', 0.05, 0.08, 1.2),
  ),
  'dppo_tv_default': (dict(), lambda lp, o, a, m: ref.verl_dppo(lp, o, a, m, 'tv', 0.15, 0.15)),
  'dppo_kl': (
    dict(eps_low=0.01, eps_high=0.02),
    lambda lp, o, a, m: ref.verl_dppo(lp, o, a, m, 'kl', 0.01, 0.02),
  ),
  'dppo_kl_default': (dict(), lambda lp, o, a, m: ref.verl_dppo(lp, o, a, m, 'kl', 0.05, 0.05)),
}


def _objective_name(case):
  for name in sorted(objectives.OBJECTIVES, key=len, reverse=True):
    if case.startswith(name):
      return name
  raise KeyError(case)


class ReferenceTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(case=list(CASES), agg_mode=['token_mean', 'seq_mean_token_mean'])
  def test_matches_reference(self, case, agg_mode):
    hparams, reference = CASES[case]
    log_probs, old, adv, mask = _inputs(1)
    fn = objectives.make(_objective_name(case), agg_mode=agg_mode, **hparams)
    got, metrics = self.variant(fn)(log_probs, old, adv, mask)
    expected = ref_losses.aggregate(reference(log_probs, old, adv, mask), mask, agg_mode)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    self.assertTrue(all(np.isfinite(v) for v in jax.tree.leaves(metrics)))

  @parameterized.parameters('ppo_clip', 'gspo', 'cispo', 'gmpo', 'kl_cov')
  def test_leading_batch_axes(self, case):
    hparams, reference = CASES[case]
    log_probs, old, adv, mask = _inputs(2, shape=(2, 3, 5))
    got, _ = objectives.make(_objective_name(case), agg_mode='token_sum', **hparams)(
      log_probs, old, adv, mask
    )
    flat = _flat(log_probs, old, adv, mask)
    expected = ref_losses.aggregate(reference(*flat), flat[3], 'token_sum')
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-5)

  def test_gspo_gradient_matches_reference(self):
    log_probs, old, _, mask = _inputs(3, spread=0.1)
    seq_adv = np.random.default_rng(4).normal(size=mask.shape[0]).astype(np.float32)
    adv = np.broadcast_to(seq_adv[:, None], mask.shape).astype(np.float32)
    grads = jax.grad(
      lambda lp: objectives.gspo(lp, old, adv, mask, eps_low=0.05, eps_high=0.06)[0]
    )(log_probs)
    expected = ref.gspo_grad_seq_mean(log_probs, old, seq_adv, mask, 0.05, 0.06)
    self.assertGreater(np.abs(expected).sum(), 0.0)  # some sequences are not clipped
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-7)

  def test_gmpo_with_is_weights_matches_reference(self):
    log_probs, old, adv, mask = _inputs(5)
    w = np.random.default_rng(6).uniform(0.5, 2.0, mask.shape).astype(np.float32)
    got, _ = objectives.gmpo(log_probs, old, adv, mask, is_weights=w)
    per_token = ref.gmpo(log_probs, old, adv, mask, 0.4, 0.4, is_weights=w)
    expected = ref_losses.aggregate(per_token, mask, 'seq_mean_token_mean')
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)

  @parameterized.parameters('ppo_clip', 'cispo', 'sapo', 'reinforce')
  def test_is_weights_multiply_the_token_loss(self, case):
    hparams, reference = CASES[case]
    log_probs, old, adv, mask = _inputs(7)
    w = np.random.default_rng(8).uniform(0.5, 2.0, mask.shape).astype(np.float32)
    got, _ = objectives.OBJECTIVES[case](
      log_probs, old, adv, mask, agg_mode='token_mean', is_weights=w, **hparams
    )
    expected = ref_losses.aggregate(reference(log_probs, old, adv, mask) * w, mask, 'token_mean')
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


class HandCheckedTest(absltest.TestCase):
  def _ppo(self, log_ratio, adv, **kw):
    lp = jnp.array([[math.log(0.5) + log_ratio]], jnp.float32)
    old = jnp.array([[math.log(0.5)]], jnp.float32)
    return float(objectives.ppo_clip(lp, old, jnp.array([[adv]]), jnp.ones((1, 1), bool), **kw)[0])

  def test_clip_higher(self):
    # r = 1.25, A = 1: eps_high 0.2 clips to 1.2; eps_high 0.28 lets 1.25 through.
    self.assertAlmostEqual(self._ppo(math.log(1.25), 1.0, eps_high=0.2), -1.2, places=5)
    self.assertAlmostEqual(self._ppo(math.log(1.25), 1.0, eps_high=0.28), -1.25, places=5)

  def test_dual_clip(self):
    # r = 5, A = -1: PPO loss max(5, 1.2) = 5; the dual clip caps it at c = 3.
    self.assertAlmostEqual(self._ppo(math.log(5.0), -1.0), 5.0, places=4)
    self.assertAlmostEqual(self._ppo(math.log(5.0), -1.0, dual_clip_c=3.0), 3.0, places=5)
    # Positive advantages are untouched by the dual clip.
    self.assertAlmostEqual(self._ppo(math.log(0.5), 1.0, dual_clip_c=3.0), -0.5, places=5)
    with self.assertRaisesRegex(ValueError, 'dual_clip_c'):
      self._ppo(0.0, 1.0, dual_clip_c=1.0)

  def test_sapo_gate_at_ratio_one(self):
    ones = jnp.ones((1, 2), bool)
    lp = jnp.full((1, 2), -1.0)
    loss, metrics = objectives.sapo(lp, lp, jnp.array([[1.0, -1.0]]), ones, agg_mode='token_sum')
    # f(1) = 2 / tau: -2/1 * 1 - 2/1.05 * (-1)
    self.assertAlmostEqual(float(loss), -2.0 + 2.0 / 1.05, places=5)


class PropertyTest(parameterized.TestCase):
  @parameterized.parameters(*aggregation.AGG_MODES)
  def test_ppo_clip_at_ratio_one_is_minus_aggregated_advantage(self, agg_mode):
    log_probs, _, adv, mask = _inputs(10)
    for name in ('ppo_clip', 'gspo', 'gspo_token', 'clip_cov'):
      got, _ = objectives.make(name, agg_mode=agg_mode)(log_probs, log_probs, adv, mask)
      expected = ref_losses.aggregate(-np.where(mask, adv, 0.0), mask, agg_mode)
      np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)

  @parameterized.parameters('ppo_clip', 'gspo', 'sapo', 'cispo', 'gpg', 'reinforce', 'gmpo')
  def test_on_policy_gradient_is_the_policy_gradient(self, name):
    # At ratio 1 every objective's gradient is -A grad log pi (aggregated). GSPO and GMPO use
    # sequence-level ratios, so this holds for them with sequence-constant advantages.
    log_probs, _, adv, mask = _inputs(11)
    if name in ('gspo', 'gmpo'):
      adv = np.broadcast_to(adv[:, :1], adv.shape).astype(np.float32)
    fn = objectives.make(name, agg_mode='seq_mean_token_mean')
    grads = jax.grad(lambda lp: fn(lp, jax.lax.stop_gradient(lp), adv, mask)[0])(log_probs)
    expected = jax.grad(
      lambda lp: aggregation.aggregate(-jnp.where(mask, adv * lp, 0.0), mask, 'seq_mean_token_mean')
    )(log_probs)
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-7)

  def test_gspo_on_length_one_sequences_is_ppo_clip(self):
    log_probs, old, adv, _ = _inputs(12)
    mask = np.zeros(log_probs.shape, bool)
    mask[np.arange(mask.shape[0]), np.arange(mask.shape[0]) % mask.shape[1]] = True
    for agg_mode in ('token_mean', 'seq_mean_token_mean'):
      kw = dict(eps_low=0.2, eps_high=0.28, agg_mode=agg_mode)
      for gspo in (objectives.gspo, objectives.gspo_token):
        g_val, g_grad = jax.value_and_grad(lambda lp: gspo(lp, old, adv, mask, **kw)[0])(log_probs)
        p_val, p_grad = jax.value_and_grad(
          lambda lp: objectives.ppo_clip(lp, old, adv, mask, **kw)[0]
        )(log_probs)
        np.testing.assert_allclose(g_val, p_val, rtol=1e-6)
        np.testing.assert_allclose(g_grad, p_grad, rtol=1e-5, atol=1e-8)

  def test_gspo_token_equals_gspo_with_sequence_advantages(self):
    log_probs, old, adv, mask = _inputs(13, spread=0.05)
    adv = np.broadcast_to(adv[:, :1], adv.shape).astype(np.float32)
    kw = dict(eps_low=0.02, eps_high=0.03)
    a = jax.value_and_grad(lambda lp: objectives.gspo(lp, old, adv, mask, **kw)[0])(log_probs)
    b = jax.value_and_grad(lambda lp: objectives.gspo_token(lp, old, adv, mask, **kw)[0])(log_probs)
    chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-8)

  def test_cispo_gradient_is_clipped_weight_reinforce(self):
    log_probs, old, adv, mask = _inputs(14)
    g_cispo = jax.grad(lambda lp: objectives.cispo(lp, old, adv, mask, eps_high=0.2)[0])(log_probs)
    g_reinforce = jax.grad(
      lambda lp: objectives.reinforce(lp, old, adv, mask, is_max=1.2, agg_mode='token_mean')[0]
    )(log_probs)
    np.testing.assert_allclose(g_cispo, g_reinforce, rtol=1e-6, atol=1e-8)
    # and explicitly: -clip(r, -, 1.2) * A / #valid
    ratio = np.exp(log_probs - old)
    expected = np.where(mask, -np.minimum(ratio, 1.2) * adv / mask.sum(), 0.0)
    np.testing.assert_allclose(g_cispo, expected, rtol=1e-5, atol=1e-8)
    # every token keeps a gradient, unlike PPO-clip
    self.assertTrue(np.all(np.asarray(g_cispo)[mask & (adv != 0)] != 0))

  def test_dual_clip_is_trl_two_sided_delta(self):
    log_probs, old, adv, mask = _inputs(25, spread=1.0)
    got = objectives.ppo_clip(log_probs, old, adv, mask, eps_high=0.28, dual_clip_c=1.5)[0]
    per_token = ref.trl_two_sided(log_probs, old, adv, mask, 0.2, 0.28, 1.5)
    self.assertTrue(np.any(np.exp(log_probs - old)[mask & (adv < 0)] > 1.5))  # bound active
    np.testing.assert_allclose(
      got, ref_losses.aggregate(per_token, mask, 'token_mean'), rtol=2e-5, atol=1e-6
    )

  def test_ppo_clip_equals_losses_ppo_policy_loss(self):
    log_probs, old, adv, mask = _inputs(15)
    for mode in aggregation.AGG_MODES:
      a = objectives.ppo_clip(log_probs, old, adv, mask, eps_high=0.28, agg_mode=mode)[0]
      b = losses.ppo_policy_loss(log_probs, old, adv, mask, clip_eps_high=0.28, agg_mode=mode)[0]
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

  @parameterized.parameters(*objectives.OBJECTIVES)
  def test_gradients_finite_and_zero_on_masked_tokens(self, name):
    log_probs, old, adv, mask = _inputs(16)
    log_probs = np.where(mask, log_probs, np.inf).astype(np.float32)
    old = np.where(mask, old, -np.inf).astype(np.float32)
    adv = np.where(mask, adv, np.nan).astype(np.float32)
    fn = objectives.make(name)
    loss, grads = jax.value_and_grad(lambda lp: fn(lp, old, adv, mask)[0])(log_probs)
    self.assertTrue(np.isfinite(loss))
    self.assertTrue(np.all(np.isfinite(grads)))
    np.testing.assert_array_equal(np.asarray(grads)[~mask], 0.0)
    # and a fully masked batch gives loss 0 and zero gradients
    none = np.zeros_like(mask)
    loss, grads = jax.value_and_grad(lambda lp: fn(lp, old, adv, none)[0])(log_probs)
    self.assertEqual(float(loss), 0.0)
    np.testing.assert_array_equal(grads, 0.0)

  @parameterized.parameters(*objectives.OBJECTIVES)
  def test_no_gradient_through_old_log_probs_or_advantages(self, name):
    log_probs, old, adv, mask = _inputs(17)
    fn = objectives.make(name)
    g_old, g_adv = jax.grad(lambda o, a: fn(log_probs, o, a, mask)[0], argnums=(0, 1))(old, adv)
    np.testing.assert_array_equal(g_old, 0.0)
    np.testing.assert_array_equal(g_adv, 0.0)

  def test_clip_cov_random_choice(self):
    log_probs, old, adv, mask = _inputs(18, shape=(6, 9))
    kw = dict(clip_cov_ratio=0.125, clip_cov_lb=0.02, clip_cov_ub=5.0)
    eligible = ref.clip_cov_eligible(log_probs, old, adv, mask, 0.2, 0.2, 0.02, 5.0)
    k = min(ref.num_chosen(0.125, mask), len(eligible))
    self.assertGreater(len(eligible), k)  # a real choice
    chosen_sets = set()
    for seed in range(4):
      fn = functools.partial(objectives.clip_cov, key=jax.random.key(seed), **kw)
      loss, grads = jax.value_and_grad(lambda lp: fn(lp, old, adv, mask)[0])(log_probs)
      g_ref = jax.grad(lambda lp: objectives.ppo_clip(lp, old, adv, mask)[0])(log_probs)
      chosen = {
        (int(b), int(t))
        for b, t in zip(*np.nonzero(mask & (np.asarray(grads) == 0) & (np.asarray(g_ref) != 0)))
      }
      self.assertLen(chosen, k)
      self.assertTrue(chosen <= set(eligible))
      per_token = ref.clip_cov(log_probs, old, adv, mask, 0.2, 0.2, 0.125, 0.02, 5.0, chosen)
      np.testing.assert_allclose(
        loss, ref_losses.aggregate(per_token, mask, 'token_mean'), rtol=2e-5, atol=1e-6
      )
      chosen_sets.add(frozenset(chosen))
    self.assertGreater(len(chosen_sets), 1)  # the key matters

  def test_hyperparameters_are_traceable(self):
    log_probs, old, adv, mask = _inputs(19)
    sweep = jax.jit(
      jax.vmap(lambda e: objectives.ppo_clip(log_probs, old, adv, mask, eps_low=e)[0])
    )
    got = sweep(jnp.array([0.1, 0.2, 0.3]))
    for i, e in enumerate((0.1, 0.2, 0.3)):
      expected = ref_losses.aggregate(
        ref.ppo_clip(log_probs, old, adv, mask, e, e), mask, 'token_mean'
      )
      np.testing.assert_allclose(got[i], expected, rtol=2e-5, atol=1e-6)


class MakeTest(parameterized.TestCase):
  def test_names_aliases_and_errors(self):
    self.assertEqual(objectives.check_name('vanilla'), 'ppo_clip')
    self.assertEqual(objectives.check_name('geo_mean'), 'gmpo')
    self.assertEqual(objectives.check_name('gspo-token'), 'gspo_token')
    with self.assertRaisesRegex(ValueError, 'Unknown policy objective'):
      objectives.make('ppo2')
    with self.assertRaisesRegex(ValueError, 'unknown hyper-parameters'):
      objectives.make('sapo', eps_low=0.2)
    with self.assertRaisesRegex(ValueError, 'aggregation'):
      objectives.make('gpg', agg_mode='sum')

  def test_default_and_call_time_agg_mode(self):
    log_probs, old, adv, mask = _inputs(20)
    fn = objectives.make('gspo', eps_low=0.2, eps_high=None)
    per_token = ref.gspo(log_probs, old, adv, mask, 0.2, 0.2)
    for mode in ('seq_mean_token_mean', 'token_mean'):
      got = fn(log_probs, old, adv, mask, agg_mode=None if mode.startswith('seq') else mode)[0]
      np.testing.assert_allclose(
        got, ref_losses.aggregate(per_token, mask, mode), rtol=2e-5, atol=1e-6
      )

  def test_from_config(self):
    log_probs, old, adv, mask = _inputs(21)
    cfg = dict(
      objective='gspo', clip_eps=0.2, clip_eps_high=0.0, agg_mode='token_mean', kl_coef=0.1
    )
    got = objectives.from_config(cfg)(log_probs, old, adv, mask)[0]
    per_token = ref.gspo(log_probs, old, adv, mask, 0.2, 0.2)  # clip_eps alone sets both sides
    np.testing.assert_allclose(got, ref_losses.aggregate(per_token, mask, 'token_mean'), rtol=2e-5)
    # defaults: ppo_clip with the objective's own defaults; dual clip and objective_kwargs
    cfg = dict(objective='vanilla', clip_eps=0.2, clip_eps_high=0.28, dual_clip_c=3.0)
    got = objectives.from_config(cfg)(log_probs, old, adv, mask)[0]
    per_token = ref.ppo_clip(log_probs, old, adv, mask, 0.2, 0.28, 3.0)
    np.testing.assert_allclose(got, ref_losses.aggregate(per_token, mask, 'token_mean'), rtol=2e-5)
    cfg = dict(objective='cispo', clip_eps=0.2, objective_kwargs=dict(eps_low=None, eps_high=0.5))
    got = objectives.from_config(cfg)(log_probs, old, adv, mask)[0]
    per_token = ref.cispo(log_probs, old, adv, mask, None, 0.5)
    np.testing.assert_allclose(got, ref_losses.aggregate(per_token, mask, 'token_mean'), rtol=2e-5)
    got = objectives.from_config(None)(log_probs, old, adv, mask)[0]
    per_token = ref.ppo_clip(log_probs, old, adv, mask, 0.2, 0.2)
    np.testing.assert_allclose(got, ref_losses.aggregate(per_token, mask, 'token_mean'), rtol=2e-5)

  def test_from_config_reads_the_flagship_loss_section(self):
    # The arith_rl config's `loss` section (no `objective` key) gives its current PPO loss.
    cfg = arith_rl.get_config('smoke')
    log_probs, old, adv, mask = _inputs(26)
    got = objectives.from_config(cfg.loss)(log_probs, old, adv, mask)[0]
    want = losses.ppo_policy_loss(
      log_probs, old, adv, mask, clip_eps=cfg.loss.clip_eps, agg_mode=cfg.loss.agg_mode
    )[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    cfg.loss.objective = 'gspo'
    cfg.loss.objective_kwargs = ml_collections.ConfigDict(dict(eps_high=0.3))
    cfg.loss.rollout_correction = ml_collections.ConfigDict(dict(preset='seq_tis', target='old'))
    got = objectives.from_config(cfg.loss)(log_probs, old, adv, mask, rollout_log_probs=old)[0]
    per_token = ref.gspo(log_probs, old, adv, mask, cfg.loss.clip_eps, 0.3)
    np.testing.assert_allclose(
      got, ref_losses.aggregate(per_token, mask, cfg.loss.agg_mode), rtol=2e-5, atol=1e-6
    )

  @chex.variants(with_jit=True, without_jit=True)
  def test_with_rollout_correction(self):
    log_probs, old, adv, mask = _inputs(22)
    rollout = (old + np.random.default_rng(23).normal(0, 1.0, old.shape)).astype(np.float32)
    fn = objectives.make('ppo_clip', correction=dict(preset='icepop'))
    loss, metrics = self.variant(fn)(log_probs, old, adv, mask, rollout_log_probs=rollout)
    w, kept = ref.rollout_correction(old, rollout, mask, 'token', 'mask', 0.5, 5.0)
    self.assertLess(kept.sum(), mask.sum())  # IcePop rejected something
    per_token = ref.ppo_clip(log_probs, old, adv, kept, 0.2, 0.2) * w
    np.testing.assert_allclose(
      loss, ref_losses.aggregate(per_token, kept, 'token_mean'), rtol=2e-5, atol=1e-6
    )
    self.assertIn('rollout_frac_rejected', metrics)
    # No gradient reaches the rollout or old log-probs through the weights.
    g_roll, g_old = jax.grad(
      lambda r, o: fn(log_probs, o, adv, mask, rollout_log_probs=r)[0], argnums=(0, 1)
    )(rollout, old)
    np.testing.assert_array_equal(g_roll, 0.0)
    np.testing.assert_array_equal(g_old, 0.0)
    with self.assertRaisesRegex(ValueError, 'rollout_log_probs'):
      fn(log_probs, old, adv, mask)

  def test_icepop_vs_verl_decoupled_mode(self):
    # verl decoupled mode: weights from old vs rollout multiply the vanilla PPO loss. jaxca's
    # 'icepop' preset removes out-of-band tokens from the mask, which is verl's k1 rejection
    # band (bounds on pi_rollout / pi_train: 1/5 .. 1/0.5) with untruncated weights; verl's own
    # IcePop ('0.5_5.0') gives them weight 0 but keeps them in the normaliser.
    log_probs, old, adv, mask = _inputs(31)
    rollout = (old + np.random.default_rng(32).normal(0, 1.0, old.shape)).astype(np.float32)
    fn = objectives.make('ppo_clip', dual_clip_c=3.0, correction=dict(preset='icepop'))
    got = float(fn(log_probs, old, adv, mask, rollout_log_probs=rollout)[0])
    lp, o, a, r = (np.asarray(x, np.float64) for x in (log_probs, old, adv, rollout))
    pg, _ = ref.verl_vanilla_pg(lp, o, a, 0.2, 0.2)
    log_ratio = o - r

    def verl(weights, keep):
      return ref.verl_agg_loss(pg * weights, keep, 'token-mean')[0]

    keep = ref.verl_rollout_rejection_mask(log_ratio, mask, 'token_k1', (0.2, 2.0))
    self.assertLess(keep.sum(), mask.sum())
    tis_off = ref.verl_rollout_is_weights(log_ratio, mask, 'token', 1e30)
    np.testing.assert_allclose(got, verl(tis_off, keep), rtol=2e-5, atol=1e-6)
    verl_icepop = verl(ref.verl_rollout_is_weights(log_ratio, mask, 'token', (0.5, 5.0)), mask)
    np.testing.assert_allclose(
      verl_icepop * mask.sum() / keep.sum(), got, rtol=2e-5, atol=1e-6
    )  # same sum, a normaliser counting the rejected tokens

  # verl's bypass mode (`compute_policy_loss_bypass_mode`): old log-probs = rollout log-probs,
  # weights and rejection against the current log-probs. The k1 band bounds
  # pi_rollout / pi_train to [lo, hi], so jaxca's ratio band is [1 / hi, 1 / lo].
  BYPASS_CASES = {
    # PPO-clip: the rejection mask only; the weights are not multiplied in.
    'ppo_clip': (
      dict(name='ppo_clip', eps_low=0.2, eps_high=0.28, dual_clip_c=3.0, agg_mode='token_mean'),
      dict(level='token', mode='mask', low=1 / 1.2, high=1 / 0.7),
      dict(
        loss_type='ppo_clip',
        rollout_is='token',
        rollout_is_threshold=2.0,
        rollout_rs='token_k1',
        rollout_rs_threshold=(0.7, 1.2),
        clip_low=0.2,
        clip_high=0.28,
      ),
    ),
    # REINFORCE with token TIS weights: jaxca's `reinforce(is_max)` ratio is that weight.
    'reinforce': (
      dict(name='reinforce', is_max=1.5, agg_mode='token_mean'),
      dict(level='token', mode='mask', low=1 / 1.2, high=1 / 0.7),
      dict(
        loss_type='reinforce',
        rollout_is='token',
        rollout_is_threshold=1.5,
        rollout_rs='token_k1',
        rollout_rs_threshold=(0.7, 1.2),
      ),
    ),
    # REINFORCE with sequence TIS weights and k3 rejection: 'gpg' takes the weights.
    'gpg_sequence': (
      dict(name='gpg', agg_mode='seq_mean_token_sum'),
      dict(level='sequence', mode='truncate', high=1.5, kl_threshold=0.05, kl_reduce='mean'),
      dict(
        loss_type='reinforce',
        rollout_is='sequence',
        rollout_is_threshold=1.5,
        rollout_rs='seq_mean_k3',
        rollout_rs_threshold=0.05,
        loss_agg_mode='seq-mean-token-sum',
      ),
    ),
  }

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*BYPASS_CASES)
  def test_bypass_correction_matches_verl(self, case):
    obj_kw, corr_kw, verl_kw = self.BYPASS_CASES[case]
    log_probs, rollout, adv, mask = _inputs(24)
    obj_kw = dict(obj_kw)
    fn = objectives.make(
      obj_kw.pop('name'), correction=corr_kw, correction_target='current', **obj_kw
    )
    (loss, metrics), grad = self.variant(
      jax.value_and_grad(
        lambda lp: fn(lp, rollout, adv, mask, rollout_log_probs=rollout), has_aux=True
      )
    )(log_probs)
    args = [np.asarray(x, np.float64) for x in (log_probs, rollout, adv)]
    want, want_grad = ref.verl_bypass_mode_loss(*args, mask, **verl_kw)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=1e-6)
    # The case is not trivial: some tokens are rejected, most are kept.
    self.assertGreater(float(metrics['rollout_frac_rejected']), 0.0)
    self.assertLess(float(metrics['rollout_frac_rejected']), 0.7)
    self.assertIn('rollout_is_weight_mean', metrics)


if __name__ == '__main__':
  absltest.main()
