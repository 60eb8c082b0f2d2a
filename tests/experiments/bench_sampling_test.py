"""Smoke test of the sampling benchmark (structure and agreement; no timing asserts)."""

import json
import os

import pytest

from configs import bench_sampling as bench_config
from experiments import bench_sampling


@pytest.mark.slow
def test_smoke_writes_results(tmp_path):
  cfg = bench_config.get_config('smoke')
  result = bench_sampling.run(cfg, str(tmp_path))
  with open(os.path.join(tmp_path, 'results.json')) as f:
    saved = json.load(f)
  assert set(saved['contenders']) == {'kv_cache', 'recompute'}
  for row in saved['contenders'].values():
    assert len(row['times_s']) == cfg.reps and row['median_s'] > 0
    assert row['decode_tokens_per_s'] > 0
  assert saved['speedup'] == pytest.approx(result['speedup']) and result['speedup'] > 0
  # Both contenders sample the same tokens from the same keys (the cache changes only speed).
  assert saved['same_tokens_fraction'] == 1.0 and saved['max_abs_log_prob_diff'] < 1e-4
  mc = saved['mc_prefix']
  assert set(mc['contenders']) == {'shared_prefill', 'naive_prefill'}
  assert mc['num_completions'] == cfg.mc_num_prefixes * cfg.mc_num_samples
  assert all(r['completions_per_s'] > 0 for r in mc['contenders'].values())
  assert mc['same_tokens_fraction'] == 1.0 and mc['speedup'] > 0
  with open(os.path.join(tmp_path, 'results.md')) as f:
    text = f.read()
  assert 'python -m experiments.bench_sampling' in text and '| kv_cache |' in text
  assert '| shared_prefill |' in text and 'completions/s' in text
  tree = saved['tree']
  assert set(tree['contenders']) == {'tree', 'independent'}
  assert tree['leaves'] == cfg.num_prompts * 2
  # branching (2, 1) of (3, 3) tokens: at most 3 + 2 * 3 tokens per tree, 2 * 6 independent.
  assert 0 < tree['contenders']['tree']['generated_tokens'] <= cfg.num_prompts * 9
  assert 0 < tree['contenders']['independent']['generated_tokens'] <= cfg.num_prompts * 12
  assert tree['speedup'] > 0 and '| tree |' in text and 'leaves/s' in text


def test_tree_contenders_count_generated_tokens():
  """The tree counts each shared prefix once: at most its nodes' tokens, exactly that when
  no path ends early; independent samples count every row's tokens."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import ml_collections  # noqa: PLC0415

  from jaxca import networks  # noqa: PLC0415

  cfg = ml_collections.ConfigDict(
    dict(width=16, depth=1, num_heads=2, max_len=16, dtype='float32', value_head=False)
  )
  policy = networks.make_policy(cfg, vocab_size=7)
  params = policy.init(jax.random.key(0))
  prompts = jnp.ones((2, 3), jnp.int32)
  out = bench_sampling.tree_contenders(
    policy, params, prompts, prompts > 0, branching=(2, 2), segment_len=(2, 2), eos_id=6,
    pad_id=0,
  )  # fmt: skip
  (tree_fn, tree_tokens), (indep_fn, indep_tokens) = out['tree'], out['independent']
  for seed in range(4):
    tree = tree_fn(jax.random.key(seed))
    n = tree_tokens(tree)
    assert 0 < n <= 2 * (2 * 2 + 4 * 2)  # 2 prompts x (2 nodes + 4 leaves) x 2 tokens
    if not bool(jnp.any(tree.responses == 6)):
      assert n == 2 * (2 * 2 + 4 * 2)
    indep = indep_fn(jax.random.key(seed))
    assert indep_tokens(indep) == int(jnp.sum(indep.mask)) <= 2 * 4 * 4
