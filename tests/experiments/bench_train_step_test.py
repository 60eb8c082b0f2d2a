"""Smoke test of the train-step benchmark (structure only; no timing asserts)."""

import json
import os
import tempfile

from absl.testing import absltest
import jax

from configs import bench_train_step as bench_config
from experiments import bench_train_step


class BenchTrainStepSmokeTest(absltest.TestCase):
  def test_smoke_writes_every_contender(self):
    prev = jax.config.values['jax_disable_most_optimizations']
    jax.config.update('jax_disable_most_optimizations', True)  # compile time dominates
    try:
      workdir = self.enter_context(tempfile.TemporaryDirectory())
      result = bench_train_step.run(bench_config.get_config('smoke'), workdir)
    finally:
      jax.config.update('jax_disable_most_optimizations', prev)
    self.assertEqual(set(result['rows']), {'rl_iteration', 'sample_only', 'sft_step'})
    for row in result['rows'].values():
      self.assertGreater(row['tokens_per_s'], 0.0)
      self.assertEqual(row['reps'], 2)
    with open(os.path.join(workdir, 'results.json')) as f:
      self.assertIn('rows', json.load(f))
    self.assertIn('tokens/s', open(os.path.join(workdir, 'results.md')).read())


if __name__ == '__main__':
  absltest.main()
