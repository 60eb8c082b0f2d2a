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
