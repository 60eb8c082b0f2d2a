"""experiments/token_credit.py: the configs, the gate and Part A's rule, and a smoke run via its
CLI (Part B arms, Part A diagnostics, results.md). The smoke run is a subprocess with
JAX_DISABLE_MOST_OPTIMIZATIONS=1 (compile time dominates) and a timeout.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import common
from configs import token_credit as config_mod
from experiments import token_credit as tce
from jaxca import report
from jaxca import runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 600


def test_configs_validate_and_the_default_follows_the_protocol():
  for arg in (None, 'smoke', 'pilot', 'full'):
    tce.validate(config_mod.get_config(arg))
  c = config_mod.get_config()
  assert len(c.seeds) >= 4 and c.rl.iterations >= 150
  assert c.run_arms[:2] == ('grpo', report.NOISE_FLOOR_ARM)
  assert c.arms[report.NOISE_FLOOR_ARM].estimator == 'shuffled_reward'
  for key in ('num_epochs', 'num_minibatches', 'prompts', 'group_size', 'eval_every'):
    assert c.rl[key] == common.ARITH_RL_RECIPE[key], key
  assert c.optim.lr == common.ARITH_RL_RECIPE['lr']
  assert c.loss.ent_coef == common.ARITH_RL_RECIPE['ent_coef']
  assert c.warmstart.band[0] == 0.35
  assert set(config_mod.get_config('full').run_arms) == set(c.arms)


@pytest.mark.parametrize(
  'override, match',
  [
    (lambda c: c.update(run_arms=('gtpo', 'shuffled_reward')), "must include 'grpo'"),
    (lambda c: c.update(run_arms=('grpo', 'sapo')), 'not in config.arms'),
    (lambda c: c.update(run_arms=('grpo', 'grpo')), 'repeats'),
    (lambda c: c.update(seeds=()), 'seeds is empty'),
  ],
)
def test_bad_configs_are_refused_with_one_line(override, match):
  c = config_mod.get_config()
  override(c)
  with pytest.raises(runs.ConfigError, match=match) as e:
    tce.validate(c)
  assert '\n' not in str(e.value)


def _records(finals, warm=0.4):
  """Synthetic Part B records: {(arm, seed): final exact match}, one warm start."""
  out = []
  for (a, s), final in finals.items():
    out.append(dict(arm=a, seed=s, iteration=0, wall=0.0, eval_exact_match=warm))
    for it in (1, 2):
      rec = dict(arm=a, seed=s, iteration=it, wall=float(it), accuracy=0.5, host_s=0.25)
      rec.update(adv_value=1.0, adv_step=0.5, adv_eos=0.25)
      if it == 2:
        rec.update(eval_exact_match=final, eval_final_answer=final + 0.1)
      out.append(rec)
  return out


def _diag():
  """A Part A result whose own rules read: FAI not confirmed, GTPO negative."""
  row = dict(precision=0.2, hit1=0.1, format_share=0.1)
  rows_d = {k: dict(row) for k in ('GRPO', 'GTPO', 'FAI-top-20%', 'entropy')}
  rows_d['_chance_hit1'] = 0.1
  return dict(rows_d=rows_d, rows_c=[dict(name='value step 1', fai_global=0.3)], fai_spearman=0.1)


SEEDS = [0, 1, 2, 3]
ARMS = ['grpo', 'shuffled_reward', 'gtpo', 'hicra_official']


def _summary(grpo, noise):
  finals = {}
  for s in SEEDS:
    finals.update({('grpo', s): grpo[s], ('shuffled_reward', s): noise[s]})
    finals.update({('gtpo', s): 0.3, ('hicra_official', s): 0.3})
  return tce.part_b_summary(_records(finals), SEEDS, ARMS)


@pytest.mark.parametrize(
  'grpo, noise, passed',
  [
    ([0.5] * 4, [0.2] * 4, True),  # +10 points, above the noise floor: claims are judged
    ([0.5, 0.5, 0.5, 0.47], [0.2] * 4, False),  # one seed gains 7 < 8 points
    ([0.5] * 4, [0.2, 0.2, 0.2, 0.55], False),  # one seed below the noise floor
  ],
)
def test_claims_are_untestable_unless_grpo_beats_warm_start_and_noise_floor(grpo, noise, passed):
  summary = _summary(grpo, noise)
  gate = tce.part_b_gate(summary, SEEDS, ARMS)
  assert gate.passed == passed
  assert 'noise floor final %' in gate.numbers  # the shuffled-reward arm is the noise floor
  text = tce.expected_vs_observed(_diag(), summary, SEEDS, ARMS)
  verdicts = [line for line in text.splitlines() if line.startswith('- **') and 'Gate' not in line]
  assert len(verdicts) == 4  # FAI, separators, GTPO, HICRA
  untestable = ['**UNTESTABLE**' in line for line in verdicts]
  assert all(untestable) if not passed else not any(untestable)
  if passed:  # HICRA and GTPO 20 points below GRPO in every seed
    assert '**HICRA (hicra_official): credit to planning tokens helps**: **REFUTED**' in text


def test_part_b_tables_give_per_seed_values_mean_and_bootstrap_ci():
  summary = _summary([0.5, 0.6, 0.5, 0.6], [0.2] * 4)
  assert summary[('grpo', 1)]['final'] == 0.6 and summary[('grpo', 1)]['start'] == 0.4
  assert summary[('grpo', 1)]['s_per_iter'] == 1.0
  assert summary[('grpo', 1)]['split_s_per_iter'] == (0.0, 0.25, 0.0)
  assert summary[('grpo', 1)]['final_answer'] == pytest.approx(0.7)
  config = config_mod.get_config()
  text = tce.table_b(summary, SEEDS, ARMS, config)
  assert report.fmt_ci([0.5, 0.6, 0.5, 0.6], pct=True) in text  # final, mean and CI
  assert report.fmt_ci([0.1, 0.2, 0.1, 0.2], pct=True) in text  # gain over the warm start
  runs_text = tce.table_b_runs(summary, SEEDS, ARMS)
  assert '| grpo | 1 | 2 | 2 | 1.000 (0.000 / 0.250 / 0.000) | 40.0 → 60.0 | +0.0 |' in runs_text
  assert '| gtpo | 1 | 2 | 2 | 1.000 (0.000 / 0.250 / 0.000) | 40.0 → 30.0 | -30.0 |' in runs_text


@pytest.mark.parametrize('final, runs_', [(0.45, True), (0.4, False), (0.3, False)])
def test_part_a_trained_side_runs_only_on_a_grpo_checkpoint_that_improved(final, runs_):
  summary = _summary([final] * 4, [0.2] * 4)
  ok, rule, numbers = tce.trained_side(summary, 0, 0.0)
  assert ok == runs_
  assert 'beats the warm start' in rule and numbers['checkpoint warm start %'] == 40.0
  if not runs_:
    text = tce.trained_untestable(summary, SEEDS, ARMS, rule, numbers)
    assert "**Part A's claims on a trained checkpoint**: **UNTESTABLE**" in text
    assert f'checkpoint final % {round(100 * final, 1):g}' in text


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
  arms = ('grpo', 'shuffled_reward', 'gtpo', 'gtpo_separate', 'grpo_s', 'hicra_fai')
  for arm in arms + ('hicra_official',):
    assert f'| {arm} |' in text, arm
  assert 'noise floor final %' in text  # the gate reads the shuffled-reward arm
  # The smoke config's min_gain > 1: Part A's trained side reads UNTESTABLE by rule.
  assert "**Part A's claims on a trained checkpoint**: **UNTESTABLE**" in text
  assert not os.path.exists(tmp_path / 'part_a_grpo.npz')
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
