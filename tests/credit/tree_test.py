"""credit.tree vs NumPy loops (tests/reference/tree.py) on hand-made and random trees."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca.credit import tree
from tests.reference import tree as ref

# A hand-made irregular tree: root 0; 1, 2 under it; 3, 4, 5 under 1; 6 under 2; 7, 8 under 6.
HAND = np.array([-1, 0, 0, 1, 1, 1, 2, 6, 6], np.int32)


def _random_case(rng, parents):
  n = len(parents)
  r = rng.integers(0, 2, n).astype(np.float32)
  valid = rng.random(n) > 0.2
  valid[0] = True
  return r, valid


def _each(fn, parents, r, valid, **kw):
  return np.stack([fn(parents, r[i], valid[i], **kw) for i in range(r.shape[0])])


class CompleteTreeTest(absltest.TestCase):
  def test_layout(self):
    np.testing.assert_array_equal(tree.complete_tree((2, 3)), [-1, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(
      tree.leaf_paths((2, 3)),
      [[1, 3], [1, 4], [1, 5], [2, 6]]
      + [
        [2, 7],
        [2, 8],
      ],
    )
    self.assertLen(tree.complete_tree((3, 2, 2)), 1 + 3 + 6 + 12)

  def test_bad_branching(self):
    with self.assertRaisesRegex(ValueError, 'branching'):
      tree.complete_tree((2, 0))


class KernelsTest(parameterized.TestCase):
  def _cases(self, seed, parents, batch=6):
    rng = np.random.default_rng(seed)
    rs, vs = zip(*[_random_case(rng, parents) for _ in range(batch)])
    return np.stack(rs), np.stack(vs)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(shape=['hand', 'complete'], aggregate=['leaves', 'children'])
  def test_node_values(self, shape, aggregate):
    parents = HAND if shape == 'hand' else tree.complete_tree((2, 2, 2))
    r, valid = self._cases(1, parents)
    fn = self.variant(lambda r, v: tree.node_values(parents, r, v, aggregate=aggregate))
    values, counts = fn(r, valid)
    want = [ref.node_values(parents, r[i], valid[i], aggregate) for i in range(len(r))]
    np.testing.assert_allclose(values, np.stack([w[0] for w in want]), atol=1e-6)
    np.testing.assert_allclose(counts, np.stack([w[1] for w in want]), atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(shape=['hand', 'complete'], variant=['paper', 'shipped'])
  def test_treerl(self, shape, variant):
    parents = HAND if shape == 'hand' else tree.complete_tree((3, 2))
    r, valid = self._cases(2, parents)
    fn = self.variant(lambda r, v: tree.treerl_advantages(parents, r, v, variant=variant))
    got = fn(r, valid)
    want_fn = ref.treerl_paper if variant == 'paper' else ref.treerl_shipped
    np.testing.assert_allclose(got, _each(want_fn, parents, r, valid), atol=1e-5)

  def test_treerl_shipped_selected(self):
    parents = HAND
    r = np.array([0, 0, 0, 1, 0, 1, 0, 1, 0], np.float32)
    sel = np.array([0, 0, 0, 1, 1, 0, 0, 1, 0], bool)
    valid = np.ones(9, bool)
    got = tree.treerl_advantages(parents, r, valid, variant='shipped', selected=sel)
    np.testing.assert_allclose(got, ref.treerl_shipped(parents, r, valid, sel), atol=1e-6)

  def test_treerl_hand_values(self):
    # Root with two chains: leaves 3 (r=1), 4 (r=0) under 1, leaf 2 (r=1).
    parents = np.array([-1, 0, 0, 1, 1], np.int32)
    r = np.array([0, 0, 1, 1, 0], np.float32)
    got = np.asarray(tree.treerl_advantages(parents, r))
    v_root, v1 = 2 / 3, 0.5
    np.testing.assert_allclose(got[1], 2 * (v1 - v_root) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(got[3], (1 - v_root) + (1 - v1), atol=1e-6)
    np.testing.assert_allclose(got[0], 0.0)

  def test_shipped_is_scaled_paper_without_weights(self):
    # On a depth-1 tree (chains only) the shipped reward is K/(K-1) * 2 (V - V_root) / 1.
    parents = tree.complete_tree((4,))
    r = np.array([0, 1, 0, 1, 1], np.float32)
    shipped = np.asarray(tree.treerl_advantages(parents, r, variant='shipped'))
    v_root = 0.75
    np.testing.assert_allclose(shipped[1:], 4 / 3 * 2 * (r[1:] - v_root), atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(shape=['hand', 'complete'], method=['rloo', 'grpo'])
  def test_spo_tree(self, shape, method):
    parents = HAND if shape == 'hand' else tree.complete_tree((2, 3))
    r, valid = self._cases(3, parents)
    fn = self.variant(lambda r, v: tree.spo_tree_advantages(parents, r, v, method=method))
    np.testing.assert_allclose(
      fn(r, valid), _each(ref.spo_tree, parents, r, valid, method=method), rtol=1e-5, atol=1e-4
    )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(True, False)
  def test_subtree_step_rewards(self, relative):
    r, valid = self._cases(4, HAND)
    fn = self.variant(lambda r, v: tree.subtree_step_rewards(HAND, r, v, relative=relative))
    want = _each(ref.subtree_step_rewards, HAND, r, valid, relative=relative)
    np.testing.assert_allclose(fn(r, valid), want, atol=1e-6)

  def test_children_mean_equals_leaf_mean_on_complete_tree(self):
    parents = tree.complete_tree((2, 3, 2))
    r = np.random.default_rng(5).random(len(parents)).astype(np.float32)
    a, _ = tree.node_values(parents, r, aggregate='leaves')
    b, _ = tree.node_values(parents, r, aggregate='children')
    np.testing.assert_allclose(a, b, atol=1e-6)

  def test_degenerate(self):
    # A root alone, a single chain (one leaf: shipped LOO is 0), all-equal outcomes.
    np.testing.assert_allclose(tree.treerl_advantages(np.array([-1]), np.array([1.0])), [0.0])
    chain = np.array([-1, 0, 1], np.int32)
    got = tree.treerl_advantages(chain, np.array([0, 0, 1.0]), variant='shipped')
    np.testing.assert_allclose(got, np.zeros(3))
    same = tree.complete_tree((2, 2))
    for fn in (tree.treerl_advantages, tree.spo_tree_advantages, tree.subtree_step_rewards):
      np.testing.assert_allclose(fn(same, np.ones(len(same), np.float32)), 0.0, atol=1e-6)

  def test_invalid_subtree_is_cut(self):
    # Node 1 invalid: its children are not effective even though marked valid.
    valid = np.ones(9, bool)
    valid[1] = False
    r = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1], np.float32)
    v, c = tree.node_values(HAND, r, valid)
    np.testing.assert_allclose(c, [2, 0, 2, 0, 0, 0, 2, 1, 1])
    np.testing.assert_allclose(v[0], 0.5)

  def test_vmap_equals_batched(self):
    parents = tree.complete_tree((2, 2))
    r, valid = self._cases(6, parents)
    for fn in (tree.treerl_advantages, tree.spo_tree_advantages, tree.subtree_step_rewards):
      batched = fn(parents, r, valid)
      mapped = jax.vmap(lambda x, v, fn=fn: fn(parents, x, v))(r, valid)
      np.testing.assert_allclose(mapped, batched, atol=1e-6)
    # a batch of trees with their own parent arrays
    both = np.stack([parents, parents])
    np.testing.assert_allclose(
      tree.node_values(both, r[:2], valid[:2])[0], tree.node_values(parents, r[:2], valid[:2])[0]
    )

  def test_to_tokens(self):
    x = jnp.array([[0.0, 1.0, 2.0]])
    np.testing.assert_allclose(tree.to_tokens(x, jnp.array([[2, -1, 1, 1]])), [[2, 0, 1, 1]])

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, 'variant'):
      tree.treerl_advantages(HAND, np.zeros(9, np.float32), variant='x')
    with self.assertRaisesRegex(ValueError, 'parents'):
      tree.node_values(HAND[:5], np.zeros(9, np.float32))
    with self.assertRaisesRegex(TypeError, 'valid'):
      tree.node_values(HAND, np.zeros(9, np.float32), np.zeros(9))


if __name__ == '__main__':
  absltest.main()
