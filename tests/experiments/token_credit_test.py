"""Smoke run of experiments/token_credit.py (Part B arms, Part A diagnostics, results.md) via its
CLI. A subprocess with JAX_DISABLE_MOST_OPTIMIZATIONS=1 (compile time dominates) and a timeout.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 600


@pytest.mark.slow
def test_smoke_cli_writes_tables_figures_and_verdicts(tmp_path):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1', JAX_PLATFORMS='cpu')
  cmd = [
    sys.executable,
    '-m',
    'experiments.token_credit',
    '--config',
    'configs/token_credit.py:smoke',
    '--workdir',
    str(tmp_path),
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'token_credit: warm start' in proc.stdout
  for name in ('results.md', 'metrics.jsonl', 'f7_heatmaps.png', 'f_part_b.png'):
    assert os.path.exists(tmp_path / name), name
  text = (tmp_path / 'results.md').read_text()
  for arm in ('grpo', 'gtpo', 'gtpo_separate', 'grpo_s', 'hicra_fai', 'hicra_official'):
    assert f'| {arm} |' in text, arm
  for method in ('GTPO', 'FAI-top-20%', 'HICRA-sep', 'WAAD-peak', 'oracle'):
    assert f'| {method} |' in text, method
  assert '## Expected vs observed' in text and 'FAI marks the answer-determining' in text
  assert '| value step 1 |' in text and '| STEP |' in text and '| global |' in text
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  hicra = [r for r in records if r['arm'] == 'hicra_fai' and r['iteration'] > 0]
  assert len(hicra) == 2 and all('adv_value' in r for r in hicra)
  d = np.load(tmp_path / 'part_a_warm.npz')
  mask = d['mask']
  # Oracle A* telescopes: per response, the sum of A* is R - V(prompt).
  lp_value = d['values'][:, 0]
  np.testing.assert_allclose(
    (d['a_star'] * mask).sum(1), np.where(mask.any(1), d['correct'] - lp_value, 0.0), atol=1e-5
  )
  assert int(d['mc_states']) <= int(d['mc_slots'])
