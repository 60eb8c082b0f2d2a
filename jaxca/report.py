"""Host-side reports of runs: statistics over seeds, verdicts by rule, result tables and plots.

NumPy / SciPy only (no JAX); experiments and notebooks import it to turn `metrics.jsonl`
records into numbers, markdown and figures.

- Statistics: `auc` (ROC AUC as the Mann-Whitney U statistic), `curve_auc` (the mean of a
  learning curve over a budget), `pearson`, `spearman`,
  `pairwise_accuracy` (the VinePPO action-ranking accuracy, McGill-NLP/VinePPO
  `analyzers/action_ranking_analyzer.py`), `seed_stats` (mean, sd and a percentile bootstrap
  95% CI over seeds, `scipy.stats.bootstrap`).
- Formatting: `fmt`, `fmt_range` (mean [min, max]), `fmt_seeds` (mean (per seed)), `fmt_ci`.
- Verdicts: a `Verdict` per claim (CONFIRMED / REFUTED / INCONCLUSIVE / UNTESTABLE with its
  rule and the numbers it used), a baseline `gate` (the baseline must beat its warm start by
  a margin, and the shuffled-reward noise floor, in every seed) and `judge`, which turns
  every claim UNTESTABLE when the gate fails: a claim about credit assignment cannot be
  tested from a baseline that does not learn.
- Result files of one or several `metrics.jsonl` runs: `run_summary`, `results_table`,
  `accuracy_vs_time_table`, `plot_curves`, `write_results`, `compare`.
"""

import dataclasses
import json
import math
import os
from typing import Any
from typing import Dict
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
from scipy import stats as sp_stats

from jaxca import metrics
from jaxca import runs

Record = metrics.Record


def percent_target(fraction: float) -> str:
  """A stopping threshold as a percentage: '35%'; one above 1 (a smoke config's way of never
  stopping early) says so instead of reading as an accuracy of e.g. 101%."""
  if fraction > 1:
    return f'{fraction:.0%} (unreachable: no early stop, every step ran)'
  return f'{fraction:.0%}'


# ----------------------------------------------------------------------------- statistics


def _pairs(a, b):
  """Float64 copies of `a`, `b` without the pairs where either is not finite."""
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f'a and b must have the same length, got {a.size} and {b.size}.')
  keep = np.isfinite(a) & np.isfinite(b)
  return a[keep], b[keep]


def pearson(a, b) -> float:
  """Pearson correlation of the finite pairs; nan with fewer than 2 pairs or a constant side."""
  a, b = _pairs(a, b)
  if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return float('nan')
  return float(sp_stats.pearsonr(a, b).statistic)


def spearman(a, b) -> float:
  """Spearman rank correlation (ties get their average rank) of the finite pairs.

  nan with fewer than 2 pairs or a constant side.
  """
  a, b = _pairs(a, b)
  if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return float('nan')
  return float(sp_stats.spearmanr(a, b).statistic)


def auc(scores, labels) -> float:
  """ROC AUC of `scores` for the True `labels`: P(score+ > score-), ties counting half.

  The Mann-Whitney U statistic of the positives over n+ n-; nan without both classes or
  with a non-finite score.
  """
  scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
  if scores.shape != labels.shape:
    raise ValueError(
      f'scores and labels must have the same length, got {scores.size} and {labels.size}.'
    )
  pos, neg = scores[labels], scores[~labels]
  if not pos.size or not neg.size or not np.all(np.isfinite(scores)):
    return float('nan')
  u = sp_stats.mannwhitneyu(pos, neg, alternative='two-sided', method='asymptotic').statistic
  return float(u / (pos.size * neg.size))


def pairwise_accuracy(truth, pred, min_gap: float = 0.0, ties_wrong: bool = False):
  """(accuracy, pairs): how often `pred` orders pairs within a group as `truth` does.

  `truth`, `pred`: sequences of 1-D arrays, one per group (e.g. the candidate next steps of
  one state); only pairs within a group are compared. A pair whose truth differs by less
  than `min_gap` (and always an exact truth tie) is skipped, unless `ties_wrong`, which
  counts every pair and scores truth ties and prediction ties as wrong (the VinePPO
  analyzer's convention). Accuracy is nan without pairs.
  """
  hit = total = 0
  for t, p in zip(truth, pred):
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    i, j = np.triu_indices(t.size, k=1)
    dt, dp = t[i] - t[j], p[i] - p[j]
    use = np.ones(dt.shape, bool) if ties_wrong else np.abs(dt) >= max(min_gap, 1e-12)
    total += int(use.sum())
    hit += int(np.sum((dt * dp > 0) & use))
  return (hit / total if total else float('nan')), total


def curve_auc(xs, ys, x_max: float) -> float:
  """Mean of a learning curve over [0, x_max]: the step function holding ys[i] on [xs[i], xs[i+1]).

  `xs` ascending, starting at 0 (the warm-start evaluation); the last value holds to x_max.
  x_max <= 0: the first value.
  """
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  if x_max <= 0:
    return float(ys[0])
  lo = np.minimum(xs, x_max)
  hi = np.minimum(np.append(xs[1:], np.inf), x_max)
  return float(np.sum(ys * np.maximum(hi - lo, 0.0)) / x_max)


def bootstrap_ci(
  values, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> Tuple[float, float]:
  """Percentile bootstrap CI of the mean of the finite `values` (`scipy.stats.bootstrap`).

  (nan, nan) with fewer than 2 finite values; (v, v) when they are all equal.
  """
  x = np.asarray(values, np.float64).ravel()
  x = x[np.isfinite(x)]
  if x.size < 2:
    return float('nan'), float('nan')
  if np.ptp(x) == 0:
    return float(x[0]), float(x[0])
  res = sp_stats.bootstrap(
    (x,),
    np.mean,
    confidence_level=confidence,
    n_resamples=n_resamples,
    method='percentile',
    rng=np.random.default_rng(seed),
  )
  return float(res.confidence_interval.low), float(res.confidence_interval.high)


def seed_stats(values, confidence: float = 0.95, n_resamples: int = 10_000) -> Dict[str, Any]:
  """Per-seed values -> dict(values, n, mean, sd (ddof 1), ci_low, ci_high) over the finite ones.

  One seed: sd and the CI are nan (there is no spread to estimate).
  """
  x = np.asarray([np.nan if v is None else v for v in np.ravel(values)], np.float64)
  fin = x[np.isfinite(x)]
  lo, hi = bootstrap_ci(fin, confidence, n_resamples)
  return dict(
    values=[float(v) for v in x],
    n=int(fin.size),
    mean=float(fin.mean()) if fin.size else float('nan'),
    sd=float(fin.std(ddof=1)) if fin.size > 1 else float('nan'),
    ci_low=lo,
    ci_high=hi,
  )


# ----------------------------------------------------------------------------- formatting


def _finite(x):
  return x is not None and not (isinstance(x, (float, np.floating)) and not math.isfinite(x))


def fmt(x, digits: Optional[int] = None, pct: bool = False) -> str:
  """`x` as text: '-' for None / nan / inf; `pct` writes 100 x (1 digit by default, else 2)."""
  if not _finite(x):
    return '-'
  if pct:
    return f'{100 * x:.{1 if digits is None else digits}f}'
  return f'{x:.{2 if digits is None else digits}f}'


def fmt_range(values, digits: Optional[int] = None, pct: bool = False, empty: str = '-') -> str:
  """'mean [min, max]' of the values that are not None (one value: itself; none: `empty`)."""
  vals = np.asarray([v for v in np.ravel(np.asarray(values, object)) if v is not None], float)
  if not vals.size:
    return empty
  d = (1 if pct else 2) if digits is None else digits
  scale = 100.0 if pct else 1.0
  f = lambda v: f'{scale * v:.{d}f}'  # noqa: E731
  if vals.size == 1:
    return f(vals[0])
  return f'{f(vals.mean())} [{f(vals.min())}, {f(vals.max())}]'


def fmt_seeds(values, digits: Optional[int] = None, pct: bool = False) -> str:
  """'mean (v1, v2, ...)' over seeds; with a missing value only the per-seed values."""
  vals = list(values)
  if any(v is None for v in vals):
    return ' / '.join(fmt(v, digits, pct) for v in vals)
  mean = float(np.mean(vals))
  if len(vals) == 1:
    return fmt(mean, digits, pct)
  return f'{fmt(mean, digits, pct)} ({", ".join(fmt(v, digits, pct) for v in vals)})'


def fmt_ci(values, digits: Optional[int] = None, pct: bool = False) -> str:
  """'mean ± sd [95% CI lo, hi] (n seeds)' of per-seed values (`seed_stats`)."""
  s = seed_stats(values)
  if s['n'] < 2:
    return f'{fmt(s["mean"], digits, pct)} ({s["n"]} seed{"" if s["n"] == 1 else "s"})'
  sd = fmt(s['sd'], digits, pct)
  return (
    f'{fmt(s["mean"], digits, pct)} ± {sd} [95% CI {fmt(s["ci_low"], digits, pct)}, '
    f'{fmt(s["ci_high"], digits, pct)}] ({s["n"]} seeds)'
  )


# ----------------------------------------------------------------------------- verdicts

OUTCOMES = ('CONFIRMED', 'REFUTED', 'INCONCLUSIVE', 'UNTESTABLE')
NOISE_FLOOR_ARM = 'shuffled_reward'  # the arm name experiments look for as the noise floor
SMOKE_LABEL = '(smoke: not a result)'


def _num(v):
  if isinstance(v, (bool, np.bool_)):
    return str(bool(v))
  if isinstance(v, (list, tuple, np.ndarray)):
    return '[' + ', '.join(_num(x) for x in v) + ']'
  if isinstance(v, (float, np.floating)):
    return f'{float(v):.4g}'
  return str(v)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The verdict on one claim.

  Attributes:
    claim: the claim, in words.
    outcome: one of OUTCOMES.
    rule: the rule that decided it, in words.
    numbers: {name: value} the rule used (floats, per-seed lists, ...).
    note: a qualifier of the outcome (e.g. 'partial: hacked but not collapsed').
    smoke: the run was a smoke test; the verdict is not a result.
  """

  claim: str
  outcome: str
  rule: str
  numbers: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  note: str = ''
  smoke: bool = False

  def __post_init__(self):
    if self.outcome not in OUTCOMES:
      raise ValueError(f'outcome must be one of {OUTCOMES}, got {self.outcome!r}.')


def per_seed_outcome(
  confirmed: Sequence[bool],
  refuted: Sequence[bool],
  tie: str = '',
  disagree: str = 'seeds disagree',
) -> Tuple[str, str]:
  """(outcome, note) of a claim judged in every seed: CONFIRMED if its rule holds in every seed
  (`confirmed`), REFUTED if its refutation does (`refuted`), INCONCLUSIVE with `tie` when both
  do and with `disagree` when neither does."""
  if all(confirmed) and all(refuted):
    return 'INCONCLUSIVE', tie
  if all(confirmed):
    return 'CONFIRMED', ''
  if all(refuted):
    return 'REFUTED', ''
  return 'INCONCLUSIVE', disagree


def gain_verdict(
  claim: str, gains: Sequence[float], min_gain: float, key: str, baseline: str = 'the baseline'
) -> Verdict:
  """A claim that an arm gains over `baseline`, from its per-seed gains (points).

  CONFIRMED if every seed gains >= `min_gain`, REFUTED if no seed gains (<= 0 in every seed),
  else INCONCLUSIVE; the gains are the verdict's numbers under `key`.
  """
  if all(x >= min_gain for x in gains):
    outcome, note = 'CONFIRMED', ''
  elif all(x <= 0 for x in gains):
    outcome, note = 'REFUTED', f'no gain over {baseline} in any seed'
  else:
    outcome, note = 'INCONCLUSIVE', f'a gain in some seeds only, or below +{min_gain:g} points'
  rule = (
    f'confirmed if +{min_gain:g} points over {baseline} in every seed; refuted if <= 0 points '
    'in every seed'
  )
  return Verdict(claim, outcome, rule, {key: list(gains)}, note)


def format_verdict(v: Verdict) -> str:
  """One markdown bullet: claim, outcome (and note), the rule and the numbers it used."""
  nums = '; '.join(f'{k} {_num(x)}' for k, x in v.numbers.items())
  out = f'- **{v.claim}**: **{v.outcome}**' + (f' ({v.note})' if v.note else '')
  if v.smoke:
    out += f' {SMOKE_LABEL}'
  out += f'. Rule: {v.rule}.'
  if nums:
    out += f' Numbers: {nums}.'
  return out


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
  return '\n'.join(format_verdict(v) for v in verdicts)


@dataclasses.dataclass(frozen=True)
class Gate:
  """Whether the baseline learned: `passed`, the `rule` in words and the `numbers` it used."""

  passed: bool
  rule: str
  numbers: Mapping[str, Any]

  def line(self) -> str:
    nums = '; '.join(f'{k} {_num(x)}' for k, x in self.numbers.items())
    head = f'- **Gate**: **{"PASSED" if self.passed else "FAILED"}**.'
    return f'{head} Rule: {self.rule}. Numbers: {nums}.'


def gate(
  baseline_final,
  warm_start,
  noise_floor_final=None,
  *,
  margin: float = 0.08,
  baseline: str = 'baseline',
  start: str = 'warm start',
  target: Optional[float] = None,
) -> Gate:
  """Did the baseline learn? Passes iff in EVERY seed it beats its warm start and the noise floor.

  Args:
    baseline_final: [seeds] final score of the baseline arm (e.g. GRPO), one per seed.
    warm_start: its score at the start, a scalar (one shared warm start) or one per seed.
    noise_floor_final: [seeds] final score of the shuffled-reward arm of the same seeds, or
      None when the run has no such arm (then only the warm-start margin is checked, and the
      rule says so).
    margin: the gain over the warm start required in every seed (0.08 = 8 points).
    baseline: the baseline arm's name, for the rule text.
    start: what `warm_start` is, for the rule text (e.g. 'iteration-0 score' without SFT).
    target: optional absolute score the baseline must also reach in every seed (e.g. 0.5
      for a design's "GRPO must reach 50% success"); None: no absolute target.

  Returns:
    A Gate: passed iff for every seed s, final[s] - warm[s] >= margin, (with a target)
    final[s] >= target and (with a noise floor) final[s] > noise_floor_final[s]; a
    non-finite score fails.
  """
  final = np.asarray(baseline_final, np.float64).ravel()
  if not final.size:
    raise ValueError('baseline_final must hold one score per seed, got none.')
  warm = np.asarray(warm_start, np.float64).ravel()
  if warm.size not in (1, final.size):
    raise ValueError(
      f'warm_start must be one score or one per seed ({final.size}), got {warm.size}.'
    )
  if not margin >= 0:
    raise ValueError(f'margin must be >= 0 (a gain over the warm start), got {margin}.')
  if target is not None and not np.isfinite(target):
    raise ValueError(f'target must be a finite score or None, got {target}.')
  warm = np.broadcast_to(warm, final.shape)
  gain = final - warm
  ok = np.isfinite(gain) & (gain >= margin - 1e-12)
  rule = f'{baseline} must gain >= {100 * margin:g} points over its {start} in every seed'
  pts = lambda x: [round(100 * float(v), 1) for v in x]  # noqa: E731
  numbers = {
    f'{baseline} final %': pts(final),
    'warm start %': pts(warm),
    'gain (points)': pts(gain),
  }
  if target is not None:
    ok &= final >= target - 1e-12
    rule += f', end at >= {100 * target:g}% in every seed'
    numbers['target %'] = round(100 * float(target), 1)
  if noise_floor_final is None:
    rule += ' (no shuffled-reward arm in this run: the noise floor is not checked)'
  else:
    noise = np.asarray(noise_floor_final, np.float64).ravel()
    if noise.shape != final.shape:
      raise ValueError(
        f'noise_floor_final must hold one score per seed ({final.size}), got {noise.size}.'
      )
    ok &= np.isfinite(noise) & (final > noise)
    rule += ' and end above the shuffled-reward noise floor of the same seed'
    numbers['noise floor final %'] = pts(noise)
  numbers['seeds passing'] = f'{int(ok.sum())}/{ok.size}'
  return Gate(passed=bool(ok.all()), rule=rule, numbers=numbers)


def arm_gate(
  final: Mapping[Tuple[str, Any], float],
  warm: Mapping[Tuple[str, Any], float],
  seeds: Sequence[Any],
  arms: Sequence[str],
  baseline: str,
  *,
  noise_arm: str = NOISE_FLOOR_ARM,
  margin: float = 0.08,
) -> Optional[Gate]:
  """`gate` from {(arm, seed): score} tables (None when the baseline arm did not run).

  The baseline's finals vs its warm starts, and vs the `noise_arm`'s finals when that arm ran.
  """
  if baseline not in arms:
    return None
  noise = [final[(noise_arm, s)] for s in seeds] if noise_arm in arms else None
  return gate(
    [final[(baseline, s)] for s in seeds],
    [warm[(baseline, s)] for s in seeds],
    noise,
    margin=margin,
    baseline=baseline,
  )


def judge(verdicts: Sequence[Verdict], gate_result: Optional[Gate], smoke: bool = False):
  """The claims' verdicts, or UNTESTABLE for every claim when the gate failed.

  A failed gate replaces each verdict by UNTESTABLE; its rule states the gate's rule and
  the claim's, its numbers the gate's and then the claim's, its note what the claim's own
  rule would have said. `smoke` marks every verdict as not a result. `gate_result` None:
  no gate (the claims' own verdicts).
  """
  out = []
  for v in verdicts:
    if gate_result is not None and not gate_result.passed:
      v = Verdict(
        claim=v.claim,
        outcome='UNTESTABLE',
        rule=f'UNTESTABLE when the baseline gate fails ({gate_result.rule}); else {v.rule}',
        numbers={**gate_result.numbers, **v.numbers},
        note=f'the baseline gate failed; by its own rule the claim would read {v.outcome}',
      )
    out.append(dataclasses.replace(v, smoke=smoke))
  return out


def expected_vs_observed(verdicts: Sequence[Verdict], gate_result: Optional[Gate], smoke=False):
  """Markdown: the gate's line, then one line per judged claim."""
  if gate_result is None:
    lines = ['- **Gate**: not applied: the run has no baseline arm.']
  else:
    lines = [gate_result.line()]
  if smoke:
    lines.append(f'- This is a smoke run: every verdict below is {SMOKE_LABEL}.')
  return '\n'.join(lines + [format_verdict(v) for v in judge(verdicts, gate_result, smoke)])


# ----------------------------------------------------------------------------- result files
# ----------------------------------------------------------------------------- result files
def eval_curve(records: Sequence[Record], phase: str, key: str) -> Dict[str, np.ndarray]:
  """(step, time, value) arrays of the records of `phase` that have `key`."""
  rows = [r for r in records if r.get('phase') == phase and key in r]
  return dict(
    step=np.array([r['step'] for r in rows], np.int64),
    time=np.array([r.get('time', np.nan) for r in rows], np.float64),
    cpu_time=np.array([r.get('cpu_time', np.nan) for r in rows], np.float64),
    value=np.array([float(r[key]) for r in rows], np.float64),
  )


def value_at(
  records: Sequence[Record], axis: str, x: float, key: str = 'eval_exact_match'
) -> Optional[float]:
  """`key` of the last record that has it with `record[axis] <= x` (None if there is none).

  The score reached within a budget (steps, wall seconds, tokens) of a run whose records are
  in order; used to compare runs at equal budget.
  """
  out = None
  for r in records:
    if key in r and r[axis] <= x + 1e-9:
      out = r[key]
  return out


def run_summary(records: Sequence[Record], key: str = 'eval_exact_match') -> Dict[str, Any]:
  """Start (RL step 0 = warm start), final and best held-out scores plus wall clock of a run."""
  rl = eval_curve(records, 'rl', key)
  ws = eval_curve(records, 'warmstart', key)
  out = dict(
    start=None,
    final=None,
    best=None,
    rl_steps=0,
    total_time=None,
    rl_time=None,
    warmstart_steps=int(ws['step'][-1]) if ws['step'].size else 0,
  )
  times = [r['time'] for r in records if 'time' in r]
  if times:
    out['total_time'] = float(max(times))
  if rl['value'].size:
    out.update(
      start=float(rl['value'][0]),
      final=float(rl['value'][-1]),
      best=float(rl['value'].max()),
      rl_steps=int(rl['step'][-1]),
      rl_time=float(rl['time'][-1] - rl['time'][0]),
    )
  return out


def plot_curves(
  path: str,
  runs: Mapping[str, Sequence[Record]],
  *,
  keys=('eval_exact_match', 'eval_final_answer'),
  title: str = '',
):
  """Held-out accuracy vs wall-clock (warm start + RL) and vs RL step, one line per run."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(len(keys), 2, figsize=(11, 3.6 * len(keys)), squeeze=False)
  for row, key in enumerate(keys):
    ax_t, ax_s = axes[row]
    for i, (label, records) in enumerate(runs.items()):
      color = f'C{i}'
      ws = eval_curve(records, 'warmstart', key)
      rl = eval_curve(records, 'rl', key)
      if ws['value'].size:
        ax_t.plot(ws['time'], 100 * ws['value'], ':', color=color, marker='.')
      if rl['value'].size:
        ax_t.plot(rl['time'], 100 * rl['value'], '-', color=color, marker='o', ms=3, label=label)
        ax_s.plot(rl['step'], 100 * rl['value'], '-', color=color, marker='o', ms=3, label=label)
    ax_t.set_xlabel('wall clock [s] (dotted: warm start)')
    ax_s.set_xlabel('RL step')
    for ax in (ax_t, ax_s):
      ax.set_ylabel(f'held-out {key.removeprefix("eval_")} [%]')
      ax.grid(alpha=0.3)
    ax_s.legend(loc='lower right', fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def results_table(runs: Mapping[str, Sequence[Record]]) -> str:
  """Markdown table: per run, warm-start -> final (best) exact match / final answer, times."""
  lines = [
    '| run | RL start exact [%] | final exact [%] | best exact [%] | start final-answer [%] '
    '| final final-answer [%] | RL steps | RL time [s] | total time [s] |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for label, records in runs.items():
    em = run_summary(records, 'eval_exact_match')
    fa = run_summary(records, 'eval_final_answer')
    lines.append(
      f'| {label} | {fmt(em["start"], pct=True)} | {fmt(em["final"], pct=True)} | '
      f'{fmt(em["best"], pct=True)} | '
      f'{fmt(fa["start"], pct=True)} | {fmt(fa["final"], pct=True)} | {em["rl_steps"]} | '
      f'{fmt(em["rl_time"], 0)} | {fmt(em["total_time"], 0)} |'
    )
  return '\n'.join(lines)


def accuracy_vs_time_table(
  runs: Mapping[str, Sequence[Record]],
  times: Sequence[float],
  key: str = 'eval_exact_match',
  time_key: str = 'time',
) -> str:
  """Markdown table of the latest held-out score reached within each RL time budget.

  `time_key` 'time' (wall clock) or 'cpu_time' (process CPU seconds, all
  threads), measured from the first RL evaluation (= the warm start).
  """
  unit = 'CPU s' if time_key == 'cpu_time' else 's'
  head = '| run | ' + ' | '.join(f'{t:.0f} {unit}' for t in times) + ' |'
  lines = [head, '|---|' + '---|' * len(times)]
  for label, records in runs.items():
    rl = eval_curve(records, 'rl', key)
    cells = []
    for t in times:
      if not rl['value'].size:
        cells.append('-')
        continue
      elapsed = rl[time_key] - rl[time_key][0]
      idx = np.nonzero(elapsed <= t)[0]
      cells.append(fmt(float(rl['value'][idx[-1]]), pct=True) if idx.size else '-')
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _budgets(runs, time_key, n=5):
  ends = []
  for records in runs.values():
    rl = eval_curve(records, 'rl', 'eval_exact_match')
    if rl['value'].size > 1 and np.all(np.isfinite(rl[time_key])):
      ends.append(rl[time_key][-1] - rl[time_key][0])
  if not ends:
    return []
  return [float(np.ceil(max(ends) * (i + 1) / n)) for i in range(n)]


def show_markdown(text: str):
  """Renders `text` (a results.md, or part of one) as Markdown in a Jupyter kernel; prints it
  anywhere else (a script, a terminal), where Markdown is already readable."""
  try:
    from IPython import get_ipython  # noqa: PLC0415 (notebooks only; not a dependency)
    from IPython.display import Markdown  # noqa: PLC0415
    from IPython.display import display  # noqa: PLC0415
  except ImportError:
    get_ipython = None
  shell = get_ipython() if get_ipython else None
  if shell is None or not hasattr(shell, 'kernel'):
    print(text)
    return
  display(Markdown(text))


def write_results(workdir: str, records: Sequence[Record], *, title: str, notes: str = ''):
  """Writes `results.md` and `learning_curve.png` for one run into `workdir`."""
  plot_curves(os.path.join(workdir, 'learning_curve.png'), {title: records}, title=title)
  rl = eval_curve(records, 'rl', 'eval_exact_match')
  rows = [r for r in records if r.get('phase') in ('warmstart', 'rl') and 'eval_exact_match' in r]
  lines = [
    f'# {title}',
    '',
    notes,
    '',
    results_table({title: records}),
    '',
    '![learning curve](learning_curve.png)',
    '',
    '## Held-out evaluations (greedy decoding)',
    '',
    '| phase | step | time [s] | exact match [%] | final answer [%] | step accuracy [%] |',
    '|---|---|---|---|---|---|',
  ]
  for r in rows:
    lines.append(
      f'| {r["phase"]} | {r["step"]} | {r.get("time", float("nan")):.1f} | '
      f'{fmt(r.get("eval_exact_match"), pct=True)} | {fmt(r.get("eval_final_answer"), pct=True)} | '
      f'{fmt(r.get("eval_step_accuracy"), pct=True)} |'
    )
  del rl
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def compare(
  workdirs: Sequence[str],
  out_dir: str,
  *,
  labels: Optional[Sequence[str]] = None,
  title: str = '',
  notes: str = '',
) -> str:
  """Combined table (`results.md`), plot (`curves.png`) and `summary.json` for several runs.

  `notes` (Markdown) goes under the title (e.g. how the runs' configs differ).
  """
  labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  runs = {label: metrics.read(w) for label, w in zip(labels, workdirs)}
  os.makedirs(out_dir, exist_ok=True)
  plot_curves(os.path.join(out_dir, 'curves.png'), runs, title=title)
  parts = [
    f'# {title or "comparison"}',
    '',
    *([notes, ''] if notes else []),
    results_table(runs),
    '',
  ]
  for time_key, what in (('time', 'wall-clock'), ('cpu_time', 'process CPU time')):
    budgets = _budgets(runs, time_key)
    if budgets:
      parts += [
        f'## Held-out exact match [%] reached within a {what} budget of RL',
        '',
        accuracy_vs_time_table(runs, budgets, time_key=time_key),
        '',
      ]
  parts += ['![curves](curves.png)', '']
  text = '\n'.join(parts)
  with open(os.path.join(out_dir, 'results.md'), 'w') as f:
    f.write(text)
  summary = {
    label: dict(
      exact=run_summary(r, 'eval_exact_match'),
      final_answer=run_summary(r, 'eval_final_answer'),
      curve={k: v.tolist() for k, v in eval_curve(r, 'rl', 'eval_exact_match').items()},
    )
    for label, r in runs.items()
  }
  with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return text


def compare_workdirs(workdirs, out_dir, *, name: str, ignore=(), varies: str = 'the estimator'):
  """`--compare`: one table and plot of the runs in `workdirs` (`compare`) in `out_dir`
  (default `runs/<name>_compare`). Runs whose configs differ outside `ignore`
  (`runs.config_differences`) are labelled as not one comparison, in the title and a warning.

  Raises:
    ConfigError: a workdir without `metrics.jsonl` (not a run's workdir).
  """
  for w in workdirs:
    if not os.path.exists(os.path.join(w, metrics.FILENAME)):
      raise runs.ConfigError(f'--compare: {w} has no {metrics.FILENAME} (not a run workdir).')
  out_dir = out_dir or os.path.join(runs.RUNS_DIR, f'{name}_compare')
  differ = runs.config_differences(workdirs, ignore)
  if differ:  # e.g. a smoke run beside a full one: not one experiment
    title = f'{name}: runs whose configs differ or are not recorded (not one comparison)'
    notes = f'**The configs differ beyond {varies}:** ' + '. '.join(differ) + '.'
  else:
    title, notes = f'{name}: estimators from the same warm start', ''
  compare(workdirs, out_dir, title=title, notes=notes)
  runs.note(
    f'compared {len(workdirs)} runs; table in {out_dir}/results.md, plot in {out_dir}/curves.png'
  )
  if differ:
    runs.note(f'warning: the configs differ beyond {varies}: ' + '. '.join(differ) + '.')
