"""jaxca.lm.tree: the tree Collect feeds the learner (old log-probs = sampler's, tree fields)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxca import estimators
from jaxca import lm
from jaxca import tasks
from jaxca.credit import tree
from jaxca.lm import rollout as rollout_lib
from jaxca.lm import tree as tree_lm
from jaxca.networks import transformer

TASK = tasks.make('arith', num_steps=2, modulus=5)  # prompt 7 tokens, response 4
BRANCHING, SEG = (2, 2), (2, 2)


def _policy():
  cfg = ml_collections.ConfigDict(
    dict(width=16, depth=1, num_heads=2, max_len=12, dtype='float32', value_head=False)
  )
  return transformer.make_policy(cfg, vocab_size=TASK.vocab.size)


def test_collect_matches_the_score_and_fills_tree_fields():
  policy = _policy()
  params = policy.init(jax.random.key(0))
  collect = tree_lm.make_tree_collect(policy, TASK, branching=BRANCHING, segment_len=SEG)
  batch = {k: jnp.asarray(v) for k, v in TASK.generate(0, 3).items()}
  data = jax.jit(collect.fn)(params, None, batch, jax.random.key(1))
  m = np.asarray(data.mask)
  np.testing.assert_allclose(
    np.asarray(data.log_probs)[m], np.asarray(data.rollout_log_probs)[m], atol=1e-4
  )
  assert data.extras['parent_ids'].shape == (12, len(tree.complete_tree(BRANCHING)))
  gen = tree_lm.generated_tokens(data)
  assert 0 < gen <= float(np.asarray(data.lengths).sum())  # shared prefixes once
  ids = np.asarray(data.extras['node_ids'])
  assert np.all((ids >= 0) == m)


@pytest.mark.parametrize('spec', ['spo_tree | whiten', 'treerl', 'tree_step'])
def test_one_learner_update_runs(spec):
  policy = _policy()
  params = policy.init(jax.random.key(0))
  tx = optax.adam(1e-3)
  collect = tree_lm.make_tree_collect(policy, TASK, branching=BRANCHING, segment_len=SEG)
  phases = lm.make_rl_phases(
    policy,
    TASK,
    estimators.make(spec),
    tx,
    group_size=4,
    collect=collect,
    score_fn=rollout_lib.make_score_fn(policy, TASK.prompt_len),
  )
  state = lm.init_from_params(params, tx)
  batch = {k: jnp.asarray(v) for k, v in TASK.generate(0, 2).items()}
  data = phases.collect(state, batch, jax.random.key(1))
  state, metrics = phases.update(state, data, {}, jax.random.key(2))
  assert np.isfinite(float(metrics['loss'])) and int(state['step']) == 1
