"""End-to-end tests of experiments/llm_rl.py on the smoke config (a tiny random Qwen2-shaped
checkpoint, tokenizer and dataset built by the run itself): result files, resume equals an
uninterrupted run, config errors, and the command line."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import llm_rl as config_module
from experiments import llm_rl
from jaxca import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True, scope='module')
def _fast_compile():
  saved = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', saved)


def _config(**rl):
  c = config_module.get_config('smoke')
  c.rl.update(rl)
  c.lock()
  return c


@pytest.mark.slow
def test_smoke_run_and_resume(tmp_path):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  line = llm_rl.run(_config(), a)
  assert 'held-out final-answer accuracy' in line and 'results.md' in line
  for f in ('results.md', 'learning_curve.png', 'metrics.jsonl'):
    assert os.path.exists(os.path.join(a, f)), f
  assert sorted(os.listdir(os.path.join(a, 'assets'))) == ['data', 'model']
  recs = metrics.read(a)
  assert [r['step'] for r in recs] == [0, 1, 2]
  assert all('eval_final_answer' in r and 'eval_exact_match' in r for r in recs)
  # Resume to 3 steps == 3 steps at once.
  resumed = llm_rl.train(_config(steps=3), a)
  fresh = llm_rl.train(_config(steps=3), b)
  init = llm_rl.train(_config(steps=0 + 1), None)  # no workdir: nothing written
  for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(fresh)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
  assert int(resumed['step']) == 3
  moved = [
    not np.allclose(x, y)
    for x, y in zip(jax.tree.leaves(init['params']), jax.tree.leaves(fresh['params']))
  ]
  assert any(moved)
  assert [r['step'] for r in metrics.read(a)] == [0, 1, 2, 3]


def test_config_errors(tmp_path):
  c = config_module.get_config()
  with pytest.raises(llm_rl.ConfigError, match='model.path'):
    llm_rl.validate(c)
  c.model.path = str(tmp_path)
  with pytest.raises(llm_rl.ConfigError, match='data.path'):
    llm_rl.validate(c)
  c.data.path = str(tmp_path / 'missing.jsonl')
  with pytest.raises(llm_rl.ConfigError, match='does not exist'):
    llm_rl.validate(c)
  c = config_module.get_config('smoke')
  c.credit.estimator = 'nope'
  with pytest.raises(llm_rl.ConfigError, match='credit'):
    llm_rl.validate(c)
  c = config_module.get_config('smoke')
  c.rl.prompts_per_step = 3
  with pytest.raises(llm_rl.ConfigError, match='divisible'):
    llm_rl.validate(c, device_count=2)
  c = config_module.get_config('smoke')
  c.mesh.fsdp = 3
  with pytest.raises(llm_rl.ConfigError, match='fsdp'):
    llm_rl.validate(c, device_count=1)


def test_cli_error_is_one_line(tmp_path):
  proc = subprocess.run(
    [sys.executable, '-m', 'experiments.llm_rl', '--config', 'configs/llm_rl.py'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, PYTHONPATH=ROOT),
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'model.path' in proc.stderr and 'Traceback' not in proc.stderr
