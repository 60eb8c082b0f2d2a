"""The learner's tree rollout: `make_tree_collect`, a `rollout.Collect` over `sample_tree`.

Every prompt grows one tree (`tree_sampling.sample_tree`); its L = prod(branching) leaves
are the group of the prompt (rows `p * L + l`, so the learner runs with `group_size=L`), and
the Trajectory gets the tree fields the `estimators.tree` stages read, `node_ids` [B, N] and
`parent_ids` [B, N], from the collect's extras. `extras['generated']` [B] float32 spreads
the tokens sampled for a tree evenly over its rows (their sum is the tree's cost, shared
prefixes counted once); `generated_tokens` gives the batch's total.
"""

import jax.numpy as jnp

from jaxca import tree_sampling
from jaxca.lm import rewards as rewards_lib
from jaxca.lm import rollout as rollout_lib


def make_tree_collect(
  policy,
  task,
  *,
  branching,
  segment_len,
  temperature: float = 1.0,
  reward: str = 'outcome',
  branch_at: str = 'fixed',
  min_split: int = 1,
  sep_id=None,
) -> rollout_lib.Collect:
  """The tree `Collect` (see the module docstring); statistics as `make_sample_collect`'s.

  `branching`, `segment_len`, `branch_at`, `min_split` and `sep_id` go to `sample_tree`.
  """
  branching, segment_len = tuple(branching), tuple(segment_len)
  leaves = 1
  for b in branching:
    leaves *= b
  num_new = sum(segment_len)
  if num_new != task.response_len:
    raise ValueError(
      f'sum(segment_len) must be the task response length {task.response_len}; got {num_new}.'
    )
  voc = task.vocab

  def collect(params, ref_params, batch, key, critic_params=None):
    del critic_params
    prompts = batch['prompts']
    s = tree_sampling.sample_tree(
      policy,
      params,
      key,
      prompts,
      rewards_lib.prompt_mask(task, prompts),
      branching=branching,
      segment_len=segment_len,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
      temperature=temperature,
      branch_at=branch_at,
      min_split=min_split,
      sep_id=sep_id,
    )
    rows = s.mask.shape[0]
    extras = dict(
      node_ids=s.node_ids,
      parent_ids=jnp.broadcast_to(s.parents, (rows, s.parents.shape[0])),
      generated=jnp.repeat(s.generated.astype(jnp.float32) / leaves, leaves),
    )
    return rollout_lib.score_samples(
      policy, task, reward, params, ref_params, batch, s, key, leaves, temperature, extras
    )

  providers = {
    'node_ids': lambda ctx: {'node_ids': ctx.extras['node_ids']},
    'parent_ids': lambda ctx: {'parent_ids': ctx.extras['parent_ids']},
  }
  stats = rollout_lib.sample_stats(task, leaves)
  return rollout_lib.Collect(collect, stats, providers, num_new, voc.eos_id)


def generated_tokens(data) -> float:
  """Tokens sampled for a tree `RolloutData` (shared prefixes once), or its response tokens."""
  extras = data.extras or {}
  if 'generated' in extras:
    return float(jnp.sum(extras['generated']))
  return float(jnp.sum(data.lengths))
