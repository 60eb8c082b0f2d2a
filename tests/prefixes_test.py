"""jaxca.prefixes (host-side dedup / bucketing) vs a dict-based loop."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from jaxca import prefixes
from tests.reference import mc as ref


def _random_rows(rng, n, length, vocab=3):
  """Rows drawn from a few short sequences, placed with random padding (duplicates likely)."""
  tokens = np.zeros((n, length), np.int64)
  mask = np.zeros((n, length), bool)
  for i in range(n):
    k = rng.integers(0, 4)
    seq = rng.integers(0, vocab, k)
    cols = np.sort(rng.choice(length, k, replace=False))
    tokens[i] = rng.integers(0, vocab, length)  # junk at padding
    tokens[i, cols] = seq
    mask[i, cols] = True
  return tokens, mask


class UniquePrefixesTest(parameterized.TestCase):
  @parameterized.parameters(0, 1, 2, 3)
  def test_matches_dict_reference(self, seed):
    rng = np.random.default_rng(seed)
    tokens, mask = _random_rows(rng, 40, 6)
    got = prefixes.unique_prefixes(tokens, mask)
    keys, inverse = ref.unique_prefixes(tokens, mask)
    self.assertLess(len(keys), 40)  # duplicates were present
    self.assertLen(got.index, len(keys))
    np.testing.assert_array_equal(got.inverse, inverse)
    for u, key in enumerate(keys):
      self.assertEqual(tuple(got.tokens[u][got.mask[u]].tolist()), key)
    np.testing.assert_array_equal(got.tokens, tokens[got.index])
    # Every row maps to a prefix with its own valid tokens.
    for i in range(40):
      u = got.inverse[i]
      np.testing.assert_array_equal(got.tokens[u][got.mask[u]], tokens[i][mask[i]])

  def test_padding_layout_is_ignored_and_lengths_distinguished(self):
    tokens = np.array([[0, 0, 1, 2], [1, 2, 0, 0], [1, 0, 2, 9], [0, 1, 2, 0], [5, 5, 5, 5]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    got = prefixes.unique_prefixes(tokens, mask)
    # rows 0-2 are [1, 2]; row 3 is [0, 1, 2]; row 4 is the empty prefix.
    np.testing.assert_array_equal(got.inverse, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(got.index, [0, 3, 4])

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'bool'):
      prefixes.unique_prefixes(np.zeros((2, 3)), np.zeros((2, 3)))
    with self.assertRaisesRegex(ValueError, '>= 0'):
      prefixes.unique_prefixes(-np.ones((2, 3), int), np.ones((2, 3), bool))


class BucketTest(parameterized.TestCase):
  def test_bucket_size(self):
    got = [prefixes.bucket_size(n) for n in range(0, 10)]
    self.assertEqual(got, [1, 1, 2, 4, 4, 8, 8, 8, 8, 16])
    self.assertEqual(prefixes.bucket_size(3, minimum=16), 16)
    self.assertEqual(prefixes.bucket_size(17, minimum=16), 32)

  def test_pad_rows_repeats_first_row(self):
    x = np.arange(6).reshape(3, 2)
    got = prefixes.pad_rows(x, 4)
    np.testing.assert_array_equal(got, [[0, 1], [2, 3], [4, 5], [0, 1]])
    with self.assertRaisesRegex(ValueError, 'rows'):
      prefixes.pad_rows(x, 2)


class PlanTest(parameterized.TestCase):
  def test_plan_dedupes_buckets_and_scatters(self):
    rng = np.random.default_rng(7)
    b, s, length = 5, 3, 6
    tokens, mask = _random_rows(rng, b * s, length)
    tokens, mask = tokens.reshape(b, s, length), mask.reshape(b, s, length)
    state_valid = rng.random((b, s)) > 0.3
    plan = prefixes.plan(tokens, mask, state_valid, minimum_bucket=2)
    valid_rows = [(i, j) for i in range(b) for j in range(s) if state_valid[i, j]]
    keys, _ = ref.unique_prefixes(
      np.stack([tokens[i, j] for i, j in valid_rows]), np.stack([mask[i, j] for i, j in valid_rows])
    )
    self.assertEqual(plan.num_unique, len(keys))
    self.assertEqual(plan.bucket, prefixes.bucket_size(len(keys), 2))
    # A value per prefix: its token sum; scatter gives each state its own prefix's value.
    values = np.array([float(t[m].sum()) for t, m in zip(plan.tokens, plan.mask)])
    got = plan.scatter(values, fill=-1.0)
    for i in range(b):
      for j in range(s):
        want = float(tokens[i, j][mask[i, j]].sum()) if state_valid[i, j] else -1.0
        self.assertEqual(got[i, j], want)
    np.testing.assert_array_equal(plan.inverse[~state_valid], -1)

  def test_plan_without_states(self):
    plan = prefixes.plan(np.zeros((2, 2, 3)), np.ones((2, 2, 3), bool), np.zeros((2, 2), bool))
    self.assertEqual((plan.num_unique, plan.bucket), (0, 1))
    np.testing.assert_array_equal(plan.scatter(np.array([3.0])), 0.0)


if __name__ == '__main__':
  absltest.main()
