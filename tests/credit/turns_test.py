"""credit.turns (MatchTIR matched rewards, dual-level advantage, MARS, turn GAE) vs NumPy loops."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import numpy as np

from jaxca.credit import turns
from tests.reference import turns as ref

A = 3  # argument slots of a call


def _calls(rng, n, names=3, values=3, ref_side=False):
  """n random calls: (names [n], args [n, A] with -1 = absent) and their official dicts."""
  nm = rng.integers(0, names, size=n).astype(np.int32)
  args = rng.integers(0, values, size=(n, A)).astype(np.int32)
  args = np.where(rng.random((n, A)) < 0.3, -1, args).astype(np.int32)
  key = 'parameters' if ref_side else 'arguments'
  dicts = [
    {'name': f'f{nm[i]}', key: {f'p{k}': int(args[i, k]) for k in range(A) if args[i, k] >= 0}}
    for i in range(n)
  ]
  return nm, args, dicts


def _sub(dicts, valid):
  return [d for d, v in zip(dicts, valid) if v]


def _scatter(values, valid):
  out = np.zeros(len(valid))
  out[np.flatnonzero(valid)] = values
  return out


class SimilarityTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2)
  def test_matches_official(self, seed):
    rng = np.random.default_rng(seed)
    pn, pa, pd = _calls(rng, 5)
    gn, ga, gd = _calls(rng, 4, ref_side=True)
    s = np.asarray(self.variant(turns.call_similarity)(pn, pa, gn, ga))
    want = [[ref.tool_similarity(p, g) for g in gd] for p in pd]
    np.testing.assert_allclose(s, want, atol=1e-6)

  def test_hand_made(self):
    # same name, same (one) parameter and value: 1; value differs: 2/3; name differs: 0;
    # no parameters on either side: (1 + 1) / 2 = 1.
    pn, pa = np.asarray([0, 0, 1, 2]), np.asarray([[4, -1], [5, -1], [4, -1], [-1, -1]])
    gn, ga = np.asarray([0, 2]), np.asarray([[4, -1], [-1, -1]])
    s = np.asarray(turns.call_similarity(pn, pa, gn, ga))
    np.testing.assert_allclose(s, [[1, 0], [2 / 3, 0], [0, 0], [0, 1]], atol=1e-6)

  def test_bad_shapes(self):
    with self.assertRaisesRegex(ValueError, 'pred_args'):
      turns.call_similarity(
        np.zeros(2, int), np.zeros((2, 3), int), np.zeros(2, int), np.zeros((2, 2), int)
      )


class AssignmentTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2, 3)
  def test_greedy_is_official_with_ties(self, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 3, size=(2, 4, 3)) / 2.0  # many ties and zeros
    got = np.asarray(self.variant(turns.greedy_assignment)(s))
    for b in range(2):
      want = [-1 if a is None else a for a in ref.greedy(s[b].tolist())]
      np.testing.assert_array_equal(got[b], want)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((3, 5), (5, 3), (4, 4), (1, 6))
  def test_km_is_scipy(self, p, g):
    rng = np.random.default_rng(p * 10 + g)
    s = rng.random((3, p, g)) * (rng.random((3, p, g)) < 0.7)
    got = np.asarray(self.variant(turns.optimal_assignment)(s))
    for b in range(3):
      want = [-1 if a is None else a for a in ref.km(s[b])]
      np.testing.assert_array_equal(got[b], want)

  def test_greedy_differs_from_km(self):
    s = np.asarray([[0.9, 0.8], [0.8, 0.0]])
    np.testing.assert_array_equal(turns.greedy_assignment(s), [0, -1])
    np.testing.assert_array_equal(turns.optimal_assignment(s), [1, 0])
    np.testing.assert_allclose(
      turns.matched_call_rewards(s, assignment='greedy', unmatched_penalty=-0.5), [0.9, -0.5]
    )
    np.testing.assert_allclose(turns.matched_call_rewards(s, assignment='km'), [0.8, 0.8])

  def test_too_big_for_exact(self):
    with self.assertRaisesRegex(ValueError, 'max\\(P, G\\)'):
      turns.optimal_assignment(np.zeros((8, 2), np.float32))


class RewardsTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(seed=(0, 1, 2), assignment=('greedy', 'km', 'ot'))
  def test_rewards_match_official(self, seed, assignment):
    rng = np.random.default_rng(seed)
    pn, pa, pd = _calls(rng, 5, names=2, values=2)
    gn, ga, gd = _calls(rng, 4, names=2, values=2, ref_side=True)
    pv = rng.random(5) < 0.8
    gv = rng.random(4) < 0.8
    gv[0] = True

    def fn(pn, pa, gn, ga, pv, gv):
      s = turns.call_similarity(pn, pa, gn, ga, pv, gv)
      return turns.matched_call_rewards(s, pv, gv, assignment=assignment, unmatched_penalty=-0.5)

    got = np.asarray(self.variant(fn)(pn, pa, gn, ga, pv, gv))
    preds, gts = _sub(pd, pv), _sub(gd, gv)
    if assignment == 'ot':
      want = ref.ot_rewards(preds, gts)
    else:
      want = ref.hard_rewards(preds, gts, -0.5, ref.greedy if assignment == 'greedy' else ref.km)
    np.testing.assert_allclose(got, _scatter(want, pv), atol=1e-4)

  @parameterized.parameters('greedy', 'km', 'ot')
  def test_degenerate(self, assignment):
    s = np.zeros((3, 2), np.float32)
    none = np.zeros(2, bool)
    # no reference call: hard rules give the penalty, OT gives 0
    r = turns.matched_call_rewards(s, None, none, assignment=assignment, unmatched_penalty=-0.5)
    np.testing.assert_allclose(r, [0.0] * 3 if assignment == 'ot' else [-0.5] * 3)
    # no predicted call: all 0
    r = turns.matched_call_rewards(s, np.zeros(3, bool), None, assignment=assignment)
    np.testing.assert_allclose(r, 0.0)
    self.assertFalse(np.any(np.isnan(turns.sinkhorn_plan(s, np.zeros(3, bool), none))))

  def test_unknown_assignment(self):
    with self.assertRaisesRegex(ValueError, 'assignment'):
      turns.matched_call_rewards(np.zeros((2, 2)), assignment='hungarian')

  @chex.variants(with_jit=True, without_jit=True)
  def test_turn_means(self):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 6)).astype(np.float32)
    t = rng.integers(-1, 4, size=(3, 6)).astype(np.int32)
    got = np.asarray(self.variant(turns.turn_rewards_from_calls, static_argnums=2)(r, t, 4))
    for b in range(3):
      keep = t[b] >= 0
      np.testing.assert_allclose(got[b], ref.turn_means(r[b][keep], t[b][keep], 4), atol=1e-6)


def _rows(rng, b, u):
  lengths = rng.integers(1, u + 1, size=b)
  lengths[1] = 0
  valid = np.arange(u)[None, :] < lengths[:, None]
  r = np.where(valid, rng.integers(0, 3, size=(b, u)) / 2.0, 0.0).astype(np.float32)
  return lengths, valid, r


class AdvantageTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2)
  def test_dual_level(self, seed):
    rng = np.random.default_rng(seed)
    b, u, k = 9, 4, 4
    lengths, valid, r = _rows(rng, b, u)
    gid = rng.integers(0, k, size=b).astype(np.int32)  # some singleton groups
    scores = rng.normal(size=b).astype(np.float32)
    fn = lambda s, r, v, g: turns.dual_level_advantages(s, r, v, g, k, gamma=0.9)  # noqa: E731
    got = np.asarray(self.variant(fn)(scores, r, valid, gid))
    want = ref.dual_level(scores.tolist(), [r[i, : lengths[i]].tolist() for i in range(b)], gid)
    for i in range(b):
      np.testing.assert_allclose(got[i, : lengths[i]], want[i], rtol=1e-4, atol=1e-4)
      np.testing.assert_array_equal(got[i, lengths[i] :], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    reward_norm=('none', 'mean', 'mean_std'), adv_norm=('none', 'mean', 'mean_std')
  )
  def test_mars(self, reward_norm, adv_norm):
    rng = np.random.default_rng(len(reward_norm) * 7 + len(adv_norm))
    b, u = 8, 4
    lengths, valid, r = _rows(rng, b, u)
    agents = rng.integers(0, 2, size=b).astype(np.int32)

    def fn(r, v, a):
      return turns.mars_advantages(r, v, a, 2, 0.9, reward_norm=reward_norm, adv_norm=adv_norm)

    got = np.asarray(self.variant(fn)(r, valid, agents))
    want = ref.mars(
      [r[i, : lengths[i]].tolist() for i in range(b)], agents.tolist(), 0.9, reward_norm, adv_norm
    )
    for i in range(b):
      np.testing.assert_allclose(got[i, : lengths[i]], want[i], rtol=1e-4, atol=1e-5)
      np.testing.assert_array_equal(got[i, lengths[i] :], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((1.0, 1.0), (0.9, 0.5), (0.7, 0.0))
  def test_turn_gae(self, gamma, lam):
    rng = np.random.default_rng(int(gamma * 10 + lam * 100))
    b, u = 6, 5
    lengths, valid, r = _rows(rng, b, u)
    v = rng.normal(size=(b, u)).astype(np.float32)
    adv, ret = self.variant(turns.turn_gae)(r, v, valid, gamma, lam)
    for i in range(b):
      wa, wr = ref.turn_gae(r[i, : lengths[i]].tolist(), v[i, : lengths[i]].tolist(), gamma, lam)
      np.testing.assert_allclose(np.asarray(adv)[i, : lengths[i]], wa, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(np.asarray(ret)[i, : lengths[i]], wr, rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(np.asarray(adv)[i, lengths[i] :], 0.0)


class TwoTurnBiasTest(absltest.TestCase):
  """The two-turn toy of `tests/credit/gigpo_test.TurnIndexBiasTest` (true A = Q - V known).

  Turn 1 from s0 (3 actions): a=0 -> A, a=1 -> B, a=2 ends with 0. Turn 2 in A: both
  actions give 1; in B: action 0 gives 0, action 1 gives 1. The batch is the exact
  population; E[A | turn, state, action] averages rows with the same (state, action).
  Turn-level GAE with the true values is unbiased for every lambda; MatchTIR's turn level
  (grouped by turn index, as MT-GRPO) and MARS's agent-level baseline are biased.
  """

  rewards = np.asarray([[0, 1], [0, 1], [0, 0], [0, 1], [0, 0], [0, 0]], np.float32)
  valid = np.asarray([[1, 1]] * 4 + [[1, 0]] * 2, bool)
  values = np.asarray([[0.5, 1.0]] * 2 + [[0.5, 0.5]] * 2 + [[0.5, 0.0]] * 2, np.float32)
  true = np.asarray([[0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5], [-0.5, 0], [-0.5, 0]])

  def expected(self, adv):
    out = np.asarray(adv, np.float64).copy()
    for rows in ((0, 1), (2, 3), (4, 5)):
      out[list(rows), 0] = out[list(rows), 0].mean()
    return np.where(self.valid, out, 0.0)

  def test_turn_gae_unbiased(self):
    for lam in (0.0, 0.5, 1.0):
      adv, _ = turns.turn_gae(self.rewards, self.values, self.valid, 1.0, lam)
      np.testing.assert_allclose(self.expected(adv), self.true, atol=1e-6)

  def test_turn_index_and_agent_baselines_biased(self):
    zero = np.zeros(6, np.float32)
    dual = turns.dual_level_advantages(zero, self.rewards, self.valid, np.zeros(6, int), 1, 1.0)
    bias = self.expected(2.0 * np.asarray(dual)) - self.true  # the turn-level half, x2
    # turn 2 in A: true 0, but the turn-index group (A and B pooled) baseline is 0.75 < 1.
    self.assertGreater(bias[0, 1], 0.4)
    self.assertLess(bias[2, 1], -0.2)
    mars = turns.mars_advantages(self.rewards, self.valid, np.zeros(6, int), 1, 1.0)
    self.assertGreater(float(np.abs(self.expected(mars) - self.true).max()), 0.2)


if __name__ == '__main__':
  absltest.main()
