"""jaxca.credit.macro and the `macro_gae` stage (MA-RLHF, arXiv 2410.02743) against NumPy
loops and transcriptions of the official code."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax.numpy as jnp
import numpy as np

from jaxca import estimators
from jaxca import types
from jaxca.credit import macro
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401
from tests.reference import macro as ref

B, T = 5, 11


def _data(seed):
  rng = np.random.default_rng(seed)
  mask = rng.random((B, T)) > 0.3
  mask[0] = False  # an empty row
  mask[1] = True
  rewards = np.where(mask, rng.normal(size=(B, T)), 0.0).astype(np.float32)
  values = rng.normal(size=(B, T)).astype(np.float32)
  ref_lp = -rng.uniform(0.0, 3.0, (B, T)).astype(np.float32)
  tokens = rng.integers(0, 6, (B, T)).astype(np.int32)
  return rewards, values, mask, ref_lp, tokens


class RulesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1, 2, 5)
  def test_ngram(self, n):
    _, _, mask, _, _ = _data(0)
    got = self.variant(macro.ngram_step_ids)(mask, n)
    np.testing.assert_array_equal(got, [ref.ngram_ids(m, n) for m in mask])

  @chex.variants(with_jit=True, without_jit=True)
  def test_separator(self):
    _, _, mask, _, tokens = _data(1)
    got = self.variant(lambda t, m: macro.separator_step_ids(t, m, (0, 3)))(tokens, mask)
    np.testing.assert_array_equal(
      got, [ref.separator_ids(t, m, (0, 3)) for t, m in zip(tokens, mask)]
    )

  @chex.variants(with_jit=True, without_jit=True)
  def test_perplexity(self):
    _, _, mask, lp, _ = _data(2)
    lp[2, :4] = -1.0  # ties: no new macro
    got = self.variant(macro.perplexity_step_ids)(lp, mask)
    np.testing.assert_array_equal(got, [ref.perplexity_ids(x, m) for x, m in zip(lp, mask)])


class MacroGaeTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(value_at=['start', 'mean'], reward_agg=['sum', 'mean'])
  def test_kernel_matches_loop(self, value_at, reward_agg):
    rewards, values, mask, lp, _ = _data(3)
    sid = np.asarray(macro.perplexity_step_ids(lp, mask))
    fn = lambda r, v, s, m: macro.macro_gae(r, v, s, 0.9, 0.8, m, value_at, reward_agg)  # noqa: E731
    adv, ret = self.variant(fn)(rewards, values, sid, mask)
    for i in range(B):
      a, g = ref.macro_gae(rewards[i], values[i], sid[i], 0.9, 0.8, mask[i], value_at, reward_agg)
      np.testing.assert_allclose(adv[i], a, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(ret[i], g, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(adv[0], 0.0)

  def test_one_token_macros_are_token_gae(self):
    rewards, values, mask, _, _ = _data(4)
    traj = types.Trajectory(
      rewards=jnp.asarray(rewards), mask=jnp.asarray(mask), values=jnp.asarray(values)
    )
    got = estimators.make('macro_gae', ngram=1, gamma=0.9, lambda_=0.7)(traj)
    want = estimators.make('gae', gamma=0.9, lambda_=0.7)(traj)
    np.testing.assert_allclose(got.advantages, want.advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.returns, want.returns, rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('ngram', 'steps', 'perplexity')
  def test_stage_matches_loop(self, termination):
    rewards, values, mask, lp, tokens = _data(5)
    sid = {
      'ngram': np.stack([ref.ngram_ids(m, 3) for m in mask]),
      'steps': np.stack([ref.separator_ids(t, m, (2,)) for t, m in zip(tokens, mask)]),
      'perplexity': np.stack([ref.perplexity_ids(x, m) for x, m in zip(lp, mask)]),
    }[termination]
    traj = types.Trajectory(
      rewards=jnp.asarray(rewards),
      mask=jnp.asarray(mask),
      values=jnp.asarray(values),
      step_ids=jnp.asarray(sid.astype(np.int32)),
      extras=dict(ref_log_probs=jnp.asarray(lp)),
    )
    est = estimators.make('macro_gae', termination=termination, ngram=3)
    extra = dict(ngram=(), steps=('step_ids',), perplexity=('ref_log_probs',))[termination]
    self.assertEqual(est.requires, ('rewards', 'mask', 'values') + extra)
    got = self.variant(est)(traj)
    for i in range(B):
      a, g = ref.macro_gae(rewards[i], values[i], sid[i], 1.0, 0.95, mask[i])
      np.testing.assert_allclose(got.advantages[i], a, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(got.returns[i], g, rtol=1e-5, atol=1e-5)

  def test_bad_options_are_one_line(self):
    with self.assertRaisesRegex(ValueError, 'termination'):
      estimators.make('macro_gae', termination='parse')
    with self.assertRaisesRegex(ValueError, r'`ngram` must be a positive int; got 0'):
      estimators.make('macro_gae', ngram=0)


class OfficialTranscriptionTest(parameterized.TestCase):
  """All-valid rows (start = 0). The official code always closes with a one-token macro at
  the last position; jaxca does not (README, conventions), so the last token is left out."""

  @parameterized.parameters((9, 2), (10, 3), (7, 5))
  def test_fixed_ngram(self, length, n):
    official = ref.official_segments(ref.official_fixed_ngram_selection(np.ones(length), n), length)
    got = np.asarray(macro.ngram_step_ids(np.ones(length, bool), n))
    np.testing.assert_array_equal(got[:-1], official[:-1])

  def test_perplexity(self):
    lp = np.log(np.array([0.9, 0.5, 0.6, 0.2, 0.3, 0.35, 0.1, 0.8, 0.7, 0.75], np.float32))
    ppl = list(np.exp(-lp.astype(np.float64)))
    official = ref.official_segments(ref.official_ppl_selection(ppl, np.ones(10)), 10)
    got = np.asarray(macro.perplexity_step_ids(lp, np.ones(10, bool)))
    np.testing.assert_array_equal(got[:-1], official[:-1])

  def test_macro_gae_with_the_official_equal_value_function(self):
    rng = np.random.default_rng(6)
    ids = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4])  # the official split of some rule
    rewards, values = rng.normal(size=9), rng.normal(size=9)
    r = ref.official_modeling_macro_action_equal(rewards, ids)
    v = ref.official_modeling_macro_action_equal(values, ids)
    a, g = ref.official_get_advantages_and_returns(v, r, 0.95, 0.9)
    adv, ret = macro.macro_gae(
      rewards.astype(np.float32),
      values.astype(np.float32),
      ids,
      0.95,
      0.9,
      np.ones(9, bool),
      'mean',
      'mean',
    )
    np.testing.assert_allclose(adv, a[ids], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, g[ids], rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  absltest.main()
