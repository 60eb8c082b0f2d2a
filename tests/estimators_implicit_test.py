"""jaxca.estimators.implicit (implicit token rewards, arXiv 2404.12358) against NumPy loops."""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import estimators
from jaxca import types
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401

B, T, V = 4, 6, 5


def _case(seed):
  """Token log-probs of sampled tokens under two random softmax policies, and the sequences'
  probabilities computed independently (products of softmax probabilities, float64)."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(2, B, T, V))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  tokens = rng.integers(0, V, (B, T))
  mask = rng.random((B, T)) > 0.25
  mask[0] = False  # an empty row
  mask[1] = True
  p_tok = np.take_along_axis(probs, np.broadcast_to(tokens[None, ..., None], (2, B, T, 1)), -1)[
    ..., 0
  ]
  lp, ref_lp = np.log(p_tok).astype(np.float32)
  seq_prob = [np.prod(np.where(mask, p_tok[k], 1.0), axis=1) for k in range(2)]
  traj = types.Trajectory(
    rewards=jnp.zeros((B, T)),
    mask=jnp.asarray(mask),
    log_probs=jnp.asarray(np.where(mask, lp, 0.0)),
    extras=dict(ref_log_probs=jnp.asarray(ref_lp)),
  )
  return traj, seq_prob


def _loop(lp, ref, mask, beta):
  adv, ret = np.zeros((B, T)), np.zeros((B, T))
  for i in range(B):
    acc = 0.0
    for t in reversed(range(T)):
      if mask[i, t]:
        adv[i, t] = beta * (float(lp[i, t]) - float(ref[i, t]))
        acc += adv[i, t]
        ret[i, t] = acc
  return adv, ret


class ImplicitRewardTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.1, 0.5)
  def test_matches_loop_and_sums_to_the_dpo_reward(self, beta):
    traj, (seq_pi, seq_ref) = _case(0)
    est = estimators.make('implicit_reward')
    self.assertEqual(est.requires, ('rewards', 'mask', 'log_probs', 'ref_log_probs'))
    hp = jax.tree.map(np.asarray, est.hparams)
    hp['terms'][0]['beta'] = np.float32(beta)
    got = self.variant(est)(traj, hp)
    mask = np.asarray(traj.mask)
    want_adv, want_ret = _loop(traj.log_probs, traj.extras['ref_log_probs'], mask, beta)
    np.testing.assert_allclose(got.advantages, want_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.returns, want_ret, rtol=1e-5, atol=1e-6)
    # DPO's sequence reward beta log pi(y|x) / pi_ref(y|x) (arXiv 2305.18290, Eq. 5).
    dpo = beta * (np.log(seq_pi) - np.log(seq_ref))
    np.testing.assert_allclose(np.asarray(got.advantages).sum(1), dpo, rtol=1e-4, atol=1e-5)
    first = np.argmax(mask, 1)
    np.testing.assert_allclose(np.asarray(got.returns)[np.arange(B), first][1:], dpo[1:], rtol=1e-4)
    np.testing.assert_array_equal(got.advantages[0], 0.0)

  def test_other_fields_and_missing_reference(self):
    traj, _ = _case(1)
    other = traj.replace(dpo_log_probs=traj.log_probs * 2.0)
    est = estimators.make('implicit_reward', policy_field='dpo_log_probs', beta=1.0)
    self.assertEqual(est.requires, ('rewards', 'mask', 'dpo_log_probs', 'ref_log_probs'))
    base = estimators.make('implicit_reward', beta=1.0)(traj)
    got = est(other)
    np.testing.assert_allclose(
      got.advantages,
      base.advantages + np.where(traj.mask, traj.log_probs, 0.0),
      rtol=1e-5,
      atol=1e-6,
    )
    with self.assertRaisesRegex(ValueError, r"requires Trajectory field\(s\) \['ref_log_probs'\]"):
      estimators.make('implicit_reward')(dataclasses.replace(traj, extras={}))

  def test_composes_with_an_outcome_estimator(self):
    traj, _ = _case(2)
    traj = traj.replace(group_ids=jnp.arange(B) // 2, num_groups=B // 2)
    got = estimators.make('grpo + 0.5*implicit_reward')(traj)
    want = (
      estimators.make('grpo')(traj).advantages
      + 0.5 * estimators.make('implicit_reward')(traj).advantages
    )
    np.testing.assert_allclose(got.advantages, want, rtol=1e-6, atol=1e-6)


if __name__ == '__main__':
  absltest.main()
