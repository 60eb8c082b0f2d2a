"""experiments/estimator_zoo.py: configs, the noise-floor stage, summary and verdict, a smoke
CLI run (a subprocess with JAX_DISABLE_MOST_OPTIMIZATIONS=1 and a timeout)."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from configs import estimator_zoo as config_mod
from experiments import estimator_zoo as zoo
from jaxca import estimators
from jaxca import runs
from jaxca import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 900


def test_configs_validate_with_three_seeds_by_default():
  for arg in (None, 'smoke', 'full'):
    zoo.validate(config_mod.get_config(arg))
  c = config_mod.get_config(None)
  assert len(c.seeds) >= 3 and c.baseline == 'grpo' and 'shuffled_reward' in c.run_arms
  # Only the estimator differs between arms.
  assert all(set(c.arms[a]) == {'label', 'credit'} for a in c.run_arms)


@pytest.mark.parametrize(
  'override, match',
  [
    (lambda c: c.arms.grpo.credit.update(estimator='grpo_nvidia'), 'arms.grpo.credit: .*grpo_nemo'),
    (lambda c: c.arms.grpo.credit.update(estimator='gae'), r"also requires \['values'\]"),
    (lambda c: c.update(run_arms=('grpo', 'ppo')), 'not in config.arms'),
    (lambda c: c.update(seeds=()), 'seeds is empty'),
    (lambda c: c.rl.update(num_minibatches=3), 'must divide'),
    (lambda c: c.update(baseline='nope'), 'config.baseline'),
  ],
)
def test_bad_configs_are_refused_with_one_line(override, match):
  c = config_mod.get_config('smoke')
  override(c)
  with pytest.raises(runs.ConfigError, match=match) as e:
    zoo.validate(c)
  assert '\n' not in str(e.value)


def test_shuffled_reward_is_grpo_of_another_groups_outcomes():
  scores = np.array([1, 0, 0, 0, 1, 1, 0, 1], np.float32)
  mask = np.ones((8, 3), bool)
  rewards = np.zeros((8, 3), np.float32)
  rewards[:, -1] = scores
  traj = types.Trajectory(
    rewards=jnp.asarray(rewards),
    mask=jnp.asarray(mask),
    group_ids=jnp.arange(8) // 2,
    num_groups=4,
    groups_contiguous=True,
  )
  got = estimators.make('shuffled_reward')(traj).advantages[:, 0]
  rolled = traj.replace(rewards=jnp.asarray(np.roll(rewards, 2, axis=0)))
  want = estimators.make('grpo')(rolled).advantages[:, 0]
  np.testing.assert_allclose(got, want)


def _records(finals, warm=0.3):
  out = []
  for (a, s), final in finals.items():
    out.append(dict(arm=a, seed=s, iteration=0, wall=0.0, compile_s=1.0, eval_exact_match=warm))
    out.append(dict(arm=a, seed=s, iteration=1, wall=1.0, compile_s=0.0, eval_exact_match=0.4))
    out.append(dict(arm=a, seed=s, iteration=2, wall=2.0, compile_s=0.0, eval_exact_match=final))
  return out


def test_summary_table_and_gated_verdict():
  seeds, arms = [0, 1, 2], ['grpo', 'maxrl', 'shuffled_reward']
  finals = {}
  for s in seeds:
    finals.update({('grpo', s): 0.5, ('maxrl', s): 0.7 + 0.01 * s, ('shuffled_reward', s): 0.3})
  summary = zoo.summarize(_records(finals), seeds, arms, iterations=2)
  # AUC of (0: 0.3, 1: 0.4, 2: 0.5) over 2 steps: (0.3 + 0.4) / 2.
  assert summary[('grpo', 0)]['auc'] == pytest.approx(0.35)
  assert summary[('grpo', 0)]['s_per_step'] == 1.0 and summary[('grpo', 0)]['compile_s'] == 1.0
  c = config_mod.get_config(None)
  text = zoo.table(summary, seeds, arms, c)
  assert '| maxrl | `maxrl` | 71.0 ± 1.0 [95% CI' in text
  verdict = zoo.verdict(summary, seeds, arms, 'grpo')
  assert '**Gate**: **PASSED**' in verdict
  assert '**Some estimator beats grpo in final accuracy**: **CONFIRMED**' in verdict
  # A baseline at its noise floor fails the gate: every claim is untestable.
  for s in seeds:
    finals[('shuffled_reward', s)] = 0.6
  summary = zoo.summarize(_records(finals), seeds, arms, iterations=2)
  assert '**UNTESTABLE**' in zoo.verdict(summary, seeds, arms, 'grpo')


@pytest.mark.slow
def test_smoke_cli_runs_every_arm_from_one_warm_start(tmp_path):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1', JAX_PLATFORMS='cpu')
  cmd = [
    sys.executable,
    '-m',
    'experiments.estimator_zoo',
    '--config',
    'configs/estimator_zoo.py:smoke',
    '--workdir',
    str(tmp_path),
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'estimator_zoo: warm start' in proc.stdout and 'results.md' in proc.stdout
  for name in ('results.md', 'metrics.jsonl', 'curves.png', 'config.json', 'done.json'):
    assert os.path.exists(tmp_path / name), name
  text = (tmp_path / 'results.md').read_text()
  c = config_mod.get_config('smoke')
  for arm in c.run_arms:
    assert f'| {arm} | `' in text, arm
  assert '`reinforce \\| whiten`' in text  # escaped in the table
  assert '**Gate**' in text and 'smoke: not a result' in text
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  by = {a: [r for r in records if r['arm'] == a] for a in c.run_arms}
  for a in c.run_arms:
    assert [r['iteration'] for r in by[a]] == list(range(c.rl.iterations + 1))
  # One warm start and the same first batch and sampling key for every arm.
  assert len({by[a][0]['eval_exact_match'] for a in c.run_arms}) == 1
  assert len({by[a][1]['reward'] for a in c.run_arms}) == 1
