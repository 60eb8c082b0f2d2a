"""jaxca.estimators: each name vs targets computed from the NumPy references."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import ml_collections
import numpy as np

from jaxca import estimators
from jaxca import testing
from tests.reference import credit as ref

P, G, T = 2, 3, 6
B = P * G


def _rollout(seed):
  rng = np.random.default_rng(seed)
  mask = testing.random_mask(rng, (B, T), 'suffix')
  mask[:, 0] = True
  mask[4] = False  # an empty response
  last = mask.sum(-1) - 1
  rewards = np.zeros((B, T), np.float32)
  for b in range(B):
    if last[b] >= 0:
      rewards[b, last[b]] = rng.normal()
  values = rng.normal(size=(B, T)).astype(np.float32)
  return rewards, mask, values


def _ref_whiten(x, mask):
  v = x[mask].astype(np.float64)
  out = (x - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8)
  return np.where(mask, out, 0.0)


class EstimatorsTest(parameterized.TestCase):
  @parameterized.parameters(False, True)
  def test_gae(self, whiten):
    rewards, mask, values = _rollout(0)
    est = estimators.make('gae', gamma=0.9, lambda_=0.7, whiten=whiten)
    self.assertTrue(est.needs_values)
    got = jax.jit(lambda r, m, v: est(r, m, values=v))(rewards, mask, values)
    adv = np.zeros((B, T))
    ret = np.zeros((B, T))
    for b in range(B):
      adv[b], ret[b] = ref.gae(rewards[b], values[b], np.full(T, 0.9), 0.0, 0.7, mask[b])
    if whiten:
      adv = _ref_whiten(adv, mask)
    np.testing.assert_allclose(got.advantages, adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.returns, ret, rtol=1e-5, atol=1e-5)

  @parameterized.product(name=('grpo', 'dr_grpo', 'rloo'), layout=('size', 'ids'))
  def test_group_estimators(self, name, layout):
    rewards, mask, _ = _rollout(1)
    est = estimators.make(name)
    self.assertTrue(est.needs_groups)
    ids = np.repeat(np.arange(P), G)
    if layout == 'size':
      got = est(rewards, mask, group_size=G)
    else:
      perm = np.random.default_rng(2).permutation(B)
      out = est(rewards[perm], mask[perm], group_ids=ids[perm], num_groups=P)
      got = estimators.Targets(*(np.empty_like(np.asarray(x)) for x in out))
      got.advantages[perm] = out.advantages
      got.returns[perm] = out.returns
    scores = np.where(mask, rewards, 0.0).sum(-1)
    a = ref.group_relative(scores, ids, name, valid=mask.any(-1))
    want = np.where(mask, a[:, None], 0.0)
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.returns, want, rtol=1e-5, atol=1e-6)

  def test_min_form_default_and_process_rewards(self):
    rewards, mask, _ = _rollout(3)
    rng = np.random.default_rng(4)
    reward_mask = mask & (rng.random((B, T)) > 0.5)
    rewards = np.where(reward_mask, rng.uniform(-1, 1, (B, T)), 0.0).astype(np.float32)
    est = estimators.make('min_form', temperature=0.2)
    got = est(rewards, mask, reward_mask=reward_mask)
    want = np.zeros((B, T))
    for b in range(B):
      shaped = ref.min_form_rewards(rewards[b], 0.2, reward_mask[b])
      want[b] = ref.discounted_returns(shaped, np.ones(T), 0.0, mask[b])
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.returns, want, rtol=1e-5, atol=1e-6)
    # Default reward_mask = last valid token: one step, weight 1, return = outcome score.
    out_rewards, _, _ = _rollout(3)
    got = est(out_rewards, mask)
    want = np.stack(
      [ref.discounted_returns(out_rewards[b], np.ones(T), 0.0, mask[b]) for b in range(B)]
    )
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    # With groups, an RLOO baseline of the outcome is subtracted (returns unchanged).
    got_g = est(rewards, mask, reward_mask=reward_mask, group_size=G)
    outcome = np.stack(
      [ref.min_form_rewards(rewards[b], 0.2, reward_mask[b]).sum() for b in range(B)]
    )
    ids = np.repeat(np.arange(P), G)
    baseline = outcome - ref.group_relative(outcome, ids, 'rloo', valid=mask.any(-1))
    pr_returns = _pr(rewards, mask, reward_mask)
    want_g = pr_returns - np.where(mask, baseline[:, None], 0.0)
    np.testing.assert_allclose(got_g.advantages, want_g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_g.returns, pr_returns, rtol=1e-5, atol=1e-6)

  def test_reinforce(self):
    rewards, mask, _ = _rollout(5)
    got = estimators.make('reinforce', gamma=0.8)(rewards, mask)
    want = np.stack(
      [ref.discounted_returns(rewards[b], np.full(T, 0.8), 0.0, mask[b]) for b in range(B)]
    )
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)

  def test_from_config_and_unknown_name(self):
    cfg = ml_collections.ConfigDict({'estimator': 'gae', 'gamma': 0.5, 'lambda_': 0.0})
    est = estimators.from_config(cfg)
    rewards, mask, values = _rollout(6)
    got = est(rewards, mask, values=values)
    want = np.stack(
      [ref.gae(rewards[b], values[b], np.full(T, 0.5), 0.0, 0.0, mask[b])[0] for b in range(B)]
    )
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    self.assertContainsSubset({'gae', 'grpo', 'dr_grpo', 'rloo', 'min_form'}, estimators.ESTIMATORS)
    with self.assertRaisesRegex(ValueError, 'dr_grpo.*gae.*grpo.*min_form'):
      estimators.make('ppo')
    with self.assertRaisesRegex(ValueError, 'values'):
      estimators.make('gae')(rewards, mask)
    with self.assertRaisesRegex(ValueError, 'group_size'):
      estimators.make('grpo')(rewards, mask)
    with self.assertRaisesRegex(ValueError, '`group_size`'):
      estimators.make('rloo')(rewards, mask, group_size=4)
    with self.assertRaisesRegex(TypeError, '`mask`'):
      estimators.make('rloo')(rewards, mask.astype(np.int32), group_size=G)


def _pr(rewards, mask, reward_mask):
  return np.stack(
    [
      ref.discounted_returns(
        ref.min_form_rewards(rewards[b], 0.2, reward_mask[b]), np.ones(T), 0.0, mask[b]
      )
      for b in range(B)
    ]
  )


if __name__ == '__main__':
  absltest.main()
