"""Rollout-tree stages: TreeRL, SPO-tree and TreePS-RAG (kernels in `jaxca.credit.tree`).

The rows of a tree are its root-to-leaf responses (`jaxca.tree_sampling.sample_tree` lays
them out, row `p * L + l` for leaf l of prompt p); a group is a tree. Extra Trajectory
fields (in `extras`):
  node_ids   [B, T] int32  tree node of each token (level-order ids, 0 = the prompt, which
                           owns no token); -1 for masked tokens.
  parent_ids [B, N] int32  the parent array of the row's tree (`credit.tree.complete_tree`);
                           rows of a group carry the same one.
The stages rebuild each tree from its rows: a node exists when a valid token of some row
sits in it; a row's leaf is the deepest node it visits and carries the row's outcome R (the
sum of its rewards); rows that share a leaf (a response that ended before the last branch
point, copied to every branch) count once. Node advantages go back to every token of the
node; `returns` are R on the valid tokens.

Source stages (each requires group_ids, node_ids, parent_ids):
  * `'treerl'`: `credit.tree.treerl_advantages`; static `variant` 'paper' (Hou et al. 2025,
    arXiv 2506.11902, Sec. 3.2) or 'shipped' (the released script's reward).
  * `'spo_tree'`: `credit.tree.spo_tree_advantages`; static `method` 'rloo' or 'grpo'
    (arXiv 2505.23564, Sec. 4), traced `eps`.
  * `'tree_step'`: TreePS-RAG's step rewards from subtree outcomes,
    `credit.tree.subtree_step_rewards` (arXiv 2601.06922); static `relative`.

Static `share` (every stage): 'path' gives a shared segment's advantage to every row that
contains it (TreeRL trains each root-to-leaf path; its sqrt weights are in the 'treerl'
formula); 'edge' divides it by the number of rows of the tree that contain the node, so the
copies sum to one (SPO-tree trains each edge once).

Every level of a tree should branch (>= 2 children): an only child's child-minus-parent
advantage is 0 (`credit.tree.spo_tree_advantages`), so its tokens get no credit and its
parent's tokens take its blame.
"""

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca.credit import _checks
from jaxca.credit import tree
from jaxca.estimators import core

REQUIRES = ('group_ids', 'node_ids', 'parent_ids')


def tree_inputs(traj):
  """Per-tree arrays from the rows of `traj`.

  Returns:
    dict(parents [G, N] int32, leaf_rewards [G, N] float32, valid [G, N] bool,
    shared [G, N] float32 rows of the tree visiting each node, node_ids [B, T] with -1 at
    masked tokens, outcome [B] float32).
  """
  node_ids = jnp.asarray(traj.get('node_ids'))
  parent_ids = jnp.asarray(traj.get('parent_ids'))
  if node_ids.shape != traj.mask.shape:
    raise ValueError(f'`node_ids` must be [B, T] {traj.mask.shape}; got {node_ids.shape}.')
  if parent_ids.ndim != 2 or parent_ids.shape[0] != node_ids.shape[0]:
    raise ValueError(f'`parent_ids` must be [B, N]; got {parent_ids.shape}.')
  n = parent_ids.shape[1]
  groups, g = traj.group_ids, traj.num_groups
  ids = jnp.where(traj.mask, node_ids, -1).astype(jnp.int32)
  outcome = ops.masked_sum(traj.rewards, traj.mask, axis=-1)
  visits = jnp.any(ids[:, :, None] == jnp.arange(n)[None, None, :], axis=1)
  visits = visits.at[:, 0].set(True)
  leaf = jax.nn.one_hot(jnp.maximum(jnp.max(ids, axis=1), 0), n)
  seg = lambda x: jax.ops.segment_sum(x, groups, num_segments=g)
  leaf_count = seg(leaf)
  leaf_r = seg(leaf * outcome[:, None]) / jnp.maximum(leaf_count, 1.0)
  shared = seg(visits.astype(jnp.float32))
  parents = jax.ops.segment_max(parent_ids.astype(jnp.int32), groups, num_segments=g)
  return dict(
    parents=parents,
    leaf_rewards=leaf_r,
    valid=shared > 0,
    shared=shared,
    node_ids=ids,
    outcome=outcome,
  )


def _targets(traj, node_adv, x, share):
  rows = node_adv[traj.group_ids]
  if share == 'edge':
    rows = rows / jnp.maximum(x['shared'][traj.group_ids], 1.0)
  adv = jnp.where(traj.mask, tree.to_tokens(rows, x['node_ids']), 0.0)
  ret = jnp.where(traj.mask, x['outcome'][:, None], 0.0)
  return core.Targets(adv, ret)


def _share(share):
  return _checks.choice('share', share, ('path', 'edge'))


@core.stage()
def treerl(variant: str = 'paper', share: str = 'path') -> core.Stage:
  """TreeRL's process reward per segment (see the module docstring)."""
  variant = _checks.choice('variant', variant, ('paper', 'shipped'))
  share = _share(share)

  def apply(traj, prev, hp):
    del prev, hp
    x = tree_inputs(traj)
    adv = tree.treerl_advantages(x['parents'], x['leaf_rewards'], x['valid'], variant=variant)
    return _targets(traj, adv, x, share)

  return core.Stage('treerl', REQUIRES, {}, apply)


@core.stage()
def spo_tree(method: str = 'rloo', share: str = 'path', eps=1e-8) -> core.Stage:
  """SPO-tree's segment advantages (see the module docstring); traced `eps`."""
  method = _checks.choice('method', method, ('rloo', 'grpo'))
  share = _share(share)

  def apply(traj, prev, hp):
    del prev
    x = tree_inputs(traj)
    adv = tree.spo_tree_advantages(
      x['parents'], x['leaf_rewards'], x['valid'], method=method, eps=hp['eps']
    )
    return _targets(traj, adv, x, share)

  return core.Stage('spo_tree', REQUIRES, dict(eps=eps), apply)


@core.stage()
def tree_step(relative: bool = True, share: str = 'path') -> core.Stage:
  """TreePS-RAG's subtree step rewards (see the module docstring)."""
  share = _share(share)

  def apply(traj, prev, hp):
    del prev, hp
    x = tree_inputs(traj)
    adv = tree.subtree_step_rewards(x['parents'], x['leaf_rewards'], x['valid'], relative=relative)
    return _targets(traj, adv, x, share)

  return core.Stage('tree_step', REQUIRES, {}, apply)


STAGES = {'treerl': treerl, 'spo_tree': spo_tree, 'tree_step': tree_step}
