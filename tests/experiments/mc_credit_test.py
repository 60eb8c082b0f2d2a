"""Smoke run of experiments/mc_credit.py (all arms, the value probe, results.md) via its CLI.

A subprocess with JAX_DISABLE_MOST_OPTIMIZATIONS=1 (compile time dominates) and a timeout.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 900


@pytest.mark.slow
def test_smoke_cli_writes_tables_figures_and_verdicts(tmp_path):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1', JAX_PLATFORMS='cpu')
  cmd = [
    sys.executable,
    '-m',
    'experiments.mc_credit',
    '--config',
    'configs/mc_credit.py:smoke',
    '--workdir',
    str(tmp_path),
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'mc_credit: warm start' in proc.stdout
  for name in ('results.md', 'metrics.jsonl', 'f6_learning.png', 'f_probe.png', 'probe.json'):
    assert os.path.exists(tmp_path / name), name
  text = (tmp_path / 'results.md').read_text()
  for arm in ('grpo', 'ppo_gae', 'vineppo_k9', 'spo_chain_k9'):
    assert f'| {arm} |' in text
  assert '## Expected vs observed' in text and '"MC credit beats the value network"' in text
  assert '| critic | 1 |' in text and 'step-error AUC' in text
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  mc_recs = [r for r in records if r['arm'] == 'vineppo_k9' and r['iteration'] > 0]
  assert len(mc_recs) == 2 and all(r['mc_tokens_iter'] > 0 for r in mc_recs)
  assert all(r['mc_states'] <= r['mc_state_slots'] for r in mc_recs)  # de-duplicated
  spo = [r for r in records if r['arm'] == 'spo_chain_k9' and r['iteration'] > 0]
  assert all(0.0 <= r['loss_token_frac'] <= 1.0 for r in spo)
  gae = [r for r in records if r['arm'] == 'ppo_gae' and r['iteration'] > 0]
  assert all('critic_value_loss' in r for r in gae)
