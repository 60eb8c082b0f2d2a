"""Tree credit: node values and advantages of a rollout tree from its leaves' outcomes.

A rollout tree shares prefixes between responses: node 0 is the prompt (no tokens), every
other node a segment of tokens, and a response is the path from the root to a leaf. The tree
has a static size N with masks, so one shape serves every prompt (`complete_tree` builds the
level-order parent array of a complete tree; `jaxca.tree_sampling` samples one). A node is
*effective* when it and all its ancestors are valid; an effective node with no effective
child is a *leaf* and carries the outcome of its response (`leaf_rewards`, read only there).

Kernels (arrays `[..., N]`, any leading batch axes; `parents [N]` or with the batch shape):
  * `node_values`: V(n), the mean outcome of the leaves below n (`aggregate='leaves'`,
    TreeRL, arXiv 2506.11902, Sec. 3.2), or the mean of the children's values
    (`aggregate='children'`, the recursion of the official SPO-tree code,
    AIFrameResearch/SPO `hybrid_inference_strategy.py`: equal to the leaf mean in a complete
    tree, not where a path ended early).
  * `treerl_advantages`: TreeRL's process reward, `variant='paper'` or `'shipped'` (below).
  * `spo_tree_advantages`: SPO-tree's segment advantages (arXiv 2505.23564, Sec. 4).
  * `subtree_step_rewards`: TreePS-RAG's step rewards from subtree outcomes (arXiv 2601.06922).
  * `to_tokens`: node quantities -> token quantities through `node_ids`.

Differences from the official code are listed in each function's docstring. Invalid nodes
(and the root, which has no tokens) get 0 advantage.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxca.credit import _checks


def complete_tree(branching) -> np.ndarray:
  """Level-order parent array of a complete tree: [N] int32, `parents[0] = -1`.

  Args:
    branching: children per node at each level, `(b_1, ..., b_D)`: the root (the prompt)
      has b_1 children, each of those b_2, ... Level d holds `prod(b_1..b_d)` nodes, ids
      `offset_d + j`, and node j of level d has parent `j // b_d` of level d - 1.

  Returns:
    parents, N = 1 + sum_d prod(b_1..b_d).
  """
  branching = tuple(branching)
  if not branching or any(not isinstance(b, (int, np.integer)) or b < 1 for b in branching):
    raise ValueError(f'`branching` must be a non-empty tuple of ints >= 1; got {branching!r}.')
  parents = [-1]
  prev_offset, width = 0, 1
  for b in branching:
    offset = len(parents)
    parents.extend(prev_offset + j // b for j in range(width * b))
    prev_offset, width = offset, width * b
  return np.asarray(parents, np.int32)


def leaf_paths(branching) -> np.ndarray:
  """[L, D] node ids of each leaf's path (levels 1..D) in a `complete_tree(branching)`."""
  branching = tuple(branching)
  parents = complete_tree(branching)
  num_leaves = int(np.prod(branching))
  last = np.arange(len(parents) - num_leaves, len(parents))
  paths = [last]
  for _ in range(len(branching) - 1):
    paths.append(parents[paths[-1]])
  return np.stack(paths[::-1], axis=1).astype(np.int32)


def _structure(parents, valid):
  """(ancestor-or-self matrix [N, N] (row = ancestor), effective [N], leaf [N], parent [N])."""
  n = parents.shape[-1]
  ids = jnp.arange(n)
  safe = jnp.maximum(parents, 0)

  def body(_, carry):
    anc, cur = carry
    cur = jnp.where(cur >= 0, parents[jnp.maximum(cur, 0)], -1)
    anc = anc | ((ids[:, None] == cur[None, :]) & (cur >= 0)[None, :])
    return anc, cur

  anc0 = ids[:, None] == ids[None, :]
  anc, _ = jax.lax.fori_loop(0, n - 1, body, (anc0, ids))
  # effective: valid and every ancestor valid
  eff = jnp.all(jnp.where(anc, valid[:, None], True), axis=0)
  child = (parents[None, :] == ids[:, None]) & eff[None, :]  # [parent, child]
  leaf = eff & ~jnp.any(child, axis=1)
  return anc, eff, leaf, safe


def _check(parents, leaf_rewards, valid):
  leaf_rewards = _checks.as_float('leaf_rewards', leaf_rewards)
  _checks.at_least_1d('leaf_rewards', leaf_rewards)
  parents = jnp.asarray(parents)
  if not jnp.issubdtype(parents.dtype, jnp.integer):
    raise TypeError(f'`parents` must be an integer array; got {parents.dtype}.')
  n = leaf_rewards.shape[-1]
  if parents.shape[-1] != n:
    raise ValueError(f'`parents` must have N={n} nodes on its last axis; got {parents.shape}.')
  if valid is None:
    valid = jnp.ones(leaf_rewards.shape, jnp.bool_)
  valid = jnp.asarray(valid)
  if valid.dtype != jnp.bool_:
    raise TypeError(f'`valid` must be a bool array; got {valid.dtype}.')
  _checks.same_shape('leaf_rewards', leaf_rewards, valid=valid)
  shape = jnp.broadcast_shapes(parents.shape, leaf_rewards.shape)
  if shape != leaf_rewards.shape:
    raise ValueError(
      f'`parents` {parents.shape} must be [N] or have the shape of `leaf_rewards` '
      f'{leaf_rewards.shape}.'
    )
  return jnp.broadcast_to(parents.astype(jnp.int32), shape), leaf_rewards, valid


def _vectorize(fn, n_out):
  sig = '(n),(n),(n)->' + ','.join(['(n)'] * n_out)
  return jnp.vectorize(fn, signature=sig)


def _values_one(parents, r, valid, aggregate):
  anc, eff, leaf, _ = _structure(parents, valid)
  leaf_f = leaf.astype(jnp.float32)
  anc_f = anc.astype(jnp.float32)
  counts = anc_f @ leaf_f
  if aggregate == 'leaves':
    sums = anc_f @ (leaf_f * r)
    values = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0)
  else:  # 'children': V(leaf) = r, V(n) = mean of the effective children's V
    ids = jnp.arange(parents.shape[-1])
    child = ((parents[None, :] == ids[:, None]) & eff[None, :]).astype(jnp.float32)
    n_child = child.sum(axis=1)

    def body(_, v):
      mean = (child @ v) / jnp.maximum(n_child, 1.0)
      return jnp.where(leaf, r, jnp.where(eff, mean, 0.0))

    values = jax.lax.fori_loop(0, parents.shape[-1], body, jnp.where(leaf, r, 0.0))
  return jnp.where(eff, values, 0.0), jnp.where(eff, counts, 0.0)


def node_values(parents, leaf_rewards, valid=None, *, aggregate: str = 'leaves'):
  """Value of every node from the outcomes of the leaves below it.

  Args:
    parents: [N] (or the batch shape of `leaf_rewards`) int, `parents[0] = -1`,
      `parents[i] < i` for i > 0 (level order, e.g. `complete_tree`).
    leaf_rewards: [..., N] float32 outcome of the response ending at each leaf (other
      entries are ignored).
    valid: [..., N] bool, the node exists (e.g. holds at least one token; the root is
      always needed); default all True.
    aggregate: 'leaves' (V = mean over the leaves of the subtree) or 'children' (V = mean of
      the children's V, recursively: the official SPO-tree code's `node["reward"]`).

  Returns:
    (values [..., N] float32, leaf_counts [..., N] float32: leaves in each subtree); 0 at
    nodes that are not effective.
  """
  aggregate = _checks.choice('aggregate', aggregate, ('leaves', 'children'))
  parents, r, valid = _check(parents, leaf_rewards, valid)
  fn = _vectorize(lambda p, x, v: _values_one(p, x, v, aggregate), 2)
  return fn(parents, r, valid)


def _treerl_one(parents, r, valid, selected, variant, eps):
  anc, eff, leaf, safe = _structure(parents, valid)
  leaf_f = leaf.astype(jnp.float32)
  anc_f = anc.astype(jnp.float32)
  counts = anc_f @ leaf_f
  is_root = parents < 0
  if variant == 'paper':
    v = jnp.where(counts > 0, (anc_f @ (leaf_f * r)) / jnp.maximum(counts, 1.0), 0.0)
    glob = v - v[0]
    local = v - v[safe]
    adv = (glob + local) / jnp.sqrt(jnp.maximum(counts, 1.0))
  else:  # 'shipped'
    n_leaves = leaf_f.sum()
    mu = (leaf_f * r).sum() / jnp.maximum(n_leaves, 1.0)
    loo = jnp.where(n_leaves > 1, n_leaves / jnp.maximum(n_leaves - 1.0, 1.0) * (r - mu), 0.0)
    acc = anc_f @ (leaf_f * loo)
    n_sel = anc_f @ (leaf_f * selected.astype(jnp.float32))
    acc = jnp.where(n_sel > 0, acc / jnp.sqrt(jnp.maximum(n_sel, 1.0)), acc)
    w = jnp.where(counts > 0, acc / jnp.maximum(counts, 1.0), 0.0)
    delta = w - w[safe]
    fill_from_parent = (jnp.abs(delta) < eps) & ~is_root & ~is_root[safe]

    def body(_, f):
      return jnp.where(fill_from_parent, f[safe], delta)

    filled = jax.lax.fori_loop(0, parents.shape[-1], body, delta)
    adv = filled + w
  return jnp.where(eff & ~is_root, adv, 0.0)


def treerl_advantages(
  parents, leaf_rewards, valid=None, *, variant: str = 'paper', selected=None, eps=1e-8
):
  """TreeRL's process reward of every node (Hou et al. 2025, arXiv 2506.11902, Sec. 3.2).

  `variant='paper'`: with V(n) the mean outcome of the leaves below n (`node_values`),
  L(n) their number and p(n) the parent,

    R(n) = (G(n) + Loc(n)) / sqrt(L(n)),   G(n) = V(n) - V(root),   Loc(n) = V(n) - V(p(n)),

  the global advantage against the root (all leaves of the prompt) plus the local advantage
  against the parent, reweighted so that a segment shared by many leaves, trained once per
  leaf, is not over-counted.

  `variant='shipped'` transcribes what the released training script runs (THUDM/TreeRL
  `scripts/treerl-qw14b.sh`: `--use_entropy_tree --use_state_value_reward
  --use_weighted_value --weighted_value_style sqrt`, defaults `overall_norm_style='none'`,
  `average_one_generation=False`; `tree_node.py` `build_into_tree_format`, `leaf_normalize`,
  `compute_weighted_update`; `parallel_mcts.py` `gather_paths`, `fill_in_paths`). With the
  K leaves of the prompt (all of its trees, as the code puts the M trees under one root):
    1. leave-one-out outcomes r'_i = r_i - mean_{j != i} r_j = K/(K-1) (r_i - mean r);
    2. acc(n) = sum of r' over the leaves below n, divided by sqrt(S(n)) with S(n) the
       number of *selected* leaves below n (the leaves sampled for training; `selected`,
       default all) when S(n) > 0;
    3. W(n) = acc(n) / L(n);  delta(n) = W(n) - W(p(n));  a delta with |delta| < 1e-8 is
       replaced by its parent's (filled) delta unless the parent is the root;
    4. R(n) = delta(n) + W(n).
  So the shipped reward is K/(K-1) (Loc + G) with the sqrt weights applied to the node and
  to its parent separately, over *selected* leaves, plus the zero fill-in: it differs from
  the paper in the K/(K-1) scale, in the weights of the local term, and wherever a local
  advantage is exactly 0. With K = 1 leaf the code asserts; here r' = 0.

  Other differences from the official code: its EPTree puts the parent's own continuation
  after a branch point in the tree as a sibling of the new branches; its leaves may sit at
  any depth (handled here by `valid`); `select_terminal` samples `num_traces` leaves at
  random keeping at least one correct one (`selected` is given here, not drawn). Each
  segment's R is put on every token of the segment (`experience_maker.py`); the script's
  correct-answer bonus (`--correct_bonus_ratio 1`) is the identity.

  Args:
    parents: [N] or batch-shaped int level-order parents (`node_values`).
    leaf_rewards: [..., N] float32 outcomes at the leaves.
    valid: [..., N] bool node exists; default all.
    variant: 'paper' or 'shipped'.
    selected: [..., N] bool, leaves selected for training ('shipped' only); default all.
    eps: the fill-in threshold of 'shipped' (the code's 1e-8).

  Returns:
    [..., N] float32 reward of each node's segment; 0 at the root and non-effective nodes.
  """
  variant = _checks.choice('variant', variant, ('paper', 'shipped'))
  parents, r, valid = _check(parents, leaf_rewards, valid)
  if selected is None:
    selected = jnp.ones(r.shape, jnp.bool_)
  selected = jnp.asarray(selected)
  if selected.dtype != jnp.bool_:
    raise TypeError(f'`selected` must be a bool array; got {selected.dtype}.')
  _checks.same_shape('leaf_rewards', r, selected=selected)
  fn = jnp.vectorize(
    lambda p, x, v, s: _treerl_one(p, x, v, s, variant, eps), signature='(n),(n),(n),(n)->(n)'
  )
  return fn(parents, r, valid, selected)


def _spo_one(parents, r, valid, method, eps):
  anc, eff, leaf, safe = _structure(parents, valid)
  del anc
  v, _ = _values_one(parents, r, valid, 'children')
  is_root = parents < 0
  adv = v - v[safe]
  if method == 'grpo':
    ids = jnp.arange(parents.shape[-1])
    child = ((parents[None, :] == ids[:, None]) & eff[None, :]).astype(jnp.float32)
    n_child = jnp.maximum(child.sum(axis=1), 1.0)
    mean = (child @ v) / n_child
    var = (child @ (v * v)) / n_child - mean * mean
    std = jnp.sqrt(jnp.maximum(var, 0.0))
    adv = adv / (std[safe] + eps)
  del leaf
  return jnp.where(eff & ~is_root, adv, 0.0)


def spo_tree_advantages(parents, leaf_rewards, valid=None, *, method: str = 'rloo', eps=1e-8):
  """SPO-tree segment advantages (Guo et al. 2025, arXiv 2505.23564, Sec. 4).

  Transcribed from the official code (AIFrameResearch/SPO: `hybrid_inference_strategy.py`
  `_construct_tree` sets `node["reward"] = np.mean(child_rewards)`, a leaf's reward being its
  outcome; `tree_episode_generator.py` `extract_edges_from_tree`):

    V(n) = r(n) at a leaf,  V(n) = mean over the children c of V(c) otherwise;
    A(n) = V(n) - V(p(n))                                   (method='rloo', the default)
    A(n) = (V(n) - V(p(n))) / (std_c V(c) of p's children + 1e-8)   (method='grpo')

  with the population std (`np.std`). Every edge (a node's segment with its parent's text
  as the prompt) is one training sample in the official code, so a shared segment is trained
  once; the estimator stage (`estimators.tree`) offers `share='edge'` for that. The code
  also drops the edges whose advantage is exactly 0 (`only_adv_greater_than_zero=True`, which
  tests `!= 0`): here they get 0, which is the same gradient, not the same loss
  normalisation. The official trees cut every M tokens (M=100, the last level free) with
  branching 6 at each of 3 levels (`configs/polIter_qwen1_5b_base_spo_tree_MATH.jsonnet`).

  An only child n (its parent has one valid child) has V(n) = V(p(n)), so A(n) = 0: its
  tokens get no credit and its parent's segment carries what they did. The official trees
  branch at every level; build trees the same way (merge a 1-way level into its parent's
  segment).

  Args:
    parents: [N] or batch-shaped int level-order parents (`node_values`).
    leaf_rewards: [..., N] float32 outcomes at the leaves.
    valid: [..., N] bool node exists; default all.
    method: 'rloo' or 'grpo'.
    eps: the 'grpo' std floor (traceable).

  Returns:
    [..., N] float32; 0 at the root and non-effective nodes.
  """
  method = _checks.choice('method', method, ('rloo', 'grpo'))
  parents, r, valid = _check(parents, leaf_rewards, valid)
  fn = _vectorize(lambda p, x, v: _spo_one(p, x, v, method, eps), 1)
  return fn(parents, r, valid)


def subtree_step_rewards(parents, leaf_rewards, valid=None, *, relative: bool = True):
  """TreePS-RAG step rewards from subtree outcomes (Zhang et al. 2026, arXiv 2601.06922).

  TreePS-RAG models each agentic step as a tree node and estimates its utility by Monte
  Carlo over the outcomes of its descendants: the step reward of n is V(n), the mean outcome
  of the leaves below it (`node_values(aggregate='leaves')`), and its process advantage is
  V(n) - V(p(n)) (`relative=True`, the improvement the step brought over its parent state).
  Transcribed from the paper's description; no official code was found, so its exact
  advantage normalisation (whether and how it mixes in the outcome advantage) is not
  reproduced here: combine with an outcome stage (e.g. 'grpo') in an estimator spec.

  Args:
    parents: [N] or batch-shaped int level-order parents.
    leaf_rewards: [..., N] float32 outcomes at the leaves.
    valid: [..., N] bool node exists; default all.
    relative: return V(n) - V(p(n)) (default) or V(n).

  Returns:
    [..., N] float32; 0 at the root and non-effective nodes.
  """
  values, counts = node_values(parents, leaf_rewards, valid, aggregate='leaves')
  parents, _, _ = _check(parents, leaf_rewards, valid)
  if relative:
    parent_v = jnp.take_along_axis(values, jnp.maximum(parents, 0), axis=-1)
    values = values - parent_v
  return jnp.where((parents >= 0) & (counts > 0), values, 0.0)


def to_tokens(node_x, node_ids):
  """[..., N] node quantities -> [..., T] token quantities (0 where `node_ids` < 0)."""
  node_x = _checks.as_float('node_x', node_x)
  node_ids = jnp.asarray(node_ids)
  if node_x.shape[:-1] != node_ids.shape[:-1]:
    raise ValueError(
      f'`node_x` {node_x.shape} and `node_ids` {node_ids.shape} must share the batch shape.'
    )
  out = jnp.take_along_axis(node_x, jnp.maximum(node_ids, 0), axis=-1)
  return jnp.where(node_ids >= 0, out, 0.0)
