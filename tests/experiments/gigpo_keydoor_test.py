"""experiments/gigpo_keydoor: the smoke run via the CLI (results, figures, verdict), configs."""

import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gigpo_keydoor as config_module
from experiments import gigpo_keydoor as experiment
from experiments import gigpo_keydoor_report as report_lib
from jaxca import estimators
from jaxca import report
from jaxca import runs
from jaxca import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ConfigTest(absltest.TestCase):
  def test_configs_validate_and_arms_map_to_hparams(self):
    for arg in ('', 'smoke', 'pilot', 'full'):
      config = config_module.get_config(arg)
      experiment.validate(config)
    est = estimators.make(experiment.SPEC, history=True)
    for arm in config_module.full_arms():
      hp = experiment.arm_hparams(est, arm)
      self.assertEqual(float(hp['weights'][1]), arm['omega'])
      self.assertEqual(float(hp['terms'][1]['key_turn']), arm['key_turn'])
    self.assertEqual(float(est.hparams['weights'][1]), 1.0)  # the copy left the default alone

  def test_default_is_the_protocol_run(self):
    config = config_module.get_config()
    names = [a['name'] for a in config.arms]
    self.assertEqual(names, ['grpo_msn', 'gigpo_msn', report.NOISE_FLOOR_ARM])
    self.assertEqual(report_lib.BASELINE, names[0])
    self.assertGreaterEqual(len(config.seeds), 4)
    self.assertGreaterEqual(config.rl.iterations, 150)  # from the noisy-BFS warm start
    self.assertEqual(config.optim.lr, 1e-3)
    self.assertIsNotNone(config.warmstart)
    self.assertLess(config.warmstart.stop_at, report_lib.TARGET)  # RL has room to the target
    self.assertIn(report.NOISE_FLOOR_ARM, [a['name'] for a in config_module.full_arms()])

  def test_duplicate_arm_names_are_refused(self):
    config = config_module.get_config('smoke')
    config.arms = [config.arms[0], config.arms[0]]
    with self.assertRaises(runs.ConfigError):
      experiment.validate(config)


def _toy_trajectory():
  # 3 tasks x G=2 episodes, one token per turn, 4 turns; reward 1 on the last step of a
  # success. Episode returns [1, 0 | 1, 1 | 0, 1], lengths [2, 4 | 3, 1 | 4, 2].
  returns = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
  lengths = np.array([2, 4, 3, 1, 4, 2])
  b, t = 6, 4
  mask = np.arange(t)[None, :] < lengths[:, None]
  rewards = np.zeros((b, t), np.float32)
  rewards[np.arange(b), lengths - 1] = returns
  anchors = np.array([[0, 1, 2, 3]] * b, np.int32)
  traj = types.Trajectory(
    rewards=jnp.asarray(rewards),
    mask=jnp.asarray(mask),
    group_ids=jnp.arange(b, dtype=jnp.int32) // 2,
    num_groups=3,
    groups_contiguous=True,
    step_ids=jnp.asarray(np.where(mask, np.arange(t)[None, :], -1), jnp.int32),
    step_rewards=jnp.asarray(rewards),
    anchor_ids=jnp.asarray(np.where(mask, anchors, -1)),
    extras=dict(history_ids=jnp.asarray(np.where(mask, anchors, -1))),
  )
  return traj, returns, mask


def _grpo_reference(scores, g, eps=1e-6):
  out = np.zeros_like(scores)
  for k in range(len(scores) // g):
    x = scores[k * g : (k + 1) * g].astype(np.float64)
    out[k * g : (k + 1) * g] = (x - x.mean()) / (x.std(ddof=1) + eps)
  return out


class NoiseFloorArmTest(parameterized.TestCase):
  @parameterized.parameters(False, True)
  def test_shuffled_arm_is_grpo_on_the_previous_tasks_returns(self, jit):
    traj, returns, mask = _toy_trajectory()
    est = estimators.make(experiment.SPEC, history=True)
    arm = next(a for a in config_module.default_arms() if a['name'] == report.NOISE_FLOOR_ARM)
    hp = experiment.arm_hparams(est, arm)
    fn = jax.jit(est) if jit else est
    got = np.asarray(fn(traj, hp).advantages)
    # Row i of task k is scored with row i of task k - 1 (mod 3).
    want = _grpo_reference(np.roll(returns, 2), 2)
    np.testing.assert_allclose(got, np.where(mask, want[:, None], 0.0), rtol=1e-5, atol=1e-6)
    # The baseline arm with the same estimator ignores the shuffled term (weight 0): its
    # advantages follow the real returns (here every task has one success and one failure or
    # two successes, so GRPO's per-row sign is that of the real return minus the task mean).
    base = experiment.arm_hparams(est, config_module.default_arms()[0])
    np.testing.assert_array_equal(np.asarray(base['weights']), [1.0, 0.0, 0.0])
    a = np.asarray(fn(traj, base).advantages)[:, 0]
    np.testing.assert_array_equal(np.sign(a), np.sign(_grpo_reference(returns, 2)))


def test_step_share_against_a_loop():
  rng = np.random.default_rng(0)
  s, e = rng.uniform(size=(5, 3)), rng.uniform(size=(5, 3))
  e[:, 1] = 0.0  # every batch saturated: the per-iteration ratio would divide by zero
  s[:, 2] = e[:, 2] = 0.0
  got = report_lib.step_share(s, e)
  for r in range(3):
    num, den = sum(s[:, r]) / 5, sum(s[:, r]) / 5 + sum(e[:, r]) / 5
    want = num / den if den > 0 else np.nan
    np.testing.assert_allclose(got[r], want, rtol=1e-12)
  assert got[1] == 1.0 and np.isnan(got[2])


def _stats(grpo_first, grpo_last, gigpo_auc):
  def arm(first, last, auc, episodes):
    greedy = np.array([first, last], float)  # [evaluations, seeds]
    return dict(
      greedy=greedy,
      auc=np.asarray(auc, float),
      to50=np.where(greedy[-1] >= 0.5, episodes, np.inf),
      singleton=(np.zeros(2), np.zeros(2)),
    )

  out = {}
  for mode in ('mn', 'msn'):
    out[f'grpo_{mode}'] = arm(grpo_first, grpo_last, [0.3, 0.3], 1000.0)
    out[f'gigpo_{mode}'] = arm(grpo_first, [0.9, 0.9], gigpo_auc, 500.0)
  return out


@pytest.mark.parametrize('learns', [False, True])
def test_verdict_is_untestable_unless_grpo_learns_in_every_seed(learns):
  # GiGPO wins every seed in both modes; GRPO gains 40 points in seed 0, and in seed 1 only if
  # it learns.
  last = [0.5, 0.5] if learns else [0.5, 0.12]
  text, head = report_lib.verdict(_stats([0.1, 0.1], last, [0.6, 0.7]))
  assert head == ('CONFIRMED' if learns else 'UNTESTABLE')
  assert ('**Gate**: **PASSED**' in text) == learns
  assert f'**GiGPO beats GRPO**: **{head}**' in text


def _ws_setup(**over):
  config = config_module.get_config('smoke')
  config.warmstart.update(**over)
  env, policy, *_ = experiment.make_fns(config)
  eval_tasks = env.sample_tasks(jax.random.key(5), config.eval.num_tasks)
  return config, env, policy, eval_tasks


def test_warm_start_is_cached_by_key_and_a_stale_cache_is_refused(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  config, env, policy, eval_tasks = _ws_setup()
  params, info = experiment.warm_start(config, env, policy, eval_tasks, workdir)
  assert info['steps'] == config.warmstart.max_steps and len(info['curve']) == 2
  with open(os.path.join(workdir, 'warmstart_curve.csv')) as f:
    assert f.readline().strip() == 'step,validation_greedy_success'
  config2, env2, policy2, _ = _ws_setup(p_opt=0.5)  # built before training is forbidden
  monkeypatch.setattr(
    experiment.warmstart, 'sft_minibatches', lambda *a, **k: pytest.fail('retrained')
  )
  again, info2 = experiment.warm_start(config, env, policy, eval_tasks, workdir)
  assert info2['key'] == info['key']
  jax.tree.map(np.testing.assert_array_equal, again, params)
  with pytest.raises(runs.ConfigError) as err:
    experiment.warm_start(config2, env2, policy2, eval_tasks, workdir)
  assert '\n' not in str(err.value) and 'warmstart.p_opt' in str(err.value)


def test_smoke_cli_writes_results(tmp_path):
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  cmd = [sys.executable, '-m', 'experiments.gigpo_keydoor', '--config']
  cmd += ['configs/gigpo_keydoor.py:smoke', '--workdir', workdir]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  for name in (
    'results.md',
    'F4.png',
    'F5.png',
    'metrics.jsonl',
    'done.json',
    'warmstart_curve.csv',
  ):
    assert os.path.exists(os.path.join(workdir, name)), name
  text = open(os.path.join(workdir, 'results.md')).read()
  assert '## Expected vs observed' in text
  assert '**GiGPO beats GRPO**' in text and '**Gate**' in text
  assert any(f'**{w}**' in text for w in ('CONFIRMED', 'REFUTED', 'INCONCLUSIVE', 'UNTESTABLE'))
  assert '(smoke: not a result)' in text
  assert 'noisy-BFS demonstrations' in text
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  config = config_module.get_config('smoke')
  assert [r['step'] for r in rows] == list(range(config.rl.iterations + 1))
  n_runs = len(config.arms) * len(config.seeds)
  for r in rows[1:]:
    assert len(r['success']) == n_runs
    assert np.all(np.isfinite(r['loss']))
  assert len(rows[-1]['heldout_greedy']) == n_runs
  assert len(rows[1]['hist_groups']) == n_runs * len(report_lib.ANCHORS) * 5
