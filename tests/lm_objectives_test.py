"""The LM learner's policy term chosen by config (`lm.loss_options`, `objectives.from_config`)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import arith_rl as arith_rl_config
from experiments import arith_rl
from jaxca import config_lib
from jaxca import estimators
from jaxca import lm
from jaxca import objectives
from jaxca import ops
from jaxca.networks import transformer
from jaxca.objectives import aggregation
from jaxca.objectives import kl
from jaxca.objectives import losses
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401
from tests.lm_fixtures import TASK
from tests.lm_fixtures import G
from tests.lm_fixtures import batch as _batch
from tests.lm_fixtures import tiny_policy as _policy
from tests.reference import objectives as ref


def _old_ppo_policy_loss(log_probs, old_log_probs, advantages, mask, clip_eps, agg_mode):
  """The learner's PPO-clip term before objectives were selectable (kept to pin the default)."""
  log_ratio = jnp.where(mask, log_probs - jax.lax.stop_gradient(old_log_probs), 0.0)
  ratio = jnp.exp(log_ratio)
  adv = jax.lax.stop_gradient(jnp.where(mask, advantages, 0.0))
  loss_mat = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
  return aggregation.aggregate(loss_mat, mask, agg_mode)


class _Rollout:
  """One GRPO rollout of a tiny policy, with old log-probs moved off the current ones."""

  @classmethod
  def make(cls, value_head=False):
    policy = _policy(value_head)
    params = policy.init(jax.random.key(0))
    ref_params = policy.init(jax.random.key(3))
    est = estimators.make('gae' if value_head else 'grpo')
    rollout = lm.make_rollout_fn(policy, TASK, est, group_size=G, use_ref=True)
    rb, _ = jax.jit(rollout)(params, ref_params, _batch(), jax.random.key(1))
    rng = np.random.default_rng(0)
    noise = rng.normal(size=rb.mask.shape).astype(np.float32)
    adv = rng.normal(size=rb.mask.shape).astype(np.float32)
    rb = rb._replace(
      old_log_probs=jnp.where(rb.mask, rb.old_log_probs + 0.3 * noise, 0.0),
      advantages=jnp.where(rb.mask, adv, 0.0),
    )
    return policy, params, rb


class DefaultIsUnchangedTest(absltest.TestCase):
  def test_flagship_default_loss_and_grads_equal_the_old_path(self):
    """The arith_rl loss section builds the same PPO loss, bit for bit, as before."""
    cfg = arith_rl_config.get_config().loss
    opts = lm.loss_options(cfg)
    self.assertIsNone(opts.objective)  # plain PPO-clip: losses.ppo_policy_loss
    policy, params, rb = _Rollout.make(value_head=True)
    lp = TASK.prompt_len
    new = lm.make_ppo_loss(
      policy,
      prompt_len=lp,
      clip_eps=opts.clip_eps,
      clip_eps_high=opts.clip_eps_high,
      agg_mode=opts.agg_mode,
      kl_coef=opts.kl_coef,
      ent_coef=opts.ent_coef,
      vf_coef=opts.vf_coef,
      vf_clip=opts.vf_clip,
      objective=opts.objective,
      kl_estimator=opts.kl_estimator,
    )

    def old(params, rb):
      out = policy.apply(params, rb.tokens, rb.valid)
      logits = out.logits.astype(jnp.float32)
      log_probs = transformer.response_log_probs(logits, rb.tokens, lp)
      values = jnp.where(rb.mask, transformer.response_values(out.values, lp), 0.0)
      log_probs = jnp.where(rb.mask, log_probs, 0.0)
      pg = _old_ppo_policy_loss(
        log_probs, rb.old_log_probs, rb.advantages, rb.mask, 0.2, 'token_mean'
      )
      ent = aggregation.aggregate(
        jnp.where(rb.mask, losses.entropy_from_logits(logits[:, lp - 1 : -1]), 0.0), rb.mask
      )
      vl = losses.value_loss(values, rb.returns, rb.mask)
      return pg + 0.5 * vl - 0.01 * ent

    for wrap in (lambda f: f, jax.jit):
      (got, _), got_g = wrap(jax.value_and_grad(new, has_aux=True))(params, rb)
      want, want_g = wrap(jax.value_and_grad(old))(params, rb)
      np.testing.assert_array_equal(got, want)
      jax.tree.map(np.testing.assert_array_equal, got_g, want_g)

  def test_plain_ppo_clip_through_objectives_equals_the_default(self):
    policy, params, rb = _Rollout.make()
    base = lm.make_ppo_loss(policy, prompt_len=TASK.prompt_len, clip_eps_high=0.28)
    via = lm.make_ppo_loss(
      policy,
      prompt_len=TASK.prompt_len,
      objective=objectives.from_config(dict(clip_eps=0.2, clip_eps_high=0.28)),
    )
    (l0, a0), g0 = jax.value_and_grad(base, has_aux=True)(params, rb)
    (l1, a1), g1 = jax.value_and_grad(via, has_aux=True)(params, rb)
    np.testing.assert_array_equal(l0, l1)
    jax.tree.map(np.testing.assert_array_equal, g0, g1)
    for k in ('clip_frac', 'approx_kl', 'ratio_mean', 'pg_loss'):
      np.testing.assert_array_equal(a0[k], a1[k])


class SelectionTest(parameterized.TestCase):
  @parameterized.parameters(*objectives.OBJECTIVES)
  def test_every_objective_runs_through_the_rl_update(self, name):
    policy = _policy()
    tx = optax.adam(1e-3)
    loss_cfg = dict(objective=name, ent_coef=0.01)
    if name == 'cispo':
      loss_cfg.update(rollout_correction=dict(preset='icepop'))
    if name == 'gspo':
      loss_cfg.update(kl_coef=0.1, kl_estimator='k2')
    if name == 'reinforce':
      loss_cfg.update(kl_coef=0.1, kl_in_reward=True, kl_estimator='k1')
    update = jax.jit(
      lm.make_rl_update(
        policy,
        TASK,
        estimators.make('grpo'),
        tx,
        group_size=G,
        num_epochs=2,
        num_minibatches=2,
        loss_cfg=loss_cfg,
      )
    )
    state = lm.make_init(policy, tx, with_ref=True)(jax.random.key(0))
    state, m = update(state, _batch(seed=1), jax.random.key(1))
    self.assertTrue(np.isfinite(m['loss']), name)
    self.assertEqual(float(m['params_finite']), 1.0)
    if name == 'cispo':
      self.assertIn('rollout_is_weight_mean', m)
    if name == 'gspo':
      self.assertIn('kl_ref', m)
    if name == 'reinforce':
      self.assertIn('kl_reward', m)
      self.assertNotIn('kl_ref', m)

  def test_the_choice_reaches_the_loss(self):
    """Away from ratio 1 the objectives differ; each equals its kernel on the same log-probs."""
    policy, params, rb = _Rollout.make()
    lp = TASK.prompt_len
    logits = policy.apply(params, rb.tokens, rb.valid).logits.astype(jnp.float32)
    log_probs = jnp.where(rb.mask, transformer.response_log_probs(logits, rb.tokens, lp), 0.0)
    got = {}
    for name in ('ppo_clip', 'cispo', 'gspo', 'gpg'):
      fn = lm.make_ppo_loss(policy, prompt_len=lp, objective=objectives.make(name))
      got[name], aux = fn(params, rb)
      want, _ = getattr(objectives, name)(log_probs, rb.old_log_probs, rb.advantages, rb.mask)
      np.testing.assert_allclose(aux['pg_loss'], want, rtol=1e-6)
    self.assertLen({round(float(v), 6) for v in got.values()}, 4)

  def test_rollout_correction_uses_the_sampler_log_probs(self):
    policy, params, rb = _Rollout.make()
    # Recorded by the sampler: equal to the teacher-forced recompute up to float error.
    self.assertIsNotNone(rb.rollout_log_probs)
    self.assertEqual(float(jnp.abs(jnp.where(rb.mask, 0.0, rb.rollout_log_probs)).sum()), 0.0)
    cfg = dict(rollout_correction=dict(level='token', mode='truncate', high=1.2))
    fn = lm.make_ppo_loss(policy, prompt_len=TASK.prompt_len, objective=objectives.from_config(cfg))
    plain = lm.make_ppo_loss(policy, prompt_len=TASK.prompt_len)
    shifted = rb._replace(rollout_log_probs=jnp.where(rb.mask, rb.old_log_probs - 0.5, 0.0))
    loss_c, aux = fn(params, shifted)
    np.testing.assert_allclose(aux['rollout_is_weight_mean'], 1.2, rtol=1e-5)  # all truncated
    np.testing.assert_allclose(loss_c, 1.2 * plain(params, rb)[0], rtol=1e-5)
    with self.assertRaisesRegex(ValueError, 'rollout_log_probs'):
      fn(params, rb._replace(rollout_log_probs=None))

  def test_kl_estimator_in_the_loss(self):
    policy, params, rb = _Rollout.make()
    lp = TASK.prompt_len
    logits = policy.apply(params, rb.tokens, rb.valid).logits.astype(jnp.float32)
    log_probs = jnp.where(rb.mask, transformer.response_log_probs(logits, rb.tokens, lp), 0.0)
    for est in ('k1', 'k2', 'k3', 'abs'):
      fn = lm.make_ppo_loss(policy, prompt_len=lp, kl_coef=0.5, kl_estimator=est)
      _, aux = fn(params, rb)
      want = ops.masked_mean(kl.estimate(log_probs, rb.ref_log_probs, rb.mask, est), rb.mask)
      np.testing.assert_allclose(aux['kl_ref'], want, rtol=1e-5, atol=1e-7)

  def test_kl_in_the_reward_moves_the_advantages(self):
    policy = _policy()
    params = policy.init(jax.random.key(0))
    other = policy.init(jax.random.key(3))
    tx = optax.sgd(0.0)
    state = dict(lm.init_from_params(params, tx, with_ref=True), ref_params=other)
    outs = {}
    for in_reward in (False, True):
      cfg = dict(kl_coef=1.0, kl_in_reward=in_reward, kl_estimator='k1')
      phases = lm.make_rl_phases(
        policy, TASK, estimators.make('reinforce'), tx, group_size=G, loss_cfg=cfg
      )
      data = jax.jit(phases.collect)(state, _batch(), jax.random.key(1))
      _, m = jax.jit(phases.update)(state, data, {}, jax.random.key(2))
      outs[in_reward] = (data, m)
    data, m = outs[True]
    self.assertIn('kl_reward', m)
    self.assertNotIn('kl_ref', m)
    self.assertIn('kl_ref', outs[False][1])
    k1 = kl.estimate(data.log_probs, data.ref_log_probs, data.mask, 'k1')
    np.testing.assert_allclose(m['kl_reward'], ops.masked_mean(k1, data.mask), rtol=1e-5)
    # Same batch, same task reward; the penalised rewards give other advantages.
    np.testing.assert_array_equal(m['reward'], outs[False][1]['reward'])
    self.assertNotAlmostEqual(float(m['adv_abs_mean']), float(outs[False][1]['adv_abs_mean']), 4)


class AdaptiveKLTest(absltest.TestCase):
  """`loss.kl_ctrl='adaptive'`: the coefficient is learner state, traced into the loss."""

  H = 8.0  # horizon: with B = 8 responses each update moves the coefficient by up to 20%

  def _run(self, target, iters=4, kl_in_reward=False, estimator='grpo'):
    policy = _policy()
    params, other = policy.init(jax.random.key(0)), policy.init(jax.random.key(3))
    tx = optax.sgd(0.0)  # the policy stays put: the KL to `other` stays far from 0
    cfg = dict(kl_coef=0.1, kl_ctrl='adaptive', kl_target=target, kl_horizon=self.H)
    cfg.update(kl_in_reward=kl_in_reward, kl_estimator='k1' if kl_in_reward else 'k3')
    phases = lm.make_rl_phases(
      policy, TASK, estimators.make(estimator), tx, group_size=G, loss_cfg=cfg
    )
    state = dict(lm.init_from_params(params, tx, with_ref=True, kl_coef=0.1), ref_params=other)
    collect, update = jax.jit(phases.collect), jax.jit(phases.update)
    out = []
    for i in range(iters):
      data = collect(state, _batch(seed=i), jax.random.key(10 + i))
      new_state, m = update(state, data, {}, jax.random.key(20 + i))
      out.append((state, data, m))
      state = new_state
    return out, state, update, cfg

  def test_follows_the_controller_and_moves_the_right_way(self):
    for target, direction in ((1e-4, 1.0), (1e3, -1.0)):
      out, final, _, cfg = self._run(target)
      kls = []
      for state, data, m in out:
        want = ops.masked_mean(
          kl.estimate(data.log_probs, data.ref_log_probs, data.mask, 'k3'), data.mask
        )
        np.testing.assert_allclose(m['kl_measured'], want, rtol=1e-6)
        np.testing.assert_array_equal(m['kl_coef'], state['kl_coef'])  # the one it used
        kls.append(float(m['kl_measured']))
      self.assertGreater(min(kls), 1e-3)
      b = out[0][1].mask.shape[0]
      coefs = ref.adaptive_kl(0.1, kls, b, target, self.H)
      used = [float(m['kl_coef']) for _, _, m in out] + [float(final['kl_coef'])]
      np.testing.assert_allclose(used, [0.1] + coefs, rtol=1e-5)
      self.assertTrue(np.all(direction * np.diff(used) > 0), (target, used))
      # The controller's kernel gives the same sequence.
      ctrl = kl.make_controller('adaptive', coef=0.1, target=target, horizon=self.H)
      s = ctrl.init()
      for k in kls:
        s = ctrl.update(s, k, b)
      np.testing.assert_allclose(s.coef, used[-1], rtol=1e-5)

  def test_the_coefficient_reaches_the_loss_and_the_reward(self):
    out, _, update, _ = self._run(1e-4, iters=1)
    state, data, m = out[0]
    _, m2 = update(dict(state, kl_coef=jnp.float32(0.7)), data, {}, jax.random.key(20))
    self.assertEqual(float(m2['kl_coef']), np.float32(0.7))
    np.testing.assert_allclose(m2['loss'] - m['loss'], (0.7 - 0.1) * m['kl_ref'], rtol=1e-4)
    out, _, update, _ = self._run(1e-4, iters=1, kl_in_reward=True, estimator='reinforce')
    state, data, m = out[0]
    self.assertNotIn('kl_ref', m)
    _, m2 = update(dict(state, kl_coef=jnp.float32(0.7)), data, {}, jax.random.key(20))
    self.assertNotAlmostEqual(float(m2['adv_abs_mean']), float(m['adv_abs_mean']), 4)

  def test_state_without_the_coefficient_is_refused(self):
    policy = _policy()
    tx = optax.sgd(0.0)
    cfg = dict(kl_coef=0.1, kl_ctrl='adaptive', kl_target=0.1, kl_horizon=10.0)
    phases = lm.make_rl_phases(
      policy, TASK, estimators.make('grpo'), tx, group_size=G, loss_cfg=cfg
    )
    state = lm.init_from_params(policy.init(jax.random.key(0)), tx, with_ref=True)
    data = jax.jit(phases.collect)(state, _batch(), jax.random.key(1))
    with self.assertRaisesRegex(ValueError, r'init_from_params\(\.\.\., kl_coef='):
      phases.update(state, data, {}, jax.random.key(2))


class ValidationTest(parameterized.TestCase):
  @parameterized.parameters(
    (dict(objective='ppo2'), 'Unknown policy objective'),
    (dict(objective='sapo', objective_kwargs=dict(tau=1.0)), 'unknown hyper-parameters'),
    (dict(kl_estimator='k4'), 'Unknown KL estimator'),
    (dict(kl_ctrl='pid'), "kl_ctrl='pid'.*'fixed' or 'adaptive'"),
    (dict(kl_ctrl=dict(kind='adaptive', target=0.1, horizon=100)), 'kl_ctrl.*kl_target'),
    (dict(kl_ctrl='adaptive', kl_target=0.1, kl_horizon=100), r'kl_coef, which must be > 0'),
    (dict(kl_ctrl='adaptive', kl_coef=0.1, kl_horizon=100), r'loss\.kl_target > 0; got None'),
    (dict(kl_ctrl='adaptive', kl_coef=0.1, kl_target=0.1, kl_horizon=0), r'kl_horizon > 0'),
    (dict(clip_ratio=0.2), r"Unknown loss option\(s\) \['clip_ratio'\]"),
    (dict(rollout_correction=dict(preset='tis')), 'preset'),
    (dict(agg_mode='mean'), 'aggregation'),
  )
  def test_bad_options_fail_at_build_time(self, cfg, message):
    with self.assertRaisesRegex(ValueError, message):
      lm.make_rl_phases(
        _policy(), TASK, estimators.make('grpo'), optax.sgd(0.1), group_size=G, loss_cfg=cfg
      )

  def test_config_validation_names_the_section(self):
    config = arith_rl_config.get_config('smoke')
    config.loss.objective = 'ppo2'
    with self.assertRaisesRegex(config_lib.ConfigError, r'config\.loss: .*ppo2.*ppo_clip'):
      arith_rl.validate(config)

  def test_key_reaches_clip_cov(self):
    """Clip-cov's draw uses the key the learner passes (different keys, different tokens)."""
    policy, params, rb = _Rollout.make()
    obj = objectives.make('clip_cov', clip_cov_ratio=0.3, clip_cov_lb=-1e9, clip_cov_ub=1e9)
    fn = lm.make_ppo_loss(policy, prompt_len=TASK.prompt_len, objective=obj)
    losses_by_key = {float(fn(params, rb, key=jax.random.key(i))[0]) for i in range(6)}
    self.assertGreater(len(losses_by_key), 1)

  def test_objectives_declare_the_key_the_learner_hands_them(self):
    """`needs_key` (data, not a name test in the learner) is set exactly for clip-cov."""
    for name in objectives.OBJECTIVES:
      self.assertEqual(objectives.make(name).needs_key, name == 'clip_cov', name)
    self.assertTrue(objectives.from_config(dict(objective='clip_cov')).needs_key)


if __name__ == '__main__':
  absltest.main()
