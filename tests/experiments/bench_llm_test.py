"""Smoke test of the LLM throughput benchmark (structure and FLOP counts; no timing asserts)."""

import json
import os

import jax
import pytest

from configs import bench_llm as bench_config
from experiments import bench_llm
from jaxca.networks import hf


def test_model_flops_of_the_qwen_shape():
  cfg = hf.HFConfig(family='qwen2', qkv_bias=True, tie_embeddings=True, **bench_config.QWEN2_0_5B)
  # 494M parameters; 2 * (matmul weights incl. the head) FLOPs per token without attention.
  params = bench_llm.num_params(
    jax.eval_shape(hf.make_policy(cfg, max_len=8).init, jax.random.key(0))
  )
  assert 490e6 < params < 500e6
  per_token = bench_llm.model_flops(cfg, 1, 0)
  assert per_token == pytest.approx(2 * (params - 24 * (896 * 2 + 1152) - 896), rel=1e-3)
  assert bench_llm.model_flops(cfg, 1, 100) - per_token == 4 * 24 * 14 * 64 * 100


def test_smoke_writes_every_contender(tmp_path):
  prev = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    result = bench_llm.run(bench_config.get_config('smoke'), str(tmp_path))
  finally:
    jax.config.update('jax_disable_most_optimizations', prev)
  assert set(result['rows']) == {'sample', 'train_step', 'rl_iteration'}
  for row in result['rows'].values():
    assert row['tokens_per_s'] > 0 and row['model_tflops_per_s'] > 0
  assert json.load(open(os.path.join(tmp_path, 'results.json')))['rows']
  assert 'MFU' in open(os.path.join(tmp_path, 'results.md')).read()
