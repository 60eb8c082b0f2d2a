"""jaxca.report: statistics vs SciPy / NumPy loops, verdicts and the gate, result files."""

import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import stats

from jaxca import metrics
from jaxca import report


def _run(workdir, start=0.4, gain=0.1):
  w = metrics.Writer(workdir)
  w.write(10, dict(phase='warmstart', loss=1.0, eval_exact_match=0.2, time=1.0, cpu_time=1.0))
  for i, step in enumerate((0, 10, 20)):
    w.write(
      step,
      dict(
        phase='rl',
        loss=np.float32(0.5),
        eval_exact_match=start + i * gain,
        eval_final_answer=start + i * gain,
        time=2.0 + i,
        cpu_time=2.0 + i,
      ),
    )
  w.close()


def _ranks_loop(x):
  """Average ranks (1-based), ties sharing the mean of their positions: a plain loop."""
  out = np.zeros(len(x))
  for i, v in enumerate(x):
    less = sum(1 for u in x if u < v)
    equal = sum(1 for u in x if u == v)
    out[i] = less + (equal + 1) / 2
  return out


def _auc_loop(scores, labels):
  pos = [s for s, y in zip(scores, labels) if y]
  neg = [s for s, y in zip(scores, labels) if not y]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


def _pairwise_loop(truth, pred, min_gap=0.0, ties_wrong=False):
  hit = total = 0
  for t, p in zip(truth, pred):
    for i in range(len(t)):
      for j in range(i + 1, len(t)):
        if abs(t[i] - t[j]) < max(min_gap, 1e-12) and not ties_wrong:
          continue
        total += 1
        hit += (t[i] - t[j]) * (p[i] - p[j]) > 0
  return (hit / total if total else float('nan')), total


def test_percent_target_says_when_a_threshold_cannot_be_reached():
  """A smoke config's band of 1.01 (never stop early) is not printed as '>= 101%' (27/12)."""
  assert report.percent_target(0.35) == '35%'
  assert report.percent_target(1.0) == '100%'
  assert report.percent_target(1.01).startswith('101% (unreachable: no early stop')


class StatisticsTest(parameterized.TestCase):
  @parameterized.parameters(0, 1, 2)
  def test_correlations_match_scipy_and_a_rank_loop_with_ties(self, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 12).astype(float)  # many ties
    b = a + rng.normal(size=12)
    np.testing.assert_allclose(report.pearson(a, b), stats.pearsonr(a, b).statistic, rtol=1e-12)
    np.testing.assert_allclose(report.spearman(a, b), stats.spearmanr(a, b).statistic, rtol=1e-12)
    loop = np.corrcoef(_ranks_loop(list(a)), _ranks_loop(list(b)))[0, 1]
    np.testing.assert_allclose(report.spearman(a, b), loop, rtol=1e-12)

  def test_correlations_drop_non_finite_pairs_and_are_nan_when_undefined(self):
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    b = np.array([2.0, 1.0, 3.0, np.inf, 7.0])
    keep = [0, 1, 4]
    self.assertAlmostEqual(report.pearson(a, b), stats.pearsonr(a[keep], b[keep]).statistic)
    self.assertAlmostEqual(report.spearman(a, b), stats.spearmanr(a[keep], b[keep]).statistic)
    for f in (report.pearson, report.spearman):
      self.assertTrue(np.isnan(f([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])))  # constant side
      self.assertTrue(np.isnan(f([1.0], [2.0])))  # one pair
      self.assertTrue(np.isnan(f([1.0, np.nan], [2.0, 3.0])))
      with self.assertRaisesRegex(ValueError, 'same length'):
        f([1.0, 2.0], [1.0])

  @parameterized.parameters(0, 1, 2)
  def test_auc_is_the_pairwise_win_rate_with_ties_counting_half(self, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, 30).astype(float)
    labels = rng.random(30) < 0.4
    self.assertAlmostEqual(report.auc(scores, labels), _auc_loop(scores, labels))
    self.assertEqual(report.auc([0.1, 0.9], [False, True]), 1.0)
    self.assertEqual(report.auc([0.5, 0.5], [False, True]), 0.5)

  def test_auc_is_nan_without_both_classes_or_with_a_nan_score(self):
    self.assertTrue(np.isnan(report.auc([0.1, 0.2], [True, True])))
    self.assertTrue(np.isnan(report.auc([], [])))
    self.assertTrue(np.isnan(report.auc([0.1, np.nan], [True, False])))

  @parameterized.product(min_gap=(0.0, 0.1), ties_wrong=(False, True))
  def test_pairwise_accuracy_matches_a_loop_over_pairs(self, min_gap, ties_wrong):
    rng = np.random.default_rng(3)
    truth = [rng.integers(0, 4, n) / 4 for n in (1, 2, 3, 5)]
    pred = [t + rng.normal(scale=0.3, size=t.shape) for t in truth]
    pred[2] = np.round(pred[2])  # prediction ties
    got = report.pairwise_accuracy(truth, pred, min_gap, ties_wrong)
    want = _pairwise_loop(truth, pred, min_gap, ties_wrong)
    self.assertEqual(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0])
    acc, n = report.pairwise_accuracy([np.ones(3)], [np.arange(3.0)])
    self.assertTrue(np.isnan(acc))
    self.assertEqual(n, 0)

  def test_curve_auc_is_the_mean_of_the_step_function_on_a_fine_grid(self):
    xs, ys = np.array([0.0, 2.0, 3.5, 7.0]), np.array([0.2, 0.5, 0.4, 0.9])
    for x_max in (1.0, 3.5, 6.0, 10.0):
      t = (np.arange(200_000) + 0.5) * x_max / 200_000
      want = ys[np.searchsorted(xs, t, side='right') - 1].mean()
      np.testing.assert_allclose(report.curve_auc(xs, ys, x_max), want, atol=1e-4)
    self.assertEqual(report.curve_auc(xs, ys, 0.0), 0.2)

  def test_bootstrap_ci_matches_a_numpy_resampling_loop(self):
    x = np.array([0.42, 0.47, 0.51, 0.58, 0.61, 0.39])
    rng = np.random.default_rng(0)
    means = np.array([rng.choice(x, x.size).mean() for _ in range(20_000)])
    want = np.percentile(means, [2.5, 97.5])
    got = report.bootstrap_ci(x, n_resamples=20_000)
    np.testing.assert_allclose(got, want, atol=0.01)
    self.assertLess(got[0], x.mean())
    self.assertGreater(got[1], x.mean())
    self.assertEqual(report.bootstrap_ci(x), report.bootstrap_ci(x))  # seeded
    # NaN values are dropped; one value has no CI; equal values a point CI.
    np.testing.assert_allclose(report.bootstrap_ci(np.append(x, np.nan)), got, atol=0.01)
    self.assertTrue(np.all(np.isnan(report.bootstrap_ci([0.5]))))
    self.assertEqual(report.bootstrap_ci([0.3, 0.3, 0.3]), (0.3, 0.3))

  def test_seed_stats_mean_sd_and_a_single_seed(self):
    s = report.seed_stats([0.2, 0.4, None, np.nan, 0.9])
    self.assertEqual(s['n'], 3)
    self.assertAlmostEqual(s['mean'], 0.5)
    self.assertAlmostEqual(s['sd'], np.std([0.2, 0.4, 0.9], ddof=1))
    self.assertLessEqual(s['ci_low'], s['mean'])
    self.assertGreaterEqual(s['ci_high'], s['mean'])
    one = report.seed_stats([0.7])
    self.assertEqual((one['n'], one['mean']), (1, 0.7))
    self.assertTrue(np.isnan(one['sd']) and np.isnan(one['ci_low']))
    self.assertEqual(report.fmt_ci([0.7], pct=True), '70.0 (1 seed)')
    self.assertRegex(report.fmt_ci([0.2, 0.4], pct=True), r'^30\.0 ± 14\.1 \[95% CI 2\d\.\d, ')

  def test_formatting(self):
    self.assertEqual(report.fmt(None), '-')
    self.assertEqual(report.fmt(float('nan'), pct=True), '-')
    self.assertEqual(report.fmt(np.float32(np.inf)), '-')
    self.assertEqual(report.fmt(0.4567, pct=True), '45.7')
    self.assertEqual(report.fmt(0.4567, 3), '0.457')
    self.assertEqual(report.fmt(12.6, 0), '13')
    self.assertEqual(report.fmt_range([0.1, None, 0.3], pct=True), '20.0 [10.0, 30.0]')
    self.assertEqual(report.fmt_range(np.array([0.25]), pct=True, digits=0), '25')
    self.assertEqual(report.fmt_range([None], empty='never'), 'never')
    self.assertEqual(report.fmt_seeds([0.1, 0.3], pct=True), '20.0 (10.0, 30.0)')
    self.assertEqual(report.fmt_seeds([0.1, None], pct=True), '10.0 / -')


def _claims():
  return [
    report.Verdict('A beats B', 'CONFIRMED', 'A > B in every seed', dict(a=[0.6, 0.7])),
    report.Verdict('C is hacked', 'REFUTED', 'THINK/resp > 3', dict(think=0.2), note='clean'),
  ]


class VerdictTest(parameterized.TestCase):
  def test_verdict_refuses_an_unknown_outcome_in_one_line(self):
    with self.assertRaisesRegex(ValueError, 'outcome must be one of') as e:
      report.Verdict('x', 'MIXED', 'rule')
    self.assertNotIn('\n', str(e.exception))

  def test_format_prints_outcome_rule_and_numbers(self):
    line = report.format_verdict(_claims()[1])
    self.assertEqual(
      line, '- **C is hacked**: **REFUTED** (clean). Rule: THINK/resp > 3. Numbers: think 0.2.'
    )

  @parameterized.named_parameters(
    ('all_seeds_learn', [0.55, 0.60, 0.70], 0.40, None, True),
    ('exactly_the_margin', [0.48, 0.50], 0.40, None, True),
    ('one_seed_below_the_margin', [0.55, 0.47], 0.40, None, False),
    ('one_seed_loses_accuracy', [0.55, 0.30], 0.40, None, False),
    ('per_seed_warm_start', [0.55, 0.60], [0.40, 0.55], None, False),
    ('above_the_noise_floor', [0.55, 0.60], 0.40, [0.10, 0.59], True),
    ('at_the_noise_floor', [0.55, 0.60], 0.40, [0.10, 0.60], False),
    ('nan_final', [0.55, np.nan], 0.40, None, False),
  )
  def test_gate_passes_iff_every_seed_beats_warm_start_and_noise_floor(
    self, final, warm, noise, passed
  ):
    g = report.gate(final, warm, noise, baseline='GRPO')
    self.assertEqual(g.passed, passed)
    self.assertIn('GRPO must gain >= 8 points', g.rule)
    self.assertEqual('not checked' in g.rule, noise is None)
    self.assertIn('gain (points)', g.numbers)
    self.assertIn('PASSED' if passed else 'FAILED', g.line())

  @parameterized.named_parameters(
    ('every_seed_reaches_the_target', [0.50, 0.62], True),
    ('one_seed_below_the_target', [0.62, 0.49], False),
    ('nan_final', [0.62, np.nan], False),
  )
  def test_gate_target_is_an_absolute_score_every_seed_must_reach(self, final, passed):
    # Both seeds gain >= 8 points over 0.05 and beat the noise floor; only the target decides.
    g = report.gate(final, 0.05, [0.02, 0.02], baseline='GRPO', target=0.5)
    expected = all(np.isfinite(f) and f - 0.05 >= 0.08 and f >= 0.5 and f > 0.02 for f in final)
    self.assertEqual(g.passed, expected)
    self.assertEqual(g.passed, passed)
    self.assertIn('end at >= 50% in every seed', g.rule)
    self.assertEqual(g.numbers['target %'], 50.0)
    self.assertNotIn('target %', report.gate(final, 0.05).numbers)

  def test_gate_refuses_bad_input_in_one_line(self):
    for args, kw, match in (
      (([0.5, 0.6], 0.4, [0.1]), {}, 'noise_floor_final must hold one score per seed'),
      (([0.5, 0.6], [0.4, 0.4, 0.4]), {}, 'warm_start must be one score or one per seed'),
      (([], 0.4), {}, 'baseline_final must hold one score per seed'),
      (([0.5], 0.4), dict(margin=-0.1), 'margin must be >= 0'),
      (([0.5], 0.4), dict(target=float('nan')), 'target must be a finite score or None'),
    ):
      with self.assertRaisesRegex(ValueError, match) as e:
        report.gate(*args, **kw)
      self.assertNotIn('\n', str(e.exception))

  def test_arm_gate_reads_the_baseline_and_the_noise_floor_arm(self):
    seeds = [0, 1]
    warm = {(a, s): 0.4 for a in ('grpo', 'x', report.NOISE_FLOOR_ARM) for s in seeds}
    final = {('grpo', 0): 0.5, ('grpo', 1): 0.6, ('x', 0): 0.1, ('x', 1): 0.1}
    self.assertIsNone(report.arm_gate(final, warm, seeds, ['x'], 'grpo'))
    g = report.arm_gate(final, warm, seeds, ['grpo', 'x'], 'grpo')
    self.assertTrue(g.passed)
    self.assertIn('not checked', g.rule)
    final.update({(report.NOISE_FLOOR_ARM, 0): 0.2, (report.NOISE_FLOOR_ARM, 1): 0.65})
    g = report.arm_gate(final, warm, seeds, ['grpo', report.NOISE_FLOOR_ARM], 'grpo')
    self.assertFalse(g.passed)  # seed 1: the noise floor ends above the baseline
    self.assertEqual(g.numbers['noise floor final %'], [20.0, 65.0])

  def test_a_baseline_that_does_not_learn_makes_every_claim_untestable(self):
    # Seed 1 ends below its warm start: no claim can be judged.
    g = report.gate([0.55, 0.35, 0.60], 0.40, [0.05, 0.02, 0.04], baseline='GRPO')
    judged = report.judge(_claims(), g)
    self.assertEqual([v.outcome for v in judged], ['UNTESTABLE', 'UNTESTABLE'])
    self.assertEqual([v.claim for v in judged], ['A beats B', 'C is hacked'])
    for v, orig in zip(judged, _claims()):
      self.assertIn('when the baseline gate fails (GRPO must gain', v.rule)
      self.assertIn(orig.rule, v.rule)
      np.testing.assert_allclose(v.numbers['gain (points)'], [15.0, -5.0, 20.0])
      self.assertEqual({k: v.numbers[k] for k in orig.numbers}, orig.numbers)
      self.assertIn(f'gate failed; by its own rule the claim would read {orig.outcome}', v.note)
    text = report.expected_vs_observed(_claims(), g)
    self.assertIn('**Gate**: **FAILED**', text)
    self.assertEqual(text.count('**UNTESTABLE**'), 2)
    self.assertNotIn('**CONFIRMED**', text)

  def test_a_baseline_that_learns_lets_the_claims_rules_decide(self):
    g = report.gate([0.55, 0.50, 0.60], 0.40, [0.05, 0.02, 0.04], baseline='GRPO')
    judged = report.judge(_claims(), g)
    self.assertEqual(judged, _claims())
    text = report.expected_vs_observed(_claims(), g)
    self.assertIn('**Gate**: **PASSED**', text)
    self.assertIn('**A beats B**: **CONFIRMED**', text)
    self.assertIn('**C is hacked**: **REFUTED**', text)

  def test_smoke_verdicts_are_labelled_not_a_result(self):
    g = report.gate([0.55], 0.40)
    judged = report.judge(_claims(), g, smoke=True)
    self.assertTrue(all(v.smoke for v in judged))
    for line in map(report.format_verdict, judged):
      self.assertIn('(smoke: not a result)', line)


class GainVerdictTest(parameterized.TestCase):
  @parameterized.parameters(
    ([5.0, 7.0], 'CONFIRMED', ''),
    ([0.0, -3.0], 'REFUTED', 'no gain over GRPO in any seed'),
    ([6.0, -1.0], 'INCONCLUSIVE', 'a gain in some seeds only, or below +5 points'),
    ([4.9, 9.0], 'INCONCLUSIVE', 'a gain in some seeds only, or below +5 points'),
  )
  def test_outcome_by_rule(self, gains, outcome, note):
    v = report.gain_verdict('helps', gains, 5, 'gain (points)', 'GRPO')
    self.assertEqual((v.outcome, v.note), (outcome, note))
    self.assertEqual(v.numbers, {'gain (points)': gains})
    self.assertEqual(
      v.rule, 'confirmed if +5 points over GRPO in every seed; refuted if <= 0 points in every seed'
    )


class ResultsTest(absltest.TestCase):
  def test_value_at_is_the_last_score_within_the_budget(self):
    recs = [
      dict(step=0, wall=0.0, eval_exact_match=0.3),
      dict(step=5, wall=4.0, loss=1.0),  # no evaluation in this record
      dict(step=10, wall=9.0, eval_exact_match=0.5),
      dict(step=20, wall=21.0, eval_exact_match=0.4),
    ]
    self.assertIsNone(report.value_at(recs, 'wall', -1.0))
    self.assertEqual(report.value_at(recs, 'wall', 8.9), 0.3)
    self.assertEqual(report.value_at(recs, 'wall', 9.0), 0.5)  # the budget is inclusive
    self.assertEqual(report.value_at(recs, 'step', 100), 0.4)
    self.assertEqual(report.value_at(recs, 'step', 7, key='loss'), 1.0)

  def test_run_summary_results_and_compare(self):
    root = self.enter_context(tempfile.TemporaryDirectory())
    a, b = os.path.join(root, 'a'), os.path.join(root, 'b')
    _run(a)
    _run(b, start=0.3, gain=0.2)
    summary = report.run_summary(metrics.read(a))
    np.testing.assert_allclose([summary['start'], summary['final']], [0.4, 0.6])
    self.assertEqual(summary['rl_steps'], 20)
    report.write_results(a, metrics.read(a), title='t')
    self.assertTrue(os.path.exists(os.path.join(a, 'learning_curve.png')))
    self.assertIn('| rl | 20 |', open(os.path.join(a, 'results.md')).read())
    out = os.path.join(root, 'cmp')
    text = report.compare([a, b], out)
    self.assertIn('| b | 30.0 | 70.0 |', text)
    self.assertIn('CPU s', text)
    with open(os.path.join(out, 'summary.json')) as f:
      self.assertEqual(set(json.load(f)), {'a', 'b'})
    self.assertTrue(os.path.exists(os.path.join(out, 'curves.png')))


if __name__ == '__main__':
  absltest.main()


def test_show_markdown_prints_outside_a_kernel(capsys):
  report.show_markdown('# results\n\n| a | b |\n|---|---|\n| 1 | 2 |')
  assert capsys.readouterr().out.startswith('# results\n')
