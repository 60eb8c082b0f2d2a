"""Tree rollouts in jit: responses that share prefixes, the shared KV cache computed once.

`sample_tree` grows a complete tree of static size per prompt, level by level: the root is
the prompt; level d holds `prod(branching[:d])` nodes, each a segment of at most
`segment_len[d - 1]` sampled tokens; the leaves' root-to-leaf paths are the responses. The
prompt is prefilled once; at each level the cache of every node is repeated to its children
(copied, never recomputed) and all nodes of the level decode together in one `lax.scan`.
Shapes depend only on the static config, so the sampler jits once and vmaps over prompts.

Branch points (`branch_at`):
  * 'fixed': a node's segment is its `segment_len` tokens (SPO-tree cuts every M tokens,
    arXiv 2505.23564, Sec. 4; step boundaries of a task with fixed-width steps); children
    continue where the parent stopped.
  * 'step': a node's segment ends after the step separator `sep_id` (or at `segment_len`
    tokens): one reasoning step per node, branching at step boundaries (TreePS-RAG's steps,
    arXiv 2601.06922); a path stops at EOS only.
  * 'entropy' / 'surprisal': EPTree (TreeRL, arXiv 2506.11902, Sec. 3.1). A node samples a
    chain of `segment_len` tokens; the column of highest entropy of the sampling
    distribution ('entropy', the paper) or highest -log p of the sampled token
    ('surprisal', what THUDM/TreeRL's `TreeNode.get_max_entropy_tokens` computes) among
    columns >= `min_split` becomes the branch point s: the node keeps its first s tokens and
    its children re-sample from column s on (the child's cache is the parent's with the
    columns from s - 1 on dropped; token s - 1 is fed once more to get the logits of
    column s). Differences from the official EPTree: one branch point per node with
    `branching` children (the code picks the top-N tokens per tree and T children per
    token), and the parent's own tokens after s are discarded (the code keeps them as one
    more leaf); they still count in `generated`.

Keys: the token at column k of node n's segment for prompt p is drawn with
`fold_in(fold_in(fold_in(key, p), n), k)`, so a leaf's response is what sampling its path
alone gives (tested against a cache-free sampler of one path).

Responses are compacted: each leaf row holds its valid tokens first (the kept tokens of
every level in order), then padding, with `log_probs`, `entropies` and `node_ids` moved
alike, so `tokens` / `valid` feed `Policy.apply` and the learner like `sampling.sample`'s.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import sampling
from jaxca.credit import tree as tree_credit
from jaxca.networks import transformer

BRANCH_AT = ('fixed', 'step', 'entropy', 'surprisal')


class TreeSamples(NamedTuple):
  """The leaves of P trees of L = prod(branching) leaves: B = P * L rows, row `p * L + l`.

  Attributes:
    tokens: [B, Lp + W] int32, the prompt then the compacted response (W = sum(segment_len)).
    valid: [B, Lp + W] bool.
    responses: [B, W] int32 (pad_id after the last valid token).
    log_probs: [B, W] float32 `log_softmax(logits / temperature)[token]`; 0 where masked.
    entropies: [B, W] float32 entropy of the sampling distribution; 0 where masked.
    mask: [B, W] bool, a prefix of each row (the response up to and including EOS).
    lengths: [B] int32.
    node_ids: [B, W] int32 tree node of each token (`credit.tree.complete_tree` ids); -1
      where masked.
    parents: [N] int32 the tree's parent array (a constant).
    node_valid: [P, N] bool, the node holds at least one kept token (the root: True).
    splits: [P, N] int32 the branch column of each node's children inside its segment
      (`segment_len` for 'fixed' and for leaves).
    generated: [P] int32 tokens sampled for the whole tree (discarded EPTree tails included):
      the cost to compare with independent samples.
  """

  tokens: jax.Array
  valid: jax.Array
  responses: jax.Array
  log_probs: jax.Array
  entropies: jax.Array
  mask: jax.Array
  lengths: jax.Array
  node_ids: jax.Array
  parents: jax.Array
  node_valid: jax.Array
  splits: jax.Array
  generated: jax.Array


def _check(policy, prompts, branching, segment_len, branch_at, min_split, eos_id, pad_id, sep_id):
  branching, segment_len = tuple(branching), tuple(segment_len)
  if not branching or any(not isinstance(b, int) or b < 1 for b in branching):
    raise ValueError(f'`branching` must be a non-empty tuple of ints >= 1; got {branching!r}.')
  if len(segment_len) != len(branching) or any(
    not isinstance(n, int) or n < 1 for n in segment_len
  ):
    raise ValueError(
      f'`segment_len` must be {len(branching)} ints >= 1 (one per level); got {segment_len!r}.'
    )
  if branch_at not in BRANCH_AT:
    raise ValueError(f'`branch_at` must be one of {BRANCH_AT}; got {branch_at!r}.')
  if (branch_at == 'step') != (sep_id is not None):
    raise ValueError(f"`sep_id` is needed by branch_at='step' only; got {sep_id!r}.")
  if branch_at in ('entropy', 'surprisal') and not 1 <= min_split < min(segment_len[:-1] or (2,)):
    raise ValueError(
      f'`min_split` must be in [1, {min(segment_len[:-1] or (2,))}) (below every non-leaf '
      f'segment_len); got {min_split!r}.'
    )
  for name, value in (('eos_id', eos_id), ('pad_id', pad_id)):
    if not isinstance(value, int) or not 0 <= value < policy.vocab_size:
      raise ValueError(f'`{name}` must be an int in [0, {policy.vocab_size}); got {value!r}.')
  extra = len(branching) - 1 if branch_at in ('entropy', 'surprisal') else 0
  if prompts.shape[1] + sum(segment_len) + extra > policy.max_len:
    raise ValueError(
      f'prompt length {prompts.shape[1]} + sum(segment_len) {sum(segment_len)} (+ {extra} '
      f're-fed columns) exceeds the policy max_len {policy.max_len}.'
    )
  return branching, segment_len


def sample_tree(
  policy: transformer.Policy,
  params,
  key: jax.Array,
  prompts: jax.Array,
  prompt_mask: jax.Array,
  *,
  branching,
  segment_len,
  eos_id: int,
  pad_id: int,
  temperature: float = 1.0,
  branch_at: str = 'fixed',
  min_split: int = 1,
  sep_id=None,
) -> TreeSamples:
  """Samples one tree per prompt (see the module docstring).

  Args:
    policy: a `networks.transformer.Policy`.
    params: its parameters.
    key: PRNG key.
    prompts: [P, Lp] int32 prompts (any padding; see `sampling.sample_from_prefixes`).
    prompt_mask: [P, Lp] bool.
    branching: children per node at each level, (b_1, ..., b_D) (static).
    segment_len: tokens sampled per node at each level, (n_1, ..., n_D) (static).
    eos_id: end-of-sequence token; a path stops after it (its descendants stay empty in
      'fixed' mode; EPTree may still branch before it).
    pad_id: token of the masked columns.
    temperature: logits are divided by it (traceable).
    branch_at: 'fixed', 'step', 'entropy' or 'surprisal'.
    min_split: EPTree's first allowed branch column (>= 1: the first token of a segment is
      never a branch point, as in the official code).
    sep_id: the step separator token of `branch_at='step'` (kept as the segment's last token).

  Returns:
    `TreeSamples`.
  """
  prompts = jnp.asarray(prompts).astype(jnp.int32)
  prompt_mask = jnp.asarray(prompt_mask)
  branching, segment_len = _check(
    policy, prompts, branching, segment_len, branch_at, min_split, eos_id, pad_id, sep_id
  )
  num_prompts, prompt_len = prompts.shape
  depth = len(branching)
  eptree = branch_at in ('entropy', 'surprisal')
  starts = [prompt_len + sum(segment_len[:d]) + (d if eptree else 0) for d in range(depth)]
  size = starts[-1] + segment_len[-1]
  parents = tree_credit.complete_tree(branching)
  offsets = np.cumsum([1] + [int(np.prod(branching[: d + 1])) for d in range(depth)])
  module = policy.module

  def forward(tokens, valid, cache):
    return module.apply({'params': params}, tokens, valid, cache=cache)

  def choose(keys, logits, done):
    scaled = logits / temperature
    logp_all = jax.nn.log_softmax(scaled)
    token = jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)
    logp = jnp.take_along_axis(logp_all, token[:, None], axis=-1)[:, 0]
    ent = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    alive = ~done
    token = jnp.where(alive, token, pad_id)
    logp = jnp.where(alive, logp, 0.0)
    ent = jnp.where(alive, ent, 0.0)
    return token, logp, ent, alive, done | (alive & (token == eos_id))

  cache = transformer.init_cache(module, num_prompts, size)
  out, cache = forward(prompts, prompt_mask, cache)
  logits = sampling._at_last_valid(out.logits, prompt_mask)
  done = jnp.zeros((num_prompts,), jnp.bool_)
  prompt_keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(jnp.arange(num_prompts))
  levels = []
  split = has = refeed = None
  width = 1
  for d in range(depth):
    b, n = branching[d], segment_len[d]
    rep = lambda x, b=b: jnp.repeat(x, b, axis=0)
    cache = cache._replace(
      layers=jax.tree.map(rep, cache.layers), valid=rep(cache.valid), count=rep(cache.count)
    )
    logits, done = rep(logits), rep(done)
    width *= b
    rows = num_prompts * width
    node = offsets[d] + jnp.arange(rows) % width
    if eptree and d > 0:
      split, has, refeed = rep(split), rep(has), rep(refeed)
      col = jnp.arange(size)[None, :]
      drop = (col >= starts[d - 1] + split[:, None] - 1) & (
        col < starts[d - 1] + segment_len[d - 1]
      )
      drop = drop & has[:, None] & cache.valid
      cache = cache._replace(valid=cache.valid & ~drop, count=cache.count - drop.sum(axis=1))
      out, cache = forward(refeed[:, None], has[:, None], cache)
      logits = jnp.where(has[:, None], out.logits[:, 0], logits)
      done = ~has
    node_keys = jax.vmap(jax.random.fold_in)(jnp.repeat(prompt_keys, width, axis=0), node)

    def step(carry, k, node_keys=node_keys):
      cache, logits, done, seg_done = carry
      keys = jax.vmap(lambda kk: jax.random.fold_in(kk, k))(node_keys)
      token, logp, ent, alive, _ = choose(keys, logits, done | seg_done)
      if sep_id is not None:
        seg_done = seg_done | (alive & (token == sep_id))
      done = done | (alive & (token == eos_id))
      out, cache = forward(token[:, None], alive[:, None], cache)
      logits = jnp.where(alive[:, None], out.logits[:, 0], logits)  # after the last valid token
      return (cache, logits, done, seg_done), (token, logp, ent, alive)

    seg0 = jnp.zeros_like(done)
    (cache, logits, done, _), ys = jax.lax.scan(step, (cache, logits, done, seg0), jnp.arange(n))
    toks, logps, ents, alives = (y.T for y in ys)
    keep_split = jnp.full((rows,), n, jnp.int32)
    if eptree and d < depth - 1:
      score = ents if branch_at == 'entropy' else -logps
      cand = alives & (jnp.arange(n) >= min_split)[None, :]
      split = jnp.argmax(jnp.where(cand, score, -jnp.inf), axis=1).astype(jnp.int32)
      has = jnp.any(cand, axis=1)
      refeed = jnp.take_along_axis(toks, jnp.maximum(split - 1, 0)[:, None], axis=1)[:, 0]
      keep_split = jnp.where(has, split, n)
    levels.append((toks, logps, ents, alives, keep_split, node))

  # Expand every level to the leaves and assemble the responses.
  num_leaves = int(np.prod(branching))
  cols = {k: [] for k in ('tok', 'logp', 'ent', 'mask', 'node')}
  node_valid = jnp.zeros((num_prompts, len(parents)), jnp.bool_).at[:, 0].set(True)
  splits = jnp.full((num_prompts, len(parents)), 0, jnp.int32)
  for d, (toks, logps, ents, alives, keep_split, node) in enumerate(levels):
    n = segment_len[d]
    kept = alives & (jnp.arange(n)[None, :] < keep_split[:, None])
    per_prompt = toks.shape[0] // num_prompts
    ids = node.reshape(num_prompts, per_prompt)
    node_valid = node_valid.at[jnp.arange(num_prompts)[:, None], ids].set(
      kept.any(axis=1).reshape(num_prompts, per_prompt)
    )
    splits = splits.at[jnp.arange(num_prompts)[:, None], ids].set(
      keep_split.reshape(num_prompts, per_prompt)
    )
    up = num_leaves // per_prompt
    grow = lambda x, up=up: jnp.repeat(x, up, axis=0)
    cols['tok'].append(grow(toks))
    cols['logp'].append(grow(logps))
    cols['ent'].append(grow(ents))
    cols['mask'].append(grow(kept))
    cols['node'].append(grow(jnp.broadcast_to(node[:, None], toks.shape)))
  mask = jnp.concatenate(cols['mask'], axis=1)
  order = jnp.argsort(~mask, axis=1, stable=True)
  move = lambda x: jnp.take_along_axis(jnp.concatenate(x, axis=1), order, axis=1)
  mask = jnp.take_along_axis(mask, order, axis=1)
  responses = jnp.where(mask, move(cols['tok']), pad_id)
  log_probs = jnp.where(mask, move(cols['logp']), 0.0).astype(jnp.float32)
  entropies = jnp.where(mask, move(cols['ent']), 0.0).astype(jnp.float32)
  node_ids = jnp.where(mask, move(cols['node']), -1).astype(jnp.int32)
  generated = sum(lv[3].reshape(num_prompts, -1).sum(axis=1) for lv in levels)
  rep_p = lambda x: jnp.repeat(x, num_leaves, axis=0)
  return TreeSamples(
    tokens=jnp.concatenate([rep_p(prompts), responses], axis=1),
    valid=jnp.concatenate([rep_p(prompt_mask), mask], axis=1),
    responses=responses,
    log_probs=log_probs,
    entropies=entropies,
    mask=mask,
    lengths=mask.sum(axis=1).astype(jnp.int32),
    node_ids=node_ids,
    parents=jnp.asarray(parents),
    node_valid=node_valid,
    splits=splits,
    generated=generated.astype(jnp.int32),
  )
