"""credit.mc (VinePPO / SPO-chain) vs NumPy loops; hand examples; transparency; step prefixes."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca.credit import mc
from tests.reference import mc as ref

T, S = 9, 5


def _rows(fn, *arrays):
  """Applies a one-row reference to every row of [..., X] arrays (all share the batch shape)."""
  batch = arrays[0].shape[:-1]
  flat = [a.reshape((-1,) + a.shape[len(batch) :]) for a in arrays]
  out = [fn(*(a[i] for a in flat)) for i in range(flat[0].shape[0])]
  return np.stack(out).reshape(batch + out[0].shape)


def _random_steps(rng, batch, mask_kind='suffix'):
  """Step ids of 1..3-token steps over a right-padded (or gappy) mask, S >= steps."""
  n = int(np.prod(batch))
  ids = np.full((n, T), -1, np.int32)
  mask = np.zeros((n, T), bool)
  for b in range(n):
    length = rng.integers(0, T + 1)
    mask[b, :length] = True
    if mask_kind == 'gaps':
      mask[b] &= rng.random(T) > 0.25
    step, left = 0, rng.integers(1, 4)
    for t in np.flatnonzero(mask[b]):
      if left == 0:
        step, left = step + 1, rng.integers(1, 4)
      ids[b, t] = min(step, S - 1)
      left -= 1
  return ids.reshape(batch + (T,)), mask.reshape(batch + (T,))


def _spo_inputs(rng, batch, mask_kind='random'):
  # Probabilities around the 0.9 threshold, many of each kind.
  probs = np.where(rng.random(batch + (T,)) < 0.5, rng.uniform(0.05, 0.89, batch + (T,)), 0.95)
  log_probs = np.log(probs).astype(np.float32)
  mask = np.ones(batch + (T,), bool)
  if mask_kind == 'random':
    mask = rng.random(batch + (T,)) > 0.25
  values = rng.uniform(0, 1, batch + (T,)).astype(np.float32)
  outcome = rng.integers(0, 2, batch).astype(np.float32)
  return log_probs, values, outcome, mask


class MCValuesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1, 3)
  def test_matches_reference(self, k):
    rng = np.random.default_rng(k)
    rewards = rng.integers(0, 2, 4 * k).astype(np.float32)
    finished = rng.random(4 * k) > 0.3
    got = self.variant(lambda r, f: mc.mc_values(r, f, k, unfinished_reward=-0.5))(
      rewards, finished
    )
    np.testing.assert_allclose(got, ref.mc_values(rewards, finished, k, -0.5), rtol=1e-6)
    got0 = mc.mc_values(rewards, finished, k)
    np.testing.assert_allclose(got0, ref.mc_values(rewards, finished, k, 0.0), rtol=1e-6)

  def test_unfinished_score_zero_by_default(self):
    got = mc.mc_values(jnp.ones(4), jnp.array([True, False, False, False]), 2)
    np.testing.assert_allclose(got, [0.5, 0.0])

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'num_samples'):
      mc.mc_values(jnp.ones(6), jnp.ones(6, bool), 4)
    with self.assertRaisesRegex(ValueError, 'finished'):
      mc.mc_values(jnp.ones(6), jnp.ones(6), 2)


class VinePPOTest(parameterized.TestCase):
  def test_hand_example(self):
    # Three 2-token steps, V(s_0..s_2) = .5, .25, 1 (and an ignored 4th entry), R = 1, then a
    # masked pad: A_0 = .25 - .5, A_1 = 1 - .25, A_2 = R - 1 = 0.
    step_ids = jnp.array([0, 0, 1, 1, 2, 2, -1])
    mask = jnp.array([True] * 6 + [False])
    values = jnp.array([0.5, 0.25, 1.0, 7.0])
    got = mc.vineppo_advantages(step_ids, values, 1.0, mask)
    np.testing.assert_allclose(got, [-0.25, -0.25, 0.75, 0.75, 0, 0, 0])
    # R = 0: the last step is blamed, -1.
    got = mc.vineppo_advantages(step_ids, values, 0.0, mask)
    np.testing.assert_allclose(got, [-0.25, -0.25, 0.75, 0.75, -1, -1, 0])
    # A single step: R - V(s_0) everywhere.
    got = mc.vineppo_advantages(jnp.zeros(3, jnp.int32), values, 1.0)
    np.testing.assert_allclose(got, [0.5, 0.5, 0.5])

  def test_advantages_telescope_to_outcome_minus_prompt_value(self):
    rng = np.random.default_rng(0)
    step_ids, mask = _random_steps(rng, (16,))
    values = rng.uniform(0, 1, (16, S)).astype(np.float32)
    outcome = rng.integers(0, 2, 16).astype(np.float32)
    adv = np.asarray(mc.vineppo_advantages(step_ids, values, outcome, mask))
    for b in range(16):
      ids = step_ids[b][mask[b]]
      if ids.size:
        per_step = [adv[b][mask[b]][ids == i][0] for i in range(ids.max() + 1)]
        np.testing.assert_allclose(sum(per_step), outcome[b] - values[b, 0], atol=1e-6)
      else:
        self.assertTrue((adv[b] == 0).all())

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ('single', (), 'suffix'),
    ('batch', (6,), 'suffix'),
    ('two_axes_gaps', (2, 3), 'gaps'),
  )
  def test_matches_reference(self, batch, mask_kind):
    rng = np.random.default_rng(1)
    step_ids, mask = _random_steps(rng, batch, mask_kind)
    values = rng.uniform(0, 1, batch + (S,)).astype(np.float32)
    outcome = rng.integers(0, 2, batch).astype(np.float32)
    got = self.variant(mc.vineppo_advantages)(step_ids, values, outcome, mask)
    want = _rows(
      lambda i, v, r, m: ref.vineppo_advantages(i, v, r[0], m),
      step_ids,
      values,
      outcome[..., None],
      mask,
    )
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

  def test_vmap_equals_batched(self):
    rng = np.random.default_rng(2)
    step_ids, mask = _random_steps(rng, (5,))
    values = rng.uniform(0, 1, (5, S)).astype(np.float32)
    outcome = rng.integers(0, 2, 5).astype(np.float32)
    a = jax.vmap(mc.vineppo_advantages)(step_ids, values, outcome, mask)
    np.testing.assert_allclose(a, mc.vineppo_advantages(step_ids, values, outcome, mask))

  def test_masked_tokens_are_transparent(self):
    step_ids = np.array([0, 0, 1, 2, 2], np.int32)
    values = np.array([0.2, 0.6, 0.1, 0, 0], np.float32)
    base = np.asarray(mc.vineppo_advantages(step_ids, values, 1.0))
    padded_ids = np.array([5, 0, 0, 3, 1, 2, 2, 4], np.int32)  # junk ids at masked tokens
    mask = np.array([False, True, True, False, True, True, True, False])
    got = np.asarray(mc.vineppo_advantages(padded_ids, values, 1.0, mask))
    np.testing.assert_allclose(got[mask], base)
    np.testing.assert_array_equal(got[~mask], 0.0)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(TypeError, 'step_ids'):
      mc.vineppo_advantages(jnp.zeros((2, T)), jnp.zeros((2, S)), jnp.zeros(2))
    with self.assertRaisesRegex(ValueError, 'batch shape'):
      mc.vineppo_advantages(jnp.zeros((2, T), jnp.int32), jnp.zeros((3, S)), jnp.zeros(2))
    with self.assertRaisesRegex(ValueError, 'outcome'):
      mc.vineppo_advantages(jnp.zeros((2, T), jnp.int32), jnp.zeros((2, S)), jnp.zeros(3))


class SPOTest(parameterized.TestCase):
  def test_hand_example_with_first_segment_zero_and_prob_mask(self):
    # p = [.95, .5, .95, .3, .95, .95]: cutpoints (official j - 1) = {0, 2}, i.e. cut tokens
    # 1 and 3. Tokens 0..0 precede the first cut: 0 (no value for the prompt). Segment 0 =
    # tokens 1..2 takes V(2) - V(0) = .8 - .4; segment 1 = tokens 3..5 takes R - V(2) = .2;
    # tokens with p > .9 are then zeroed: only tokens 1 and 3 keep their advantage.
    probs = np.array([0.95, 0.5, 0.95, 0.3, 0.95, 0.95], np.float32)
    lp = np.log(probs)
    values = np.array([0.4, 0.8, 0, 0, 0, 0], np.float32)
    np.testing.assert_array_equal(mc.spo_segments(lp), [-1, 0, 0, 1, 1, 1])
    got = mc.spo_chain_advantages(lp, values, 1.0)
    np.testing.assert_allclose(got, [0, 0.4, 0, 0.2, 0, 0], atol=1e-6)
    np.testing.assert_allclose(got, ref.spo_chain_advantages(lp, values, 1.0, [True] * 6))
    np.testing.assert_array_equal(mc.prob_mask(lp), probs < 0.9)
    # First token low-probability: the prompt is a cutpoint (-1) and its value is the base.
    probs0 = np.array([0.5, 0.95, 0.3, 0.95], np.float32)
    got = mc.spo_chain_advantages(np.log(probs0), np.array([0.5, 0.75, 0, 0]), 0.0)
    np.testing.assert_allclose(got, [0.25, 0, -0.75, 0], atol=1e-6)
    # No low-probability token: no cutpoint, all zeros.
    got = mc.spo_chain_advantages(np.log(np.full(4, 0.99)), np.ones(4), 1.0)
    np.testing.assert_array_equal(got, 0.0)

  def test_interval_keeps_every_kth_candidate(self):
    # Candidates at tokens 1, 2, 4, 5, 7 (p < .9): interval 2 keeps 1, 4, 7. The tokens 2
    # and 5 stay in the loss mask but inside a segment started by an earlier cut; with
    # interval 5 only token 1 is a cut and tokens 0 form the zero first segment.
    probs = np.array([0.95, 0.5, 0.5, 0.95, 0.5, 0.5, 0.95, 0.5], np.float32)
    lp = np.log(probs)
    np.testing.assert_array_equal(mc.spo_segments(lp, interval=2), [-1, 0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(mc.spo_segments(lp, interval=5), [-1, 0, 0, 0, 0, 0, 0, 0])
    # A float32 interval (as estimator hyper-parameters are), traced under jit.
    got = jax.jit(mc.spo_segments)(lp, None, 0.9, np.float32(2.0))
    np.testing.assert_array_equal(got, [-1, 0, 0, 0, 1, 1, 1, 2])
    values = np.arange(8, dtype=np.float32) / 10
    for interval in (1, 2, 3, 5):
      got = mc.spo_chain_advantages(lp, values, 1.0, interval=interval)
      want = ref.spo_chain_advantages(lp, values, 1.0, [True] * 8, interval=interval)
      np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f'interval {interval}')

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ('single', (), 'none', 0.9, 1),
    ('batch', (8,), 'random', 0.9, 1),
    ('batch_interval2', (8,), 'random', 0.9, 2),
    ('two_axes_interval5_t07', (2, 4), 'random', 0.7, 5),
  )
  def test_matches_reference(self, batch, mask_kind, threshold, interval):
    rng = np.random.default_rng(3)
    lp, values, outcome, mask = _spo_inputs(rng, batch, mask_kind)

    def fn(lp, values, outcome, mask, threshold, interval):
      adv = mc.spo_chain_advantages(lp, values, outcome, mask, threshold, interval)
      seg = mc.spo_segments(lp, mask, threshold, interval)
      return adv, seg, mc.prob_mask(lp, mask, threshold)

    # threshold and interval are traced under jit: one compile serves all settings.
    adv, seg, pmask = self.variant(fn)(lp, values, outcome, mask, threshold, interval)
    want = _rows(
      lambda a, v, r, m: ref.spo_chain_advantages(a, v, r[0], m, threshold, interval),
      lp,
      values,
      outcome[..., None],
      mask,
    )
    np.testing.assert_allclose(adv, want, rtol=1e-6, atol=1e-7)
    want_seg = _rows(lambda a, m: ref.spo_segments(a, m, threshold, interval), lp, mask)
    np.testing.assert_array_equal(seg, want_seg)
    np.testing.assert_array_equal(pmask, mask & (np.exp(lp) < threshold))
    # Advantages are 0 outside the valid tokens and on high-probability tokens.
    self.assertTrue((np.asarray(adv)[~mask | (np.exp(lp) > threshold)] == 0).all())

  def test_masked_tokens_are_transparent(self):
    rng = np.random.default_rng(4)
    lp, values, outcome, _ = _spo_inputs(rng, (), 'none')
    base = np.asarray(mc.spo_chain_advantages(lp, values, outcome))
    keep = np.array([True, False, True, True, False] + [True] * 6 + [False])
    padded = np.log(rng.uniform(0.01, 1, keep.size)).astype(np.float32)
    padded[keep] = lp
    got = np.asarray(mc.spo_chain_advantages(padded, values, outcome, keep))
    np.testing.assert_allclose(got[keep], base, rtol=1e-6)
    np.testing.assert_array_equal(got[~keep], 0.0)


class StepPrefixesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('suffix', 'suffix'), ('gaps', 'gaps'))
  def test_matches_reference(self, mask_kind):
    rng = np.random.default_rng(5)
    b, lp = 6, 4
    step_ids, mask = _random_steps(rng, (b,), mask_kind)
    responses = rng.integers(1, 9, (b, T)).astype(np.int32)
    prompts = rng.integers(1, 9, (b, lp)).astype(np.int32)
    prompt_mask = np.arange(lp)[None, :] >= rng.integers(0, lp, b)[:, None]  # left-padded
    fn = self.variant(lambda *a: mc.step_prefixes(*a, num_steps=S))
    tokens, pmask, exists = fn(prompts, prompt_mask, responses, mask, step_ids)
    self.assertEqual(tokens.shape, (b, S, lp + T))
    self.assertEqual(pmask.shape, (b, S, lp + T))
    for i in range(b):
      seqs, want_exists = ref.step_prefixes(
        prompts[i], prompt_mask[i], responses[i], mask[i], step_ids[i], S
      )
      np.testing.assert_array_equal(exists[i], want_exists)
      for s in range(S):
        got = np.asarray(tokens[i, s])[np.asarray(pmask[i, s])].tolist()
        if want_exists[s]:
          self.assertEqual(got, seqs[s])
    # State 0 of a row with steps is the prompt alone.
    has = np.asarray(exists[:, 0])
    np.testing.assert_array_equal(np.asarray(pmask)[has, 0, lp:], False)

  def test_spo_segments_give_states_before_cut_tokens(self):
    probs = np.array([0.95, 0.5, 0.95, 0.3, 0.95], np.float32)
    seg = mc.spo_segments(np.log(probs))
    tokens, pmask, exists = mc.step_prefixes(
      jnp.array([7, 8]), jnp.array([True, True]), jnp.arange(1, 6), jnp.ones(5, bool), seg, 4
    )
    np.testing.assert_array_equal(exists, [True, True, False, False])
    self.assertEqual(np.asarray(tokens[0])[np.asarray(pmask[0])].tolist(), [7, 8, 1])
    self.assertEqual(np.asarray(tokens[1])[np.asarray(pmask[1])].tolist(), [7, 8, 1, 2, 3])


if __name__ == '__main__':
  absltest.main()
