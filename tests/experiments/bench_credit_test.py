"""Smoke test of the kernel benchmark (structure and baseline agreement; no timing asserts)."""

import csv
import math
import os
import tempfile

from absl.testing import absltest

from configs import bench_credit as bench_config
from experiments import bench_credit
from jaxca import bench
from jaxca.benchmarks import credit as bench_credit_lib


class InterleavedTest(absltest.TestCase):
  def test_counts_reps_budget_and_order(self):
    calls = []
    thunks = {name: (lambda name=name: calls.append(name)) for name in ('a', 'b', 'c')}
    timings = bench.interleaved(thunks, 4, budget_s={'c': 0.0}, no_warmup=('c',))
    self.assertEqual([timings[n].reps for n in 'abc'], [4, 4, 1])
    # One warm-up call each, then rounds whose starting contender rotates.
    self.assertEqual(calls[:3], ['a', 'b', 'c'])
    self.assertEqual(calls[3:5], ['a', 'b'])
    self.assertEqual(calls[5:7], ['b', 'a'])
    self.assertTrue(all(t >= 0 for t in timings['a'].times_s))

  def test_rejects_zero_reps(self):
    with self.assertRaisesRegex(ValueError, 'reps'):
      bench.interleaved({'a': lambda: None}, 0)

  def test_copy_bandwidth_is_positive(self):
    gbps, timing = bench.copy_bandwidth(2**16, reps=2)
    self.assertGreater(gbps, 0.0)
    self.assertEqual(timing.reps, 2)


class BenchCreditSmokeTest(absltest.TestCase):
  def test_smoke_writes_every_row(self):
    cfg = bench_config.get_config('smoke')
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    bench_credit.run(cfg, workdir)
    for ext in ('md', 'csv', 'json'):
      self.assertTrue(os.path.exists(os.path.join(workdir, f'bench_credit.{ext}')))
    with open(os.path.join(workdir, 'bench_credit.csv')) as f:
      records = list(csv.DictReader(f))
    jaxca = {
      (r['section'], r['kernel'], r['shape']): r for r in records if r['contender'] == 'jaxca'
    }
    shapes = cfg.shapes.split(',')
    expected = [('standard', k, s) for s in shapes for k in cfg.kernels.split(',')]
    for mode in cfg.group.modes.split(','):
      expected += [
        ('group', f'group_relative[{mode}] ids', str(cfg.group.n)),
        ('group', f'group_relative[{mode}] contiguous', cfg.group.contiguous),
      ]
    for t in cfg.offpolicy.ts.split(','):
      expected += [
        ('offpolicy', m, f'{cfg.offpolicy.batch}x{t}') for m in cfg.offpolicy.methods.split(',')
      ]
    self.assertCountEqual(jaxca, expected)
    for key, rec in jaxca.items():
      # Either a real timing or an explicit 'n/a' for a kernel that is still a placeholder.
      if rec['median_ms']:
        self.assertGreater(float(rec['median_ms']), 0.0, key)
        self.assertLess(float(rec['max_rel_diff_vs_numpy']), 1e-3, key)
      else:
        self.assertTrue(rec['note'].startswith('n/a'), (key, rec['note']))
    # Baselines that compute the same quantity as the kernel agree with the NumPy loops.
    for rec in records:
      if rec['contender'] != 'numpy' and 'yardstick' not in rec['label'] and rec['median_ms']:
        diff = float(rec['max_rel_diff_vs_numpy'])
        self.assertFalse(math.isnan(diff), rec)
        self.assertLess(diff, 1e-3, rec)
    with open(os.path.join(workdir, 'bench_credit.md')) as f:
      text = f.read()
    self.assertIn('Copy bandwidth', text)
    self.assertIn('python -m experiments.bench_credit', text)

  def test_scaling_table_reports_the_cost_ratio(self):
    records = [
      dict(section='offpolicy', contender='jaxca', kernel='rbis', shape='8x1024', median_ms=2.0),
      dict(section='offpolicy', contender='jaxca', kernel='rbis', shape='8x4096', median_ms=6.0),
    ]
    cfg = {'offpolicy': {'ts': '1024,4096', 'methods': 'rbis,retrace'}}
    table = bench_credit_lib.scaling_table(records, cfg)
    self.assertIn('| rbis | 2.000 | 6.000 | 3.00 | 4x / 16x |', table)
    self.assertIn('| retrace | n/a | n/a | n/a |', table)


if __name__ == '__main__':
  absltest.main()
