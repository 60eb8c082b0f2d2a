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


def test_wall_budget_caps_at_the_named_arms_wall_of_the_same_seed():
  from configs import mc_credit as config_lib
  from jaxca import arms

  config = config_lib.get_config()
  walls = {('grpo', 0): 50.0, ('grpo', 1): 2000.0}
  assert arms.wall_budget(config, 'grpo', walls, 0) == config.rl.max_wall_s
  assert arms.wall_budget(config, 'vineppo_k9', walls, 0) == 50.0
  assert arms.wall_budget(config, 'vineppo_k9', walls, 1) == config.rl.max_wall_s


def test_validate_refuses_a_wall_budget_arm_that_runs_later():
  from configs import mc_credit as config_lib
  from experiments import mc_credit
  from jaxca import runs

  config = config_lib.get_config()
  config.arms.grpo.wall_budget = 'vineppo_k9'
  with pytest.raises(runs.ConfigError, match='arms.grpo.wall_budget'):
    mc_credit.validate(config)
  config = config_lib.get_config()
  config.run_arms = ('grpo', 'nope')
  with pytest.raises(runs.ConfigError, match='config.run_arms'):
    mc_credit.validate(config)


def test_summarize_reads_capped_runs_at_their_end_and_ignores_the_noise_floor_for_budgets():
  from experiments import mc_credit

  def recs(arm, walls, accs, step=5):
    out = []
    for i, (w, a) in enumerate(zip(walls, accs)):
      out.append(
        dict(
          arm=arm,
          seed=0,
          iteration=i * step,
          wall=w,
          tokens=10.0 * i,
          policy_tokens=10.0 * i,
          mc_tokens=0.0,
          eval_exact_match=a,
          accuracy=a,
          sample_s=1.0,
          host_s=0.0,
          train_s=0.0,
        )
      )
    return out

  records = (
    recs('grpo', [0, 10, 20, 30], [0.4, 0.5, 0.6, 0.7])
    + recs('shuffled_reward', [0, 1, 2, 3], [0.4, 0.2, 0.1, 0.0])  # shortest wall: ignored
    + recs('vineppo_k9', [0, 16, 31], [0.4, 0.55, 0.65])  # capped at 30 s, ends at 31 s
  )
  arms = ['grpo', 'shuffled_reward', 'vineppo_k9']
  out = mc_credit.summarize(records, [0], arms, capped={('vineppo_k9', 0)})
  assert out[('grpo', 0)]['equal'] == dict(wall=30, tokens=20.0, iteration=10)
  assert out[('vineppo_k9', 0)]['acc_equal_wall'] == 0.65  # its final, not the 16 s reading
  assert out[('grpo', 0)]['acc_equal_iter'] == 0.6
  assert out[('vineppo_k9', 0)]['baseline_at_final_iter'] == 0.6  # GRPO at iteration 10
  uncapped = mc_credit.summarize(records, [0], arms)
  assert uncapped[('vineppo_k9', 0)]['acc_equal_wall'] == 0.55
