"""credit.token_credit vs NumPy loops; GTPO conservation, alpha1 cancellation, HICRA = GRPO."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from jaxca.credit import token_credit as tc
from tests.reference import token_credit as ref

P, G, T = 4, 4, 7


def _inputs(seed):
  """[P, G, T] entropies/mask and [P, G] outcomes with degenerate groups and rows.

  Group 0 all correct, group 1 all wrong, group 2 a single correct response (a one-member O+
  pool) and a response with no valid token, group 3 random; zero entropies everywhere in one
  column of group 0 and scattered elsewhere; right-padded lengths and one hole.
  """
  rng = np.random.default_rng(seed)
  ent = rng.exponential(1.0, size=(P, G, T)).astype(np.float32)
  ent[rng.random((P, G, T)) < 0.15] = 0.0
  ent[0, :, 2] = 0.0
  lengths = rng.integers(2, T + 1, size=(P, G))
  mask = np.arange(T)[None, None, :] < lengths[..., None]
  mask[2, 3] = False  # a response without valid tokens
  mask[3, 0, 1] = False  # a hole
  correct = rng.random((P, G)) < 0.5
  correct[0], correct[1] = True, False
  correct[2] = [True, False, False, False]
  correct[3, :2] = [True, False]
  return ent, correct, mask


def _flat(ent, correct, mask, perm):
  ids = np.repeat(np.arange(P), G)
  return (
    ent.reshape(P * G, T)[perm],
    correct.ravel()[perm],
    mask.reshape(P * G, T)[perm],
    ids[perm],
  )


def _unperm(x, perm):
  out = np.empty_like(np.asarray(x))
  out[perm] = np.asarray(x)
  return out.reshape((P, G) + out.shape[1:])


PERM = np.random.default_rng(11).permutation(P * G)


class GtpoTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('contiguous', 'ids')
  def test_rewards_match_reference(self, layout):
    ent, correct, mask = _inputs(0)
    e, c, m, ids = _flat(ent, correct, mask, np.arange(P * G))
    want = ref.gtpo_rewards(e, c, m, ids, 1.0, 0.1).reshape(P, G, T)
    if layout == 'contiguous':
      got = self.variant(credit.gtpo_rewards)(ent, correct, mask)
    else:
      fn = self.variant(lambda *a: credit.gtpo_rewards(*a, num_groups=P))
      got = _unperm(fn(*_flat(ent, correct, mask, PERM)), PERM)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    self.assertTrue(np.all(np.isfinite(got)))
    np.testing.assert_array_equal(np.asarray(got)[~mask], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(layout=('contiguous', 'ids'), pooling=tc.GTPO_POOLINGS)
  def test_advantages_match_reference(self, layout, pooling):
    ent, correct, mask = _inputs(1)
    e, c, m, ids = _flat(ent, correct, mask, np.arange(P * G))
    want = ref.gtpo_advantages(e, c, m, ids, 0.9, 0.3, pooling).reshape(P, G, T)
    kw = dict(alpha1=0.9, alpha2=0.3, pooling=pooling)
    if layout == 'contiguous':
      got = self.variant(lambda *a: credit.gtpo_advantages(*a, **kw))(ent, correct, mask)
    else:
      fn = self.variant(lambda *a: credit.gtpo_advantages(*a, num_groups=P, **kw))
      got = _unperm(fn(*_flat(ent, correct, mask, PERM)), PERM)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    self.assertTrue(np.all(np.isfinite(got)))
    np.testing.assert_array_equal(np.asarray(got)[~mask], 0.0)
    # All-correct and all-wrong groups still get non-zero advantages (unlike GRPO).
    self.assertGreater(np.abs(np.asarray(got)[:2]).max(), 0.1)

  def test_conservation_bonus_sums_to_alpha2_per_position(self):
    """sum over O+_t (and O-_t) of |r~ - outcome term| = alpha2 * d_t (h_t): with
    alpha1 + alpha2 = 1 each pool's mean reward is exactly +1 (-1) at every position."""
    ent, correct, mask = _inputs(2)
    a1, a2 = 0.9, 0.1
    r = np.asarray(credit.gtpo_rewards(ent, correct, mask, alpha1=a1, alpha2=a2), np.float64)
    checked = 0
    for p in range(P):
      for t in range(T):
        for sign, members in ((1, mask[p, :, t] & correct[p]), (-1, mask[p, :, t] & ~correct[p])):
          if not members.any():
            continue
          bonus = sign * r[p, members, t] - a1
          np.testing.assert_allclose(bonus.sum(), a2 * members.sum(), rtol=1e-5)
          np.testing.assert_allclose(r[p, members, t].mean(), sign * 1.0, rtol=1e-5)
          checked += 1
    self.assertGreater(checked, 2 * T)
    # Total reward conserved: sum over all valid tokens equals that of unshaped +-1 rewards.
    unshaped = np.where(correct[..., None] & mask, 1.0, -1.0)[mask]
    np.testing.assert_allclose(r[mask].sum(), unshaped.sum(), rtol=1e-5)

  def test_alpha1_cancels_under_separate_pools(self):
    ent, correct, mask = _inputs(3)
    sep = [
      np.asarray(credit.gtpo_advantages(ent, correct, mask, alpha1=a1, pooling='separate'))
      for a1 in (0.0, 1.0, 5.0)
    ]
    np.testing.assert_allclose(sep[1], sep[0], atol=2e-4)
    np.testing.assert_allclose(sep[2], sep[0], atol=2e-4)
    joint = [
      np.asarray(credit.gtpo_advantages(ent, correct, mask, alpha1=a1, pooling='joint'))
      for a1 in (0.0, 1.0)
    ]
    self.assertGreater(np.abs(joint[1] - joint[0]).max(), 0.1)
    # Separate pools lose the outcome sign (each pool averages 0 in mixed groups); the joint
    # pool keeps it (correct responses above wrong ones).
    mixed = correct[3]
    pos, neg = mask[3] & mixed[:, None], mask[3] & ~mixed[:, None]
    np.testing.assert_allclose(sep[1][3][pos].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(sep[1][3][neg].mean(), 0.0, atol=1e-5)
    self.assertGreater(joint[1][3][pos].mean(), 0.3)
    self.assertLess(joint[1][3][neg].mean(), -0.3)

  def test_zero_entropies_give_uniform_shares_and_no_nan(self):
    ent, correct, mask = _inputs(4)
    zeros = np.zeros_like(ent)
    for fn in (credit.gtpo_rewards, credit.gtpo_advantages, credit.grpo_s_advantages):
      out = np.asarray(fn(zeros, correct, mask))
      self.assertTrue(np.all(np.isfinite(out)), fn.__name__)
    r = np.asarray(credit.gtpo_rewards(zeros, correct, mask, alpha1=1.0, alpha2=0.1))
    np.testing.assert_allclose(
      r[mask], np.where(correct[..., None] & mask, 1.1, -1.1)[mask], rtol=1e-6
    )
    # And finite gradients w.r.t. the entropies (they are constants in training, but safe).
    g = jax.grad(lambda e: jnp.sum(credit.gtpo_advantages(e, correct, mask) ** 2))(zeros)
    self.assertTrue(np.all(np.isfinite(g)))

  def test_bad_inputs_name_the_argument(self):
    ent, correct, mask = _inputs(0)
    with self.assertRaisesRegex(TypeError, '`correct`'):
      credit.gtpo_rewards(ent, correct.astype(np.float32), mask)
    with self.assertRaisesRegex(ValueError, '`correct`'):
      credit.gtpo_rewards(ent, correct[:, :2], mask)
    with self.assertRaisesRegex(TypeError, '`mask`'):
      credit.gtpo_rewards(ent, correct, mask.astype(np.float32))
    with self.assertRaisesRegex(ValueError, "'joint'"):
      credit.gtpo_advantages(ent, correct, mask, pooling='both')
    e, c, m, ids = _flat(ent, correct, mask, PERM)
    with self.assertRaisesRegex(TypeError, '`num_groups`'):
      credit.gtpo_rewards(e, c, m, group_ids=ids)
    with self.assertRaisesRegex(ValueError, '`group_ids`'):
      credit.gtpo_rewards(e, c, m, group_ids=ids[:3], num_groups=P)


class GrpoSTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(layout=('contiguous', 'ids'), pooling=tc.GTPO_POOLINGS)
  def test_matches_reference(self, layout, pooling):
    ent, correct, mask = _inputs(5)
    e, c, m, ids = _flat(ent, correct, mask, np.arange(P * G))
    want_r = ref.grpo_s_rewards(e, c, m, ids, 0.8, 0.4).reshape(P, G)
    want = ref.grpo_s_advantages(e, c, m, ids, 0.8, 0.4, pooling).reshape(P, G, T)
    kw = dict(beta1=0.8, beta2=0.4)
    if layout == 'contiguous':
      r = self.variant(lambda *a: credit.grpo_s_rewards(*a, **kw))(ent, correct, mask)
      got = self.variant(lambda *a: credit.grpo_s_advantages(*a, pooling=pooling, **kw))(
        ent, correct, mask
      )
    else:
      flat = _flat(ent, correct, mask, PERM)
      r_fn = self.variant(lambda *a: credit.grpo_s_rewards(*a, num_groups=P, **kw))
      r = _unperm(r_fn(*flat), PERM)
      fn = self.variant(lambda *a: credit.grpo_s_advantages(*a, P, pooling=pooling, **kw))
      got = _unperm(fn(*flat), PERM)
    np.testing.assert_allclose(r, want_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got)[~mask], 0.0)
    np.testing.assert_array_equal(np.asarray(r)[2, 3], 0.0)  # response without valid tokens

  def test_beta1_cancels_under_separate_pools(self):
    ent, correct, mask = _inputs(6)
    a, b = (
      credit.grpo_s_advantages(ent, correct, mask, beta1=b1, pooling='separate') for b1 in (0, 3)
    )
    np.testing.assert_allclose(a, b, atol=2e-4)


def _grpo_token_advantages(correct, mask):
  adv = credit.group_relative(correct.astype(np.float32), 'grpo')
  return np.asarray(jnp.where(mask, adv[..., None], 0.0))


class HicraTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_paper_form_matches_reference(self):
    ent, correct, mask = _inputs(7)
    rng = np.random.default_rng(7)
    adv = rng.normal(size=(P, G, T)).astype(np.float32)
    planning = rng.random((P, G, T)) < 0.3
    got = self.variant(lambda *a: credit.hicra(*a, alpha=0.25))(adv, planning, mask)
    want = ref.hicra(adv.reshape(-1, T), planning.reshape(-1, T), mask.reshape(-1, T), 0.25)
    np.testing.assert_allclose(got, want.reshape(P, G, T), rtol=1e-6, atol=1e-7)

  def test_empty_planning_set_equals_grpo_exactly(self):
    ent, correct, mask = _inputs(8)
    grpo = _grpo_token_advantages(correct, mask)
    none = np.zeros((P, G, T), bool)
    np.testing.assert_array_equal(credit.hicra(grpo, none, mask), grpo)
    np.testing.assert_array_equal(credit.hicra_official(grpo, ent, mask, top_fraction=0.0), grpo)
    # And with a non-empty set the advantages do change (the test can fail).
    self.assertFalse(np.array_equal(credit.hicra(grpo, mask, mask), grpo))
    self.assertFalse(np.array_equal(credit.hicra_official(grpo, ent, mask), grpo))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('contiguous', 'ids')
  def test_official_form_matches_reference(self, layout):
    ent, correct, mask = _inputs(9)
    adv = np.random.default_rng(9).normal(size=(P, G, T)).astype(np.float32)
    ids = np.repeat(np.arange(P), G)
    flat = [x.reshape(-1, T) for x in (adv, ent, mask)]
    want = ref.hicra_official(*flat, ids, 0.2, 0.3).reshape(P, G, T)
    if layout == 'contiguous':
      got = self.variant(credit.hicra_official)(adv, ent, mask)
    else:
      a = adv.reshape(-1, T)[PERM]
      e = ent.reshape(-1, T)[PERM]
      m = mask.reshape(-1, T)[PERM]
      fn = self.variant(lambda *x: credit.hicra_official(*x, num_groups=P))
      got = _unperm(fn(a, e, m, ids[PERM]), PERM)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    changed = np.asarray(got) != np.where(mask, adv, 0.0)
    self.assertTrue(changed.any())
    self.assertTrue(np.all(adv[changed] > 0))  # negative advantages are never touched

  def test_official_form_needs_a_response_longer_than_the_group_mean(self):
    mask = np.arange(6)[None, None, :] < np.array([[2, 4, 6]])[..., None]  # mean length 4
    adv = np.ones((1, 3, 6), np.float32)
    ent = np.ones((1, 3, 6), np.float32)
    got = np.asarray(credit.hicra_official(adv, ent, mask, alpha=0.5, top_fraction=0.5))
    np.testing.assert_array_equal(got[0, :2], np.where(mask[0, :2], 1.0, 0.0))  # not longer
    np.testing.assert_array_equal(got[0, 2], [1.5, 1.5, 1.5, 1, 1, 1])  # top 3 of 6, ties

  @chex.variants(with_jit=True, without_jit=True)
  def test_top_fraction_mask_matches_reference(self):
    rng = np.random.default_rng(10)
    scores = rng.integers(0, 4, size=(6, 25)).astype(np.float32)  # many ties
    mask = rng.random((6, 25)) < 0.8
    mask[0] = True  # float32 0.6 * 25 rounds above 15; exactly 15 must be selected
    mask[1] = False
    for frac in (0.0, 0.3, 0.6, 1.0):
      got = self.variant(tc.top_fraction_mask)(scores, mask, frac)
      np.testing.assert_array_equal(got, ref.top_fraction_mask(scores, mask, frac))
    self.assertEqual(int(np.sum(tc.top_fraction_mask(scores, mask, 0.6)[0])), 15)


def _random_attention(rng, b, h, t):
  """Random causal row-stochastic attention [B, H, T, T] (Dirichlet rows)."""
  att = np.zeros((b, h, t, t), np.float32)
  for i in range(b):
    for k in range(h):
      for q in range(t):
        att[i, k, q, : q + 1] = rng.dirichlet(np.ones(q + 1))
  return att


class AttentionMetricsTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(None, 'some', 'none')
  def test_fai_and_waad_match_reference(self, heads):
    rng = np.random.default_rng(12)
    b, h, t = 3, 4, 9
    att = _random_attention(rng, b, h, t)
    mask = np.ones((b, t), bool)
    mask[0, :2] = False  # left padding
    mask[1, 6:] = False  # right padding
    mask[2] = False  # all masked
    query_mask = mask.copy()
    query_mask[0, 2:4] = False  # prompt queries excluded
    sel = {None: None, 'some': np.array([True, False, True, False]), 'none': np.zeros(h, bool)}[
      heads
    ]
    got = self.variant(lambda a, m, q: credit.fai(a, m, sel, q))(att, mask, query_mask)
    np.testing.assert_allclose(got, ref.fai(att, mask, sel, query_mask), rtol=1e-5, atol=1e-7)
    for w in (2.0, 4.0, 8.0):
      got = self.variant(lambda a, m, w: credit.waad(a, m, sel, w))(att, mask, w)
      np.testing.assert_allclose(got, ref.waad(att, mask, sel, w), rtol=1e-5, atol=1e-6)
    # Unnormalised random tensors (upper triangle too): the metrics ignore s > t and masked keys.
    raw = rng.random((b, h, t, t)).astype(np.float32)
    np.testing.assert_allclose(credit.fai(raw, mask, sel), ref.fai(raw, mask, sel), rtol=1e-5)
    np.testing.assert_allclose(credit.waad(raw, mask, sel), ref.waad(raw, mask, sel), rtol=1e-5)

  def test_per_layer_input_flattens_layers_and_heads(self):
    rng = np.random.default_rng(13)
    att = _random_attention(rng, 2, 6, 5).reshape(2, 2, 3, 5, 5)
    mask = np.ones((2, 5), bool)
    flat = att.reshape(2, 6, 5, 5)
    np.testing.assert_allclose(credit.fai(att, mask), ref.fai(flat, mask), rtol=1e-5)
    np.testing.assert_allclose(credit.waad(att, mask), ref.waad(flat, mask), rtol=1e-5)
    d = tc.mean_attention_distance(att, mask)
    self.assertEqual(d.shape, (6,))

  @chex.variants(with_jit=True, without_jit=True)
  def test_head_distance_and_split(self):
    rng = np.random.default_rng(14)
    b, t = 2, 8
    att = _random_attention(rng, b, 4, t)
    eye = np.broadcast_to(np.eye(t, dtype=np.float32), (b, t, t))
    first = np.zeros((b, t, t), np.float32)
    first[:, :, 0] = 1.0
    att[:, 0], att[:, 2] = eye, first  # head 0 purely local, head 2 purely global
    qm = rng.random((b, t)) < 0.7
    km = np.ones((b, t), bool)
    km[1, :2] = False
    got = self.variant(tc.mean_attention_distance)(att, qm, km)
    np.testing.assert_allclose(got, ref.mean_attention_distance(att, qm, km), rtol=1e-5)
    d = np.asarray(tc.mean_attention_distance(att, qm))
    self.assertEqual(d[0], 0.0)
    split = np.asarray(self.variant(tc.global_heads)(d))
    self.assertEqual(split.sum(), 2)
    self.assertTrue(split[2] and not split[0])
    # Strictly above the median: ties at the median are local.
    ties = tc.global_heads(np.array([0.0, 1.0, 1.0, 2.0], np.float32))
    np.testing.assert_array_equal(ties, [False, False, False, True])

  def test_fai_finds_an_anchor_and_waad_a_lookback(self):
    """A token every later query attends to has the top FAI; a query looking far back spikes."""
    t = 8
    att = np.zeros((1, 1, t, t), np.float32)
    for q in range(t):
      att[0, 0, q, q] = 1.0
    for q in range(4, t):
      att[0, 0, q] = 0.0
      att[0, 0, q, 3] = 1.0  # token 3 is an anchor
    mask = np.ones((1, t), bool)
    f = np.asarray(credit.fai(att, mask))[0]
    self.assertEqual(int(np.argmax(f)), 3)
    np.testing.assert_allclose(f[3], 1.0)
    w = np.asarray(credit.waad(att, mask, window=2.0))[0]
    np.testing.assert_allclose(w, [0, 0, 0, 0, 1, 2, 2, 2])


if __name__ == '__main__':
  absltest.main()
