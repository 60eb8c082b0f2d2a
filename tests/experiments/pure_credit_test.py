"""experiments/pure_credit.py via its CLI (`:smoke`): results, figures, H lines; the H rules."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from configs import pure_credit as config_mod
from experiments import pure_credit
from experiments import pure_credit_probe
from experiments import pure_credit_report
from jaxca import report

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
    for needle in ('**H1 (', '**H2 (', 'largely designed in', 'THINK steps per response',
                   'greedy exact match % per seed', '95% CI', 'not run here'):  # fmt: skip
      self.assertIn(needle, text)
    config = config_mod.get_config('smoke')
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    with open(os.path.join(workdir, 'warmstart_curve.csv')) as f:
      self.assertEqual(f.readline().strip(), 'step,validation_final_answer')
    ws = [r for r in rows if r['phase'] == 'warmstart']
    self.assertTrue(ws and all('val_accuracy' in r and 'accuracy' in r for r in ws))
    rl = [r for r in rows if r['phase'] == 'rl' and r['iteration'] > 0]
    self.assertLen(rl, len(config.arms) * len(config.seeds) * config.rl.iterations)
    for key in ('prm_sum', 'think_steps', 'kl_seq', 'entropy', 'local_ok_1', 'acc_ref', 'loss'):
      self.assertIn(key, rl[0])
    # The smoke arms have the VR-only baseline and the noise floor: the gate is applied (a
    # smoke baseline does not learn), and every verdict is labelled.
    self.assertIn('**Gate**: **FAILED**', text)
    self.assertIn('noise floor final %', text)
    # The header line, H1, H2 with closers masked (A3) and not (A3n).
    self.assertEqual(text.count('(smoke: not a result)'), 4)
    self.assertIn('eval_exact_match', rl[-1])

  def test_verdicts_are_untestable_when_the_vr_only_baseline_does_not_learn(self):
    def arm(final, think, length=5.0):
      return dict(
        final_acc=final,
        think_steps=[think] * 2,
        collapsed=[f < 0.5 * 0.24 for f in final],
        prm_sum_first=[0.1] * 2,
        prm_sum=[0.5] * 2,
        length=[length] * 2,
        truncated=[0.0] * 2,
        step1_first=[0.3] * 2,
        step1_global=[0.3] * 2,
      )

    have = ('A1_vr_only', 'A2_sum_prm', 'A3_min_prm', 'A4_min_prm_vr10')
    for a1_final, gate in (([0.40, 0.219], 'FAILED'), ([0.40, 0.45], 'PASSED')):
      stats = dict(
        zip(
          have,
          (arm(a1_final, 0.0), arm([0.05, 0.06], 4.0), arm([0.5, 0.5], 0.1), arm([0.5, 0.5], 0.1)),
        )
      )
      text = '\n'.join(pure_credit_report.judge(stats, 0.242, have))
      self.assertIn(f'**Gate**: **{gate}**', text)
      outcomes = [line.split('**: **')[1].split('**')[0] for line in text.splitlines()[1:]]
      self.assertLen(outcomes, 3)
      if gate == 'FAILED':
        self.assertEqual(set(outcomes), {'UNTESTABLE'})
      else:
        self.assertEqual(outcomes, ['CONFIRMED', 'CONFIRMED', 'REFUTED'])

  def test_h2_is_judged_in_both_masking_settings_and_the_gate_reads_the_unmasked_baseline(self):
    def arm(final, think=0.1):
      return dict(
        final_acc=final, think_steps=[think] * 2, collapsed=[False] * 2, prm_sum_first=[0.1] * 2,
        prm_sum=[0.5] * 2, length=[5.0] * 2, truncated=[0.0] * 2,
      )  # fmt: skip

    arms = ('A1n_vr_only_nomask', 'A2_sum_prm', 'A3_min_prm', 'A3n_min_nomask', 'shuffled_reward')
    self.assertEqual(pure_credit_report.baseline_arm(arms), 'A1n_vr_only_nomask')
    self.assertEqual(pure_credit_report.baseline_arm(('A1_vr_only', 'A2_sum_prm')), 'A1_vr_only')
    have = (pure_credit_report.baseline_arm(arms), 'A2_sum_prm', 'A3_min_prm', 'A4_min_prm_vr10')
    stats = {
      'A1n_vr_only_nomask': arm([0.45, 0.50]),
      'A2_sum_prm': arm([0.30, 0.30]),
      'A3_min_prm': arm([0.01, 0.02]),  # collapsed: REFUTED
      'A3n_min_nomask': arm([0.40, 0.41]),  # >= warm + 10 points: CONFIRMED
      'shuffled_reward': arm([0.05, 0.05]),
    }
    text = '\n'.join(pure_credit_report.judge(stats, 0.25, have))
    self.assertIn('**Gate**: **PASSED**', text)
    self.assertIn('A1n_vr_only_nomask', text)
    self.assertIn('closers masked, the official code)**: **REFUTED**', text)
    self.assertIn('closers not masked)**: **CONFIRMED**', text)

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
      self.assertEqual(float(term['mask_separators']), float(arm.get('mask', True)), name)
      self.assertEqual(float(term['shuffle_vr']), float(arm.get('shuffle', False)), name)
    self.assertEqual(config_mod.NOISE_FLOOR, report.NOISE_FLOOR_ARM)
    self.assertIn(config_mod.NOISE_FLOOR, config_mod.DEFAULT_ARMS)
    self.assertFalse(config_mod.ARMS['A3n_min_nomask'].get('mask', True))

  def test_canonical_is_the_filler_free_chain(self):
    config = config_mod.get_config('smoke')  # K = 2
    task = pure_credit.make_task(config)
    voc = task.vocab
    batch = task.generate(np.random.default_rng(0), 1, split='test')
    x1, x2 = (voc.number_id(int(v)) for v in batch['intermediates'][0][:2])
    think, step, eos = voc.think_id, voc.step_id, voc.eos_id
    wrong = voc.number_id((int(batch['intermediates'][0][0]) + 1) % 10)
    rows = [  # (response, canonical?)
      ([x1, step, x2, eos], 1.0),
      ([x1, step, think, step, x2, eos], 0.0),  # a filler: right answer, not exact
      ([wrong, step, x2, eos], 0.0),  # a wrong first value, a right final answer
      ([x1, step, x2], 0.0),  # truncated (no EOS): the outcome is 0 anyway
    ]
    n = task.response_len
    resp = np.full((len(rows), n), voc.pad_id, np.int32)
    mask = np.zeros((len(rows), n), bool)
    for i, (r, _) in enumerate(rows):
      resp[i, : len(r)] = r
      mask[i, : len(r)] = True
    b = {k: np.repeat(v, len(rows), 0) for k, v in batch.items()}
    canon = np.asarray(pure_credit_probe.canonical(task, resp, mask, b))
    outcome = np.asarray(task.outcome(resp, mask, b))
    np.testing.assert_array_equal(canon * outcome, [w for _, w in rows])
    np.testing.assert_array_equal(outcome, [1.0, 1.0, 1.0, 0.0])  # final answer only


if __name__ == '__main__':
  absltest.main()
