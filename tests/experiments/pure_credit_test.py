"""Smoke test of experiments/pure_credit.py via its CLI (`:smoke`): results, figures, H lines."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from configs import pure_credit as config_mod
from experiments import pure_credit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PureCreditSmokeTest(absltest.TestCase):
  def test_cli_smoke_writes_results(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    cmd = [sys.executable, '-m', 'experiments.pure_credit', '--config']
    proc = subprocess.run(
      cmd + ['configs/pure_credit.py:smoke', '--workdir', workdir],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
    )
    self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-6000:])
    self.assertIn('PURE: warm', proc.stdout)
    for name in ('results.md', 'metrics.jsonl', 'f1_curves.png', 'f2_goodhart.png',
                 'f3_step_accuracy.png', 'stats.json', 'done.json',
                 'warmstart_curve.csv'):  # fmt: skip
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'results.md')) as f:
      text = f.read()
    for needle in ('**H1**', '**H2**', 'largely designed in', 'THINK steps per response'):
      self.assertIn(needle, text)
    config = config_mod.get_config('smoke')
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    ws = [r for r in rows if r['phase'] == 'warmstart']
    self.assertTrue(ws and all('val_accuracy' in r and 'accuracy' in r for r in ws))
    rl = [r for r in rows if r['phase'] == 'rl' and r['iteration'] > 0]
    self.assertLen(rl, len(config.arms) * len(config.seeds) * config.rl.iterations)
    for key in ('prm_sum', 'think_steps', 'kl_seq', 'entropy', 'local_ok_1', 'acc_ref', 'loss'):
      self.assertIn(key, rl[0])

  def test_validate_refuses_bad_configs(self):
    config = config_mod.get_config('smoke')
    config.arms = ('A9_unknown',)
    with self.assertRaisesRegex(pure_credit.runs.ConfigError, 'Unknown arm'):
      pure_credit.validate(config)
    config = config_mod.get_config('smoke')
    config.policy.max_len = 8
    with self.assertRaisesRegex(pure_credit.runs.ConfigError, 'max_len'):
      pure_credit.validate(config)

  def test_arm_hparams_follow_the_arm_table(self):
    config = config_mod.get_config('smoke')
    parts = pure_credit.build(config)
    for name, arm in config_mod.ARMS.items():
      term = pure_credit.arm_hparams(parts.estimator, arm, config)['terms'][0]
      self.assertEqual(int(term['transform_id']), pure_credit.TRANSFORMS.index(arm['transform']))
      self.assertEqual(float(term['vr_all']), float(arm['vr'] >= 1.0), name)
      self.assertEqual(float(term['vr_coef']) > 0, arm['vr'] > 0, name)


if __name__ == '__main__':
  absltest.main()
