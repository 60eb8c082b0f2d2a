"""Smoke test of experiments/ppo_gymnax.py: results written, resume is exact, bad names fail."""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np

from configs import ppo_gymnax as config_lib
from experiments import ppo_gymnax


class PPOGymnaxSmokeTest(absltest.TestCase):
  def test_smoke_writes_results_and_resumes_exactly(self):
    workdir = tempfile.mkdtemp(prefix='ppo_gymnax_smoke_')
    self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
    config = config_lib.get_config('smoke')
    _, rows = ppo_gymnax.train(config, workdir)
    num_updates = config.train.total_timesteps // (
      config.rollout.num_envs * config.rollout.num_steps
    )
    self.assertLen(rows, num_updates)
    for name in ('final.json', 'final.csv', 'curve.png', 'metrics.jsonl'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'final.json')) as f:
      final = json.load(f)
    self.assertLen(final['final_return_per_seed'], config.num_seeds)
    self.assertTrue(np.all(np.isfinite(final['final_return_per_seed'])))
    for row in rows:
      for name in ('loss', 'entropy', 'episode_return'):
        self.assertTrue(np.all(np.isfinite(row[name])), name)
    # Drop the last checkpoint: the rerun resumes from the middle and must
    # reproduce the same updates bit for bit (keys are fold_in(seed, step)).
    ckpts = os.path.join(workdir, 'checkpoints')
    steps = sorted(int(s) for s in os.listdir(ckpts) if s.isdigit())
    self.assertEqual(steps[-1], num_updates)
    self.assertLess(steps[0], num_updates)
    shutil.rmtree(os.path.join(ckpts, str(steps[-1])))
    _, resumed = ppo_gymnax.train(config, workdir)
    self.assertEqual(resumed, rows)

  def test_unknown_env_fails_with_choices(self):
    config = config_lib.get_config('smoke')
    config.env.name = 'NotAnEnv-v0'
    with self.assertRaisesRegex(ValueError, "Unknown gymnax env 'NotAnEnv-v0'.*CartPole-v1"):
      ppo_gymnax.build(config)


if __name__ == '__main__':
  absltest.main()
