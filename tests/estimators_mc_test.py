"""jaxca.estimators.mc (VinePPO / SPO-chain estimator stages, providers, MC scoring) and the
learner hooks they use (two-phase iterations with host fields, loss_mask, separate critic)."""

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
from jaxca.credit import mc
from jaxca.lm import providers as providers_lib
from jaxca.networks import critic as critic_lib
from jaxca.networks import transformer
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401
from tests.reference import mc as ref

T, S = 9, 9


def _traj(rng, b=5, mask_kind='random'):
  probs = np.where(rng.random((b, T)) < 0.5, rng.uniform(0.05, 0.89, (b, T)), 0.95)
  mask = np.ones((b, T), bool)
  if mask_kind == 'random':
    mask = rng.random((b, T)) > 0.25
  mask[0] = False  # an empty row
  log_probs = np.where(mask, np.log(probs), 0.0).astype(np.float32)
  outcome = rng.integers(0, 2, b).astype(np.float32)
  last = np.where(mask.any(1), T - 1 - np.argmax(mask[:, ::-1], axis=1), -1)
  rewards = np.zeros((b, T), np.float32)
  for i in range(b):
    if last[i] >= 0:
      rewards[i, last[i]] = outcome[i]
  ids = np.where(mask, np.cumsum(rng.random((b, T)) < 0.4, axis=1), -1).astype(np.int32)
  ids = np.where(mask, np.minimum(ids, S - 1), -1)
  values = rng.uniform(0, 1, (b, S)).astype(np.float32)
  traj = types.Trajectory(
    rewards=jnp.asarray(rewards),
    mask=jnp.asarray(mask),
    log_probs=jnp.asarray(log_probs),
    step_ids=jnp.asarray(ids),
    mc_values=jnp.asarray(values),
  )
  return traj, outcome


class StagesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('random', 'full')
  def test_vineppo_stage_matches_reference(self, mask_kind):
    traj, outcome = _traj(np.random.default_rng(1), mask_kind=mask_kind)
    est = estimators.make('vineppo')
    self.assertEqual(est.requires, ('rewards', 'mask', 'step_ids', 'mc_values'))
    got = self.variant(est)(traj)
    want = np.stack(
      [
        ref.vineppo_advantages(traj.step_ids[i], traj.mc_values[i], outcome[i], traj.mask[i])
        for i in range(outcome.shape[0])
      ]
    )
    np.testing.assert_allclose(got.advantages, want, atol=1e-6)
    np.testing.assert_allclose(got.returns, np.where(traj.mask, outcome[:, None], 0.0))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((0.9, 1), (0.5, 2), (0.9, 5))
  def test_spo_chain_stage_matches_reference_with_traced_hparams(self, threshold, interval):
    traj, outcome = _traj(np.random.default_rng(2))
    est = estimators.make('spo_chain')
    hp = jax.tree.map(np.asarray, est.hparams)
    hp['terms'][0]['prob_threshold'] = np.float32(threshold)
    hp['terms'][0]['cut_interval'] = np.float32(interval)
    got = self.variant(est)(traj, hp)
    want = np.stack(
      [
        ref.spo_chain_advantages(
          traj.log_probs[i], traj.mc_values[i], outcome[i], traj.mask[i], threshold, interval
        )
        for i in range(outcome.shape[0])
      ]
    )
    np.testing.assert_allclose(got.advantages, want, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.9, 0.3)
  def test_prob_whiten_matches_reference(self, threshold):
    traj, _ = _traj(np.random.default_rng(3), b=7)
    est = estimators.make('spo_chain | prob_whiten', prob_threshold=threshold)
    raw = estimators.make('spo_chain', prob_threshold=threshold)(traj).advantages
    got = self.variant(est)(traj).advantages
    want = ref.prob_whiten(raw, traj.log_probs, traj.mask, threshold)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Tokens with p_old >= threshold stay at 0.
    high = np.exp(np.asarray(traj.log_probs)) >= threshold
    np.testing.assert_array_equal(np.asarray(got)[high], 0.0)

  def test_prob_whiten_with_no_low_probability_token_is_zero(self):
    traj, _ = _traj(np.random.default_rng(4))
    traj = traj.replace(log_probs=jnp.zeros_like(traj.log_probs))  # p = 1 everywhere
    got = estimators.make('vineppo | prob_whiten')(traj).advantages
    np.testing.assert_array_equal(got, 0.0)

  def test_hand_example_vineppo(self):
    """Two steps, V(s0)=0.5, V(s1)=1, R=1: step 0 gets +0.5, step 1 gets 0."""
    rewards = jnp.array([[0.0, 0.0, 0.0, 1.0]])
    mask = jnp.array([[True, True, True, True]])
    traj = types.Trajectory(
      rewards=rewards,
      mask=mask,
      step_ids=jnp.array([[0, 0, 1, 1]]),
      mc_values=jnp.array([[0.5, 1.0, 0.0, 0.0]]),
    )
    got = estimators.make('vineppo')(traj).advantages
    np.testing.assert_allclose(got, [[0.5, 0.5, 0.0, 0.0]])


TASK = tasks.make('arith', num_steps=2, modulus=5, ops='invertible')
G = 2


def _policy(value_head=False, max_len=None):
  cfg = ml_collections.ConfigDict(
    dict(
      width=16,
      depth=1,
      num_heads=2,
      max_len=max_len or TASK.prompt_len + 2 * TASK.response_len,
      dtype='float32',
      value_head=value_head,
    )
  )
  return transformer.make_policy(cfg, vocab_size=TASK.vocab.size), cfg


def _batch(n=3, seed=0):
  return {k: jnp.asarray(v) for k, v in TASK.generate(seed, n).items()}


class LearnerHooksTest(absltest.TestCase):
  def test_two_phase_update_with_host_mc_values_and_loss_mask(self):
    policy, _ = _policy()
    params = policy.init(jax.random.key(0))
    tx = optax.adam(1e-3)
    est = estimators.make('spo_chain | prob_whiten')
    providers = {'loss_mask': providers_lib.loss_mask_provider(0.9)}
    with self.assertRaisesRegex(ValueError, 'mc_values'):
      lm.make_rl_phases(policy, TASK, est, tx, group_size=G, providers=providers)
    phases = lm.make_rl_phases(
      policy, TASK, est, tx, group_size=G, providers=providers, host_fields=('mc_values',)
    )
    state = lm.init_from_params(params, tx)
    data = jax.jit(phases.collect)(state, _batch(), jax.random.key(1))
    n = TASK.response_len
    values = np.full((data.mask.shape[0], n), 0.5, np.float32)
    update = jax.jit(phases.update)
    new_state, m = update(state, data, dict(mc_values=values), jax.random.key(2))
    self.assertTrue(np.isfinite(m['loss']))
    self.assertIn('loss_token_frac', m)
    # The loss mask reaches the Rollout: same as the single-function rollout with fields.
    rollout = lm.make_rollout_fn(
      policy, TASK, est, group_size=G, providers=providers, host_fields=('mc_values',)
    )
    rb, _ = rollout(params, None, _batch(), jax.random.key(1), fields=dict(mc_values=values))
    want = np.asarray(data.mask) & (np.exp(np.asarray(data.log_probs)) < 0.9)
    np.testing.assert_array_equal(rb.mask, want)
    with self.assertRaisesRegex(ValueError, 'host fields'):
      phases.update(state, data, {}, jax.random.key(2))
    old, new = state['params'], new_state['params']
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), old, new)
    self.assertTrue(any(jax.tree.leaves(changed)))

  def test_separate_critic_feeds_gae_and_trains_alone(self):
    policy, cfg = _policy()
    critic = critic_lib.make_critic(cfg, vocab_size=TASK.vocab.size)
    params = policy.init(jax.random.key(0))
    cparams = critic_lib.critic_params_from_policy(critic, params, jax.random.key(1))
    tx, ctx = optax.adam(1e-3), optax.adam(1e-2)
    est = estimators.make('gae | whiten')
    with self.assertRaisesRegex(ValueError, 'value head'):
      lm.make_rl_update(policy, TASK, est, tx, group_size=G)
    update = jax.jit(
      lm.make_rl_update(
        policy,
        TASK,
        est,
        tx,
        group_size=G,
        loss_cfg=dict(vf_coef=0.5, vf_clip=0.5),
        critic=critic,
        critic_tx=ctx,
      )
    )
    state = lm.init_from_params(params, tx, critic_params=cparams, critic_tx=ctx)
    s1, m = update(state, _batch(), jax.random.key(2))
    self.assertTrue(np.isfinite(m['critic_value_loss']) and np.isfinite(m['loss']))
    self.assertNotIn('value_loss', m)  # the policy loss has no value term
    for tree in ('params', 'critic_params'):
      changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state[tree], s1[tree])
      self.assertTrue(any(jax.tree.leaves(changed)), tree)
    # The rollout's values are the critic's values at the response positions.
    phases = lm.make_rl_phases(policy, TASK, est, tx, group_size=G, critic=critic, critic_tx=ctx)
    data = phases.collect(state, _batch(), jax.random.key(3))
    want = transformer.response_values(
      critic.apply(cparams, data.tokens, data.valid), TASK.prompt_len
    )
    np.testing.assert_allclose(data.values, want, atol=1e-6)


class MCScoringTest(absltest.TestCase):
  def test_deterministic_policy_gives_exact_values_per_row_answer(self):
    """A policy that always emits EOS: the completed response is the state itself, so
    V(s_i) = outcome(state i's response + EOS) against that row's own answer."""
    policy, _ = _policy()
    params = policy.init(jax.random.key(0))
    eos = TASK.vocab.eos_id
    bias = params['logits']['bias'].at[eos].set(100.0)
    params = {**params, 'logits': {**params['logits'], 'bias': bias}}
    batch = {k: np.asarray(v) for k, v in TASK.generate(5, 3).items()}
    # Rows: the correct targets of problems 0, 1 and 2 (row 2 truncated after its first step).
    responses = np.array(batch['targets'])
    mask = responses != TASK.vocab.pad_id
    mask[2, 2:] = False
    responses = np.where(mask, responses, TASK.vocab.pad_id)
    steps = TASK.parse_steps(jnp.asarray(responses), jnp.asarray(mask))
    num_steps = steps.step_ids.shape[-1]
    pmask = lm.prompt_mask(TASK, jnp.asarray(batch['prompts']))
    tokens, smask, exists = mc.step_prefixes(
      batch['prompts'], pmask, responses, mask, steps.step_ids, num_steps
    )

    def complete(tok, m, rows):
      return jax.jit(
        lambda p, k, t, mm, r: providers_lib.mc_complete_and_score(
          policy, TASK, p, k, t, mm, r, num_samples=2, max_new_tokens=TASK.response_len
        )
      )(params, jax.random.key(0), tok, m, rows)

    res = prefixes.mc_step_values(complete, tokens, smask, exists, batch, num_samples=2)
    # The expectation, from the task's verifier on each state's response + EOS.
    want = np.zeros(res.values.shape, np.float32)
    for b in range(3):
      for i in range(num_steps):
        if not exists[b, i]:
          continue
        keep = np.asarray(smask[b, i, TASK.prompt_len :])
        resp = [int(x) for x, v in zip(responses[b], keep) if v]
        resp = (resp + [eos])[: TASK.response_len]
        r = np.full((1, TASK.response_len), TASK.vocab.pad_id, np.int32)
        r[0, : len(resp)] = resp
        rm = r != TASK.vocab.pad_id
        ans = {'answers': batch['answers'][b : b + 1]}
        ok = eos in resp
        want[b, i] = float(TASK.outcome(jnp.asarray(r), jnp.asarray(rm), ans)[0]) if ok else 0.0
    np.testing.assert_array_equal(res.values, want)
    self.assertEqual(res.bucket, prefixes.bucket_size(res.num_unique))
    self.assertEqual(res.samples['generated'], res.num_unique * 2)  # one EOS per completion

  def test_rows_carry_each_states_own_batch_data(self):
    """With duplicated states across rows, every state reads its own row's data."""
    rng = np.random.default_rng(0)
    b, s, length = 4, 3, 5
    tokens = rng.integers(0, 3, (b, s, length))
    tokens[1] = tokens[0]  # rows 0 and 1 share their states (one completion set)
    mask = np.ones((b, s, length), bool)
    exists = rng.random((b, s)) > 0.2
    exists[0] = exists[1] = True
    batch = {'answers': np.array([7, 7, 3, 5])}

    def complete(tok, m, rows):
      del tok, m
      n = len(rows['answers']) * 2
      return np.repeat(rows['answers'], 2).astype(np.float32), np.ones(n, bool), np.ones(n)

    res = prefixes.mc_step_values(complete, tokens, mask, exists, batch, num_samples=2)
    want = np.where(exists, batch['answers'][:, None], 0.0)
    np.testing.assert_array_equal(res.values, want)
    self.assertEqual(res.samples['generated'], 2 * res.num_unique)
    self.assertEqual(res.num_unique, int(exists[1:].sum()))


if __name__ == '__main__':
  absltest.main()
