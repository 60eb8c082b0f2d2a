"""experiments/tree_credit.py: smoke run via the CLI, the step-error AUC metric, validation."""

import json
import os
import subprocess
import sys
import types as pytypes

import jax.numpy as jnp
import numpy as np
import pytest

from jaxca import report
from jaxca import runs
from jaxca import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 900


@pytest.mark.slow
def test_smoke_cli_writes_tables_figure_and_verdicts(tmp_path):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1', JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'experiments.tree_credit', '--config']
  cmd += ['configs/tree_credit.py:smoke', '--workdir', str(tmp_path)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ('results.md', 'metrics.jsonl', 'f_tree_credit.png'):
    assert os.path.exists(tmp_path / name), name
  text = (tmp_path / 'results.md').read_text()
  for arm in ('grpo', 'spo_tree', 'treerl', 'spo_chain_k9', 'vineppo_k9'):
    assert f'| {arm} |' in text
  assert '## Expected vs observed' in text and 'SPO-tree > SPO-chain' in text
  recs = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  last = {r['arm']: r for r in recs}
  budget = last['grpo']['tokens']
  for arm in ('spo_tree', 'treerl', 'spo_chain_k9', 'vineppo_k9'):  # equal tokens: stop at it
    prev = [r['tokens'] for r in recs if r['arm'] == arm][-2]
    assert prev < budget and (last[arm]['tokens'] >= budget or last[arm]['iteration'] == 3)
  tree_recs = [r for r in recs if r['arm'] == 'spo_tree' and r['iteration'] > 0]
  assert all(r['policy_tokens'] <= 4 * 12 * r['iteration'] for r in tree_recs)  # 12 per tree


def test_step_auc_metric_matches_report_auc():
  from experiments import tree_credit

  task = tasks.make('arith', num_steps=2, modulus=10, ops='invertible')
  voc = task.vocab
  rng = np.random.default_rng(0)
  resp = rng.integers(voc.num_offset, voc.size, (6, 4)).astype(np.int32)
  resp[:, 1] = voc.step_id
  resp[:, 3] = voc.eos_id
  mask = np.ones((6, 4), bool)
  inter = rng.integers(0, 10, (6, 2)).astype(np.int32)
  inter[:3, 0] = resp[:3, 0] - voc.num_offset  # rows 0-2: step 0 right
  batch = dict(intermediates=jnp.asarray(inter))
  adv = rng.normal(size=(6, 4)).astype(np.float32)
  ctx = pytypes.SimpleNamespace(responses=jnp.asarray(resp), mask=jnp.asarray(mask), batch=batch)
  ctx.steps = task.parse_steps(ctx.responses, ctx.mask)
  targets = pytypes.SimpleNamespace(advantages=jnp.asarray(adv))
  got = float(tree_credit.step_auc_metrics(task)(ctx, None, targets)['step_error_auc'])
  ok = np.asarray(task.step_correct(ctx.responses, ctx.mask, batch))[:, :2] > 0.5
  scores, labels = [], []
  for b in range(6):
    if ok[b].all():
      continue
    first = int(np.argmin(ok[b]))
    for i in range(first + 1):
      scores.append(-adv[b, 2 * i : 2 * i + 2].mean())
      labels.append(i == first)
  assert np.isclose(got, report.auc(scores, labels), atol=1e-6)


def test_validate_refuses_a_tree_that_is_not_the_group():
  from configs import tree_credit as config_lib
  from experiments import tree_credit

  config = config_lib.get_config('smoke')
  tree_credit.validate(config)
  config.tree.branching = (2, 3)
  with pytest.raises(runs.ConfigError, match='group_size'):
    tree_credit.validate(config)


def test_validate_refuses_a_level_with_one_child():
  """A 1-way level would give its tokens 0 credit and its parent their blame."""
  from configs import tree_credit as config_lib
  from experiments import tree_credit

  config = config_lib.get_config()
  config.tree.branching = (2, 2, 2, 1)
  config.tree.segment_len = (2, 2, 2, 2)
  with pytest.raises(runs.ConfigError, match='>= 2 at every level'):
    tree_credit.validate(config)
  tree_credit.validate(config_lib.get_config())
