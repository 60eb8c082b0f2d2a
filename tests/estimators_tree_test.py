"""jaxca.estimators.tree (treerl, spo_tree, tree_step) vs NumPy loops on hand-made tree rows."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax.numpy as jnp
import numpy as np

from jaxca import estimators
from jaxca import types
from jaxca.credit import tree
from tests.reference import tree as ref

BRANCHING = (2, 2)
SEG = 2  # tokens per level


def _rows(seed):
  """Two trees of 4 leaves; some responses end at level 1 (copied to both branches)."""
  rng = np.random.default_rng(seed)
  parents = tree.complete_tree(BRANCHING)
  paths = tree.leaf_paths(BRANCHING)
  g, leaves, t = 2, len(paths), SEG * len(BRANCHING)
  node_ids = np.full((g * leaves, t), -1, np.int32)
  mask = np.zeros((g * leaves, t), bool)
  outcome = np.zeros(g * leaves, np.float32)
  for p in range(g):
    ended = rng.random(BRANCHING[0]) < 0.5  # level-1 nodes whose response ended
    r_mid = rng.integers(0, 2, BRANCHING[0])
    for leaf in range(leaves):
      b = p * leaves + leaf
      first = leaf // BRANCHING[1]
      n1 = rng.integers(1, SEG + 1) if not ended[first] else SEG
      mask[b, :SEG] = np.arange(SEG) < SEG  # level-1 segment full
      node_ids[b, :SEG] = paths[leaf, 0]
      if ended[first]:
        outcome[b] = r_mid[first]
      else:
        mask[b, SEG : SEG + n1] = True
        node_ids[b, SEG : SEG + n1] = paths[leaf, 1]
        outcome[b] = rng.integers(0, 2)
  node_ids = np.where(mask, node_ids, -1)
  last = t - 1 - np.argmax(mask[:, ::-1], axis=1)
  rewards = np.zeros(mask.shape, np.float32)
  rewards[np.arange(len(last)), last] = outcome
  traj = types.Trajectory(
    rewards=jnp.asarray(rewards),
    mask=jnp.asarray(mask),
    group_ids=jnp.repeat(jnp.arange(g), leaves),
    num_groups=g,
    groups_contiguous=True,
  ).replace(
    node_ids=jnp.asarray(node_ids),
    parent_ids=jnp.asarray(np.tile(parents, (g * leaves, 1))),
  )
  return traj, parents, node_ids, mask, outcome


def _reference(fn, parents, node_ids, mask, outcome, share, leaves=4):
  out = np.zeros(mask.shape)
  n = len(parents)
  for p in range(len(outcome) // leaves):
    rows = range(p * leaves, (p + 1) * leaves)
    valid = np.zeros(n, bool)
    valid[0] = True
    shared = np.zeros(n)
    r = np.zeros(n)
    for b in rows:
      visited = set(int(i) for i in node_ids[b][mask[b]]) | {0}
      for i in visited:
        valid[i] = True
        shared[i] += 1
      r[max(visited)] = outcome[b]
    adv = fn(parents, r, valid)
    for b in rows:
      for t in range(mask.shape[1]):
        if mask[b, t]:
          i = node_ids[b, t]
          out[b, t] = adv[i] / (shared[i] if share == 'edge' else 1.0)
  return out


class TreeStagesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    spec=['treerl', 'treerl_shipped', 'spo_tree', 'spo_tree_grpo', 'tree_step'],
    share=['path', 'edge'],
  )
  def test_matches_reference(self, spec, share):
    traj, parents, node_ids, mask, outcome = _rows(0)
    name, opts, want_fn = {
      'treerl': ('treerl', {}, ref.treerl_paper),
      'treerl_shipped': ('treerl', dict(variant='shipped'), ref.treerl_shipped),
      'spo_tree': ('spo_tree', {}, ref.spo_tree),
      'spo_tree_grpo': (
        'spo_tree',
        dict(method='grpo'),
        lambda p, r, v: ref.spo_tree(p, r, v, method='grpo'),
      ),
      'tree_step': ('tree_step', {}, ref.subtree_step_rewards),
    }[spec]
    est = estimators.make(name, share=share, **opts)
    self.assertEqual(est.requires[-3:], ('group_ids', 'node_ids', 'parent_ids'))
    out = self.variant(est)(traj)
    want = _reference(want_fn, parents, node_ids, mask, outcome, share)
    np.testing.assert_allclose(out.advantages, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.returns, np.where(mask, outcome[:, None], 0.0))

  def test_other_seeds(self):
    for seed in (1, 2, 3):
      traj, parents, node_ids, mask, outcome = _rows(seed)
      out = estimators.make('spo_tree')(traj)
      want = _reference(ref.spo_tree, parents, node_ids, mask, outcome, 'path')
      np.testing.assert_allclose(out.advantages, want, atol=1e-5)

  def test_missing_fields_and_bad_option(self):
    traj, *_ = _rows(0)
    bare = types.Trajectory(rewards=traj.rewards, mask=traj.mask)
    with self.assertRaisesRegex(ValueError, 'node_ids'):
      estimators.make('treerl')(bare)
    with self.assertRaisesRegex(ValueError, 'share'):
      estimators.make('treerl', share='tokens')


if __name__ == '__main__':
  absltest.main()
