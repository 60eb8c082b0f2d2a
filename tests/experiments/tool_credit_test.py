"""experiments/tool_credit: config validation, the verdict rules, a smoke CLI run.

The smoke run is a subprocess with JAX_DISABLE_MOST_OPTIMIZATIONS=1 (compile time dominates)
and a timeout.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import tool_credit as config_mod
from experiments import tool_credit as tc
from jaxca import report
from jaxca import runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 900


def test_configs_validate_and_default_arms():
  for arg in (None, 'smoke', 'pilot', 'full'):
    tc.validate(config_mod.get_config(arg))
  c = config_mod.get_config()
  assert list(c.run_arms) == ['grpo', 'matchtir_km', 'matchtir_ot', 'turn_gae',
                              report.NOISE_FLOOR_ARM]  # fmt: skip
  assert len(c.seeds) >= 4 and c.baseline == 'grpo'
  assert tc.arm_estimator(c, 'matchtir_km').name == 'matchtir'
  assert tc.arm_estimator(c, 'turn_gae').name == 'turn_gae | whiten'
  assert c.arms.matchtir_km.assignment == 'km' and c.arms.matchtir_ot.assignment == 'ot'
  full = config_mod.get_config('full')
  assert 'mars_km' in full.run_arms and tc.arm_estimator(full, 'mars_km').name == 'mars | whiten'
  gae = tc.arm_estimator(c, 'turn_gae')
  assert float(gae.hparams['terms'][0]['gamma']) == 1.0


@pytest.mark.parametrize(
  'override, match',
  [
    (lambda c: c.arms.matchtir_km.update(assignment='hungarian'), 'assignment'),
    (lambda c: c.arms.grpo.update(estimator='nope'), 'arms.grpo.estimator'),
    (lambda c: c.update(run_arms=('grpo', 'mars')), 'not in config.arms'),
    (lambda c: c.rl.update(num_minibatches=3), 'must divide'),
    (lambda c: c.env.update(error_rate=1.5), 'config.env'),
    (lambda c: c.data.update(num_train=10_000), 'config.data'),
    (lambda c: c.policy.update(max_len=8), 'max_len'),
    (lambda c: c.data.update(num_val=400), 'num_val'),
    (lambda c: c.warmstart.update(p_opt=1.5), 'warmstart.p_opt'),
    (lambda c: c.warmstart.update(max_steps=0), 'warmstart.num_demos'),
  ],
)
def test_bad_configs_are_refused_with_one_line(override, match):
  c = config_mod.get_config()
  override(c)
  with pytest.raises(runs.ConfigError, match=match) as e:
    tc.validate(c)
  assert '\n' not in str(e.value)


def _summary(finals, precision=None, warm=0.1):
  return {
    k: dict(warm=warm, final=v, precision=(precision or {}).get(k, 0.5), f1=v)
    for k, v in finals.items()
  }


def test_verdict_confirms_only_with_four_seeds_won_beyond_the_spread():
  seeds = [0, 1, 2, 3]
  finals = {('grpo', s): 0.40 + 0.01 * s for s in seeds}
  finals.update({('matchtir_km', s): 0.70 + 0.01 * s for s in seeds})
  finals.update({('matchtir_ot', s): 0.69 + 0.02 * s for s in seeds})
  finals.update({(report.NOISE_FLOOR_ARM, s): 0.1 for s in seeds})
  arms = ['grpo', 'matchtir_km', 'matchtir_ot', report.NOISE_FLOOR_ARM]
  text = tc.verdict(_summary(finals), seeds, arms)
  assert '**Gate**: **PASSED**' in text
  assert 'beats outcome-only GRPO on accuracy**: **CONFIRMED**' in text
  assert 'on call precision**: **REFUTED**' in text  # equal precision: gap 0
  assert 'on call F1 (official score)**: **CONFIRMED**' in text
  assert 'soft (OT) on accuracy**: **REFUTED**' in text  # within the seed spread
  three = tc.verdict(_summary(finals), seeds[:3], arms)
  assert 'GRPO on accuracy**: **INCONCLUSIVE**' in three


def test_claims_untestable_when_grpo_does_not_learn():
  seeds = [0, 1]
  finals = {('grpo', s): 0.12 for s in seeds}
  finals.update({('matchtir_km', s): 0.8 for s in seeds})
  text = tc.verdict(_summary(finals), seeds, ['grpo', 'matchtir_km'])
  assert '**Gate**: **FAILED**' in text and 'UNTESTABLE' in text
  assert 'Hard (KM)' not in text  # the OT arm did not run: no such claim


def test_splits_carve_validation_from_train_disjoint_from_test():
  c = config_mod.get_config('smoke')
  env = tc.make_env(c)
  train, val, test = tc.make_splits(c, env)
  assert len(train['x0']) == c.data.num_train - c.data.num_val and len(val['x0']) == c.data.num_val
  key = lambda d: {(int(d['x0'][i]), *d['ops'][i], *d['operands'][i]) for i in range(len(d['x0']))}  # noqa: E731
  assert not key(train) & key(val) and not key(val) & key(test) and not key(train) & key(test)


def test_warm_start_is_cached_by_key_and_a_stale_cache_is_refused(tmp_path, monkeypatch):
  c = config_mod.get_config('smoke')
  env = tc.make_env(c)
  train, val, _ = tc.make_splits(c, env)
  params, info = tc.warm_start(c, env, train, val, str(tmp_path))
  assert info['steps'] == c.warmstart.max_steps and len(info['curve']) == 2
  assert 0.0 <= info['validation_accuracy'] <= 1.0 and info['demo_calls'] > 0.0
  with open(tmp_path / 'warmstart_curve.csv') as f:
    assert f.readline().strip() == 'step,validation_greedy_accuracy'
  monkeypatch.setattr(tc.warmstart, 'sft_minibatches', lambda *a, **k: pytest.fail('retrained'))
  again, info2 = tc.warm_start(c, env, train, val, str(tmp_path))
  assert info2['key'] == info['key']
  jax.tree.map(np.testing.assert_array_equal, again, params)
  c.warmstart.update(p_opt=0.5)
  with pytest.raises(runs.ConfigError) as err:
    tc.warm_start(c, env, train, val, str(tmp_path))
  assert '\n' not in str(err.value) and 'warmstart.p_opt' in str(err.value)


@pytest.mark.slow
def test_smoke_cli_runs_every_arm(tmp_path):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1', JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'experiments.tool_credit', '--config',
         'configs/tool_credit.py:smoke', '--workdir', str(tmp_path)]  # fmt: skip
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'tool_credit: final held-out accuracy' in proc.stdout
  for name in ('results.md', 'metrics.jsonl', 'curves.png', 'config.json', 'done.json'):
    assert os.path.exists(tmp_path / name), name
  text = (tmp_path / 'results.md').read_text()
  c = config_mod.get_config('smoke')
  for arm in c.run_arms:
    assert f'| {arm} | 0 |' in text, arm
  assert '## Reading' in text and '**Gate**' in text and 'not a result' in text
  assert 'noisy scripted demonstrations' in text and 'validation accuracy' in text
  assert os.path.exists(tmp_path / 'warmstart_curve.csv')
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  by = {a: [r for r in records if r['arm'] == a] for a in c.run_arms}
  for a in c.run_arms:
    assert [r['iteration'] for r in by[a]] == list(range(c.rl.iterations + 1))
    assert all('eval_accuracy' in r and 'eval_precision' in r for r in by[a])
  # One warm start and the same batches for every arm: the policy-only arms (the value head
  # adds parameters) start from the same evaluation and the same first rollout.
  plain = [a for a in c.run_arms if not c.arms[a].get('value_head', False)]
  assert len({by[a][0]['eval_accuracy'] for a in plain}) == 1
  assert len({by[a][1]['calls'] for a in plain}) == 1  # the first rollout is the same
