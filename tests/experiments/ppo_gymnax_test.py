"""Smoke test of experiments/ppo_gymnax.py via its CLI: results written, resume is exact.

The CLI runs in a subprocess with JAX_DISABLE_MOST_OPTIMIZATIONS=1 (compile time
dominates a smoke run; results are unaffected), once from scratch and once more
after deleting the last checkpoint, which must resume mid-run and reproduce
the same per-update metrics (keys are fold_in(seed, step), nothing random is
stored).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from configs import ppo_gymnax as config_lib
from experiments import ppo_gymnax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(workdir):
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  cmd = [sys.executable, '-m', 'experiments.ppo_gymnax', '--config', 'configs/ppo_gymnax.py:smoke']
  proc = subprocess.run(
    cmd + ['--workdir', workdir], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def read_rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


class PPOGymnaxSmokeTest(absltest.TestCase):
  def test_cli_writes_results_and_resumes_exactly(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    config = config_lib.get_config('smoke')
    run_cli(workdir)
    for name in ('config.json', 'final.json', 'final.csv', 'curve.png', 'metrics.jsonl'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    rows = read_rows(workdir)
    steps_per_update = config.rollout.num_envs * config.rollout.num_steps
    num_updates = config.train.total_timesteps // steps_per_update
    self.assertEqual([r['update'] for r in rows], list(range(1, num_updates + 1)))
    self.assertEqual(rows[-1]['env_steps'], config.train.total_timesteps)
    for row in rows:
      for name in ('loss', 'entropy', 'episode_return', 'value_loss'):
        self.assertLen(row[name], config.num_seeds)
        self.assertTrue(np.all(np.isfinite(row[name])), name)
    with open(os.path.join(workdir, 'final.json')) as f:
      final = json.load(f)
    self.assertEqual(final['final_return_per_seed'], rows[-1]['episode_return'])
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['env']['name'], 'CartPole-v1')
    # Resume from the middle: drop the final checkpoint and rerun the same command.
    ckpts = os.path.join(workdir, 'checkpoints')
    steps = sorted(int(s) for s in os.listdir(ckpts) if s.isdigit())
    self.assertEqual(steps, [num_updates // 2, num_updates])
    shutil.rmtree(os.path.join(ckpts, str(num_updates)))
    run_cli(workdir)
    self.assertEqual(read_rows(workdir), rows)

  def test_unknown_env_fails_with_choices(self):
    config = config_lib.get_config('smoke')
    config.env.name = 'NotAnEnv-v0'
    with self.assertRaisesRegex(ValueError, "Unknown gymnax env 'NotAnEnv-v0'.*CartPole-v1"):
      ppo_gymnax.build(config)

  def test_num_chunks_must_divide_updates(self):
    config = config_lib.get_config('smoke')
    config.train.num_chunks = 3
    with self.assertRaisesRegex(ValueError, 'must divide'):
      ppo_gymnax.make_train_fns(config)


if __name__ == '__main__':
  absltest.main()
