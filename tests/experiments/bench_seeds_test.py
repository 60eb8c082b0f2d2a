"""experiments/bench_seeds.py on its smoke config: the batched and sequential runs of an
estimator-zoo arm end in the same states, and the report is written (no timing asserts)."""

import json

import jax
import pytest

from configs import bench_seeds as config_module
from experiments import bench_seeds


@pytest.mark.slow
def test_smoke_batched_equals_sequential(tmp_path):
  prev = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    result = bench_seeds.run(config_module.get_config('smoke'), str(tmp_path))
  finally:
    jax.config.update('jax_disable_most_optimizations', prev)
  assert (result['seeds'], result['iterations']) == (2, 2)
  assert result['max_abs_diff'] < 1e-4  # the same computation, batched or not
  assert result['speedup']['min'] > 0
  assert json.load(open(tmp_path / 'results.json'))['arm'] == 'grpo'
  assert 'speed-up per round' in open(tmp_path / 'results.md').read()


def test_config_errors():
  c = config_module.get_config('smoke')
  c.arm = 'nope'
  with pytest.raises(bench_seeds.runs.ConfigError, match='config.arm'):
    bench_seeds.validate(c)
  c = config_module.get_config('smoke')
  c.num_seeds = 0
  with pytest.raises(bench_seeds.runs.ConfigError, match='num_seeds'):
    bench_seeds.validate(c)
