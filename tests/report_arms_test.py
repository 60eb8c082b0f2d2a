"""jaxca.report_arms (and loop.run_grid): tables, equal-budget readings, figures and text of
arms x seeds reports, against hand-made records and NumPy / SciPy references."""

import json
import os
import tempfile

from absl.testing import absltest
import numpy as np
from scipy import stats

from jaxca import loop
from jaxca import report
from jaxca import report_arms as ra


def _records():
  """Two arms x two seeds; arm 'b' stops earlier; the noise floor runs longest."""
  out = []
  for s in (0, 1):
    for a, n, slope in (('a', 4, 0.1), ('b', 2, 0.2), (report.NOISE_FLOOR_ARM, 6, 0.0)):
      for it in range(n + 1):
        r = dict(arm=a, seed=s, iteration=it, wall=1.5 * it + s, accuracy=0.1 * it)
        if it % 2 == 0 or it == n:
          r['eval_exact_match'] = 0.3 + slope * it + 0.01 * s
        out.append(r)
  return out


ARMS = ('a', 'b', report.NOISE_FLOOR_ARM)


class RunsTest(absltest.TestCase):
  def test_by_run_splits_in_order(self):
    runs = ra.by_run(_records(), ARMS, (0, 1))
    self.assertEqual([r['iteration'] for r in runs[('b', 1)]], [0, 1, 2])
    self.assertEqual({r['seed'] for r in runs[('a', 1)]}, {1})

  def test_by_run_leaves_out_records_without_an_arm(self):
    recs = [dict(phase='warmstart', step=3)] + _records()
    self.assertEqual(ra.by_run(recs, ARMS, (0, 1)), ra.by_run(_records(), ARMS, (0, 1)))

  def test_seed_curves_match_a_loop(self):
    recs = _records()
    its, vals = ra.seed_curves(recs, 'a', 'eval_exact_match')
    np.testing.assert_array_equal(its, [0, 2, 4])
    want = [[0.3 + 0.1 * it + 0.01 * s for it in (0, 2, 4)] for s in (0, 1)]
    np.testing.assert_allclose(vals, want)
    its, vals = ra.seed_curves(recs, 'b', 'accuracy', seed=1, start=1)
    np.testing.assert_array_equal(its, [1, 2])
    np.testing.assert_allclose(vals, [[0.1, 0.2]])

  def test_lockstep_series_stacks_the_runs_of_each_step(self):
    recs = [dict(step=0, x=[1, 2]), dict(step=1), dict(step=2, x=[3, 4])]
    steps, vals = ra.lockstep_series(recs, 'x')
    np.testing.assert_array_equal(steps, [0, 2])
    np.testing.assert_array_equal(vals, [[1.0, 2.0], [3.0, 4.0]])

  def test_by_run_missing_run_is_one_line(self):
    with self.assertRaisesRegex(ValueError, r"records: no record for \(arm, seed\) \('c', 0\)"):
      ra.by_run(_records(), ('c',), (0,))

  def test_equal_budget_excludes_noise_floor(self):
    runs = ra.by_run(_records(), ARMS, (0, 1))
    self.assertEqual(ra.equal_budget(runs, 0, 'iteration'), 2)  # 'b' ends at 2; noise at 6
    self.assertEqual(ra.equal_budget(runs, 1, 'wall'), 1.5 * 2 + 1)
    self.assertEqual(ra.equal_budget(runs, 0, 'iteration', exclude=('b',)), 4)
    with self.assertRaisesRegex(ValueError, 'seed: no run of seed 7'):
      ra.equal_budget(runs, 7, 'iteration')

  def test_readings_at_equal_match_a_loop(self):
    runs = ra.by_run(_records(), ARMS, (0, 1))
    got = ra.readings_at_equal(runs, 'iteration')
    for (a, s), recs in runs.items():
      budget = min(runs[(b, s)][-1]['iteration'] for b in ('a', 'b'))
      want = None
      for r in recs:  # the last evaluation at or before the budget
        if 'eval_exact_match' in r and r['iteration'] <= budget:
          want = r['eval_exact_match']
      self.assertEqual(got[(a, s)], (budget, want), (a, s))


def _summary():
  return {
    ('a', 0): dict(final=0.5, start=0.3, n=3),
    ('a', 1): dict(final=0.6, start=0.3, n=4),
    ('b', 0): dict(final=0.4, start=0.3, n=5),
    ('b', 1): dict(final=None, start=0.3, n=6),
  }


class RunRowTest(absltest.TestCase):
  def test_run_row_matches_a_loop(self):
    recs = [r for r in _records() if r['arm'] == 'a' and r['seed'] == 1]
    for i, r in enumerate(recs):
      r.update(compile_s=0.5 * i, clip_frac=0.1 * i if i % 2 else None)
      if r['clip_frac'] is None:
        del r['clip_frac']
    row = ra.run_row(recs, means=('clip_frac', 'absent'), last=2)
    evals = [r['eval_exact_match'] for r in recs if 'eval_exact_match' in r]
    self.assertEqual((row['start'], row['final'], row['best']), (evals[0], evals[-1], max(evals)))
    self.assertEqual((row['iterations'], row['wall']), (4, recs[-1]['wall']))
    self.assertAlmostEqual(row['s_per_iter'], recs[-1]['wall'] / 4)
    self.assertAlmostEqual(row['compile_s'], sum(0.5 * i for i in range(5)))
    self.assertAlmostEqual(row['sampled'], np.mean([0.3, 0.4]))  # the last 2 iterations
    self.assertAlmostEqual(row['clip_frac'], np.mean([0.1, 0.3]))
    self.assertIsNone(row['absent'])
    self.assertIsNone(ra.run_row(recs[:1])['sampled'])  # the warm start only

  def test_summary_gate_is_arm_gate_over_rows(self):
    seeds, arms = (0, 1), ('a', 'b', report.NOISE_FLOOR_ARM)
    by = ra.by_run(_records(), arms, seeds)
    summary = {k: ra.run_row(v) for k, v in by.items()}
    got = ra.summary_gate(summary, seeds, arms, 'a')
    want = report.arm_gate(
      {k: r['final'] for k, r in summary.items()},
      {k: r['start'] for k, r in summary.items()},
      seeds,
      arms,
      'a',
    )
    self.assertEqual(got, want)
    self.assertIsNone(ra.summary_gate(summary, seeds, ('b',), 'a'))


class TableTest(absltest.TestCase):
  def test_seed_table_folds_match_report(self):
    cols = [
      ra.Column('final %', 'final', pct=True),
      ra.Column('gain', lambda r: r['final'] - r['start'], digits=3, fold='seeds'),
      ra.Column('n', 'n', digits=0, fold='mean'),
      ra.Column('n max', 'n', digits=0, fold='max'),
      ra.Column('per seed', 'n', digits=0, fold='per_seed'),
      ra.Column('custom', 'n', fold=lambda v: f'{sum(v)}!'),
    ]
    sm = {k: v for k, v in _summary().items() if k[0] == 'a'}
    text = ra.seed_table(sm, ['a'], [0, 1], cols, labels={'a': 'arm A'})
    lines = text.splitlines()
    self.assertEqual(lines[0], '| arm | reading | final % | gain | n | n max | per seed | custom |')
    self.assertEqual(lines[1], '|' + '---|' * 8)
    cells = [c.strip() for c in lines[2].strip('|').split('|')]
    self.assertEqual(cells[:2], ['a', 'arm A'])
    self.assertEqual(cells[2], report.fmt_ci([0.5, 0.6], pct=True))
    self.assertEqual(cells[3], report.fmt_seeds([0.2, 0.3], 3))
    self.assertEqual(cells[4:], ['4', '4', '3, 4', '7!'])

  def test_ci_cell_is_scipy_bootstrap(self):
    vals = [0.1, 0.4, 0.35, 0.2]
    sm = {('a', s): dict(final=v) for s, v in enumerate(vals)}
    cell = ra.seed_table(sm, ['a'], range(4), [ra.Column('f', 'final', digits=4)]).splitlines()[2]
    res = stats.bootstrap(
      (np.asarray(vals),),
      np.mean,
      n_resamples=10_000,
      method='percentile',
      rng=np.random.default_rng(0),
    )
    lo, hi = res.confidence_interval
    sd = np.std(vals, ddof=1)
    self.assertIn(f'{np.mean(vals):.4f} ± {sd:.4f} [95% CI {lo:.4f}, {hi:.4f}] (4 seeds)', cell)

  def test_minus_column_and_missing_values(self):
    col = ra.Column('Δ vs a', 'final', digits=1, minus='a', fold='per_seed')
    sm = _summary()
    self.assertAlmostEqual(col.get(sm, 'b', 0), -0.1)
    self.assertIsNone(col.get(sm, 'b', 1))
    row = ra.seed_table(sm, ['b'], [0, 1], [col]).splitlines()[2]
    self.assertEqual(row, '| b | -0.1, - |')

  def test_metric_table_one_row_per_arm_and_metric(self):
    sm = {k: v for k, v in _summary().items() if k[0] == 'a'}
    cols = [ra.Column('final', 'final', pct=True), ra.Column('n', 'n', digits=0, fold='max')]
    lines = ra.metric_table(sm, ['a'], [0, 1], cols).splitlines()
    self.assertEqual(lines[0], '| arm | metric | mean ± sd [95% CI] | per seed |')
    self.assertEqual(
      lines[2], f'| a | final | {report.fmt_ci([0.5, 0.6], pct=True)} | 50.0, 60.0 |'
    )
    self.assertEqual(lines[3], '| a | n | 4 | 3, 4 |')

  def test_run_table_rows_and_cells(self):
    cols = [ra.Column('final %', 'final', pct=True), ra.Column('n', 'n', cell=lambda v: f'#{v}')]
    lines = ra.run_table(_summary(), ['a', 'b'], [0, 1], cols).splitlines()
    self.assertEqual(lines[0], '| arm | seed | final % | n |')
    self.assertEqual(lines[2:], ['| a | 0 | 50.0 | #3 |', '| a | 1 | 60.0 | #4 |',
                                 '| b | 0 | 40.0 | #5 |', '| b | 1 | - | #6 |'])  # fmt: skip

  def test_bad_fold_and_ragged_rows_are_one_line(self):
    with self.assertRaisesRegex(ValueError, 'fold must be one of'):
      ra.Column('x', 'x', fold='median')
    with self.assertRaisesRegex(ValueError, 'rows must have 2 cells'):
      ra.markdown_table(['a', 'b'], [[1]])
    self.assertEqual(ra.markdown_table(['a', 'b'], [[1, 'x']]), '| a | b |\n|---|---|\n| 1 | x |')

  def test_seed_spread_is_the_largest_within_arm_range(self):
    sm = {
      ('a', 0): dict(f=0.1),
      ('a', 1): dict(f=0.4),
      ('b', 0): dict(f=0.9),
      ('b', 1): dict(f=0.8),
    }
    self.assertAlmostEqual(ra.seed_spread(sm, ['a', 'b'], [0, 1], 'f'), 0.3)
    self.assertAlmostEqual(ra.seed_spread(sm, ['b'], [0, 1], 'f'), 0.1)

  def test_arm_means(self):
    sm = {('a', 0): dict(f=1.0), ('a', 1): dict(f=2.0)}
    self.assertEqual(ra.arm_means(sm, ['a'], [0, 1], 'f'), {'a': 1.5})


class FigureTest(absltest.TestCase):
  def test_curve_filters_and_smooths_like_numpy(self):
    recs = [dict(iteration=i, clip=float(i * i)) for i in range(6)] + [dict(iteration=9)]
    xs, ys = ra.curve(recs, ra.Panel('iteration', 'clip', where=lambda r: r['iteration'] > 0))
    np.testing.assert_array_equal(xs, [1, 2, 3, 4, 5])
    xs, ys = ra.curve(recs, ra.Panel('iteration', 'clip', smooth=3))
    want = [np.mean([i * i for i in range(j, j + 3)]) for j in range(4)]
    np.testing.assert_allclose(ys, want)
    np.testing.assert_array_equal(xs, [2, 3, 4, 5])

  def test_curves_figure_writes_png(self):
    runs = ra.by_run(_records(), ARMS, (0, 1))
    panels = [
      ra.Panel('iteration', 'eval_exact_match'),
      ra.Panel('wall', 'accuracy', smooth=2, yscale='symlog', marker=False),
    ]
    with tempfile.TemporaryDirectory() as d:
      for mean, band, ncols in ((False, False, None), (True, False, None), (True, True, 1)):
        path = os.path.join(d, f'f{mean}{band}.png')
        ra.curves_figure(path, runs, ARMS, (0, 1), panels, title='t', mean_over_seeds=mean,
                         band=band, ncols=ncols, dotted=(report.NOISE_FLOOR_ARM,))  # fmt: skip
        with open(path, 'rb') as f:
          self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')


class TextTest(absltest.TestCase):
  def test_run_header_keeps_every_number(self):
    text = ra.run_header(
      'python -m experiments.x --a=1',
      'abc123',
      platform='cpu',
      load_start=1.25,
      load_end=3.0,
      total_s=123.4,
      parts={'warm start': 10.2, 'Part B': 100.0},
      compiles={'grpo': 3.4, 'gtpo': 5.6},
      cores=2,
      note='Extra.',
    )
    for want in ('`python -m experiments.x --a=1`', '`abc123`', '2-core CPU (cpu)',
                 'load average 1.2 at the start and 3.0 at the end',
                 'Wall time 123 s in all: warm start 10 s, Part B 100 s.',
                 'grpo 3, gtpo 6.', 'Extra.'):  # fmt: skip
      self.assertIn(want, text)
    self.assertNotIn('Compile', ra.run_header('c', 'x', platform='cpu', load_start=0,
                                              load_end=0, total_s=1))  # fmt: skip

  def test_recipe_text_names_every_setting(self):
    import ml_collections  # noqa: PLC0415

    c = ml_collections.ConfigDict(
      dict(
        seeds=(3, 4),
        rl=dict(prompts=7, group_size=5, temperature=0.9, num_epochs=2, num_minibatches=3,
                iterations=11, max_wall_s=123.0, eval_every=13),
        optim=dict(lr=2e-4, max_grad_norm=0.5),
        loss=dict(ent_coef=0.02),
        data=dict(num_test=17),
      )
    )  # fmt: skip
    text = ra.recipe_text(c)
    for part in (
      '7 prompts x G=5 per iteration',
      'temperature 0.9',
      'Adam 0.0002',
      'grad-norm clip 0.5',
      '2 epoch(s) x 3 minibatches',
      'entropy bonus 0.02',
      '11 iterations or 123 s',
      'on 17 prompts every 13 iterations',
      'Seeds [3, 4]',
    ):
      self.assertIn(part, text)  # fmt: skip
    self.assertIn('per step', ra.recipe_text(c, unit='steps'))

  def test_command_line(self):
    self.assertEqual(
      ra.command_line('experiments.x', ['prog', '--a=1']), 'python -m experiments.x --a=1'
    )

  def test_run_note_and_summary_line(self):
    recs = [dict(arm='a', seed=1, iteration=0, wall=0.0, eval_exact_match=0.25),
            dict(arm='a', seed=1, iteration=5, wall=2.34, eval_exact_match=0.5)]  # fmt: skip
    self.assertEqual(ra.run_note(recs), 'a seed 1: 5 iterations, 2.3 s, exact match 25.0% -> 50.0%')
    line = ra.summary_line('x', 0.25, {'a': 0.5, 'b': 0.125}, 12.3, 'w/results.md', seeds=2,
                           extra='gate PASSED')  # fmt: skip
    self.assertEqual(
      line,
      'x: warm start 25.0% -> final held-out exact match (mean of 2 seed(s)): a 50.0%, b 12.5%; '
      'gate PASSED; 12 s; results in w/results.md',
    )

  def test_write_markdown_sections(self):
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 'results.md')
      text = ra.write_markdown(path, 'T', ['intro\n', ('Table A', 'body'), ('X', '\nb2\n')])
      self.assertEqual(text, '# T\n\nintro\n\n## Table A\n\nbody\n\n## X\n\nb2\n')
      with open(path) as f:
        self.assertEqual(f.read(), text)


class RunGridTest(absltest.TestCase):
  def test_seed_major_order_and_jsonl(self):
    calls = []

    def run_one(a, s):
      calls.append((a, s))
      return [dict(arm=a, seed=s, iteration=0, v=len(calls))]

    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 'metrics.jsonl')
      recs = loop.run_grid(path, ['x', 'y'], [0, 1], run_one, note=lambda r: 'ok')
      self.assertEqual(calls, [('x', 0), ('y', 0), ('x', 1), ('y', 1)])
      with open(path) as f:
        self.assertEqual([json.loads(line) for line in f], recs)
      self.assertEqual([r['v'] for r in recs], [1, 2, 3, 4])


if __name__ == '__main__':
  absltest.main()
