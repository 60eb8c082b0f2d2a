"""Reports of arms x seeds: the pieces every reproduction's results.md is made of.

Host-side and NumPy only, like `jaxca.report` (whose statistics and formatting it uses). A
reproduction runs every arm for every seed from one warm start (`jaxca.loop.run_arm`); its
records carry `arm`, `seed`, `iteration`, `wall` and `eval_*` keys. From them:

- `by_run`: {(arm, seed): records}; `seed_curves`: one arm's metric per seed as an array;
  `lockstep_series`: a metric of runs recorded in lockstep (vmapped); `run_row`: one run's
  summary row; `auc_vs` (the mean score up to a budget), `first_reaching` (the iteration a
  score is reached); `equal_budget` /
  `readings_at_equal`: the score of each arm at the smallest final budget (iterations, wall
  clock, tokens) of the arms of its seed, the equal-iteration and equal-wall-clock readings
  of a comparison; `summary_gate`: the baseline gate over summary rows.
- `Column`, `seed_table` (one row per arm: per-seed values folded into mean ± sd [95% CI],
  `report.fmt_ci`, or mean (per seed), `report.fmt_seeds`), `metric_table` (one row per arm x
  metric: the fold, then the per-seed values) and `run_table` (one row per arm x seed);
  `arm_means` and `seed_spread` (the largest within-arm range over seeds).
- `Panel`, `score_panels`, `curves_figure`: learning curves, one colour per arm, solid for
  the first seed and dashed for the others (or the mean over seeds).
- `run_header` (the command, commit, hardware, load and wall-time paragraph), `recipe_text`
  (the shared RL recipe in words), `run_note` (the
  one-line progress note of a finished run), `summary_line` (the closing line of the CLI) and
  `write_markdown` (results.md from a title and sections).
"""

import dataclasses
import os
import sys
from typing import Any
from typing import Callable
from typing import Dict
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import numpy as np

from jaxca import report

RunKey = Tuple[str, Any]
FOLDS = ('ci', 'seeds', 'mean', 'per_seed', 'max')


# ----------------------------------------------------------------------------- runs


def by_run(records: Sequence[Mapping], arms: Sequence[str], seeds: Sequence[Any]):
  """{(arm, seed): that run's records, in order; records without an arm (e.g. a warm start's)
  are left out; a run without records raises ValueError."""
  out = {
    (a, s): [r for r in records if r.get('arm') == a and r.get('seed') == s]
    for a in arms
    for s in seeds
  }
  empty = [k for k, v in out.items() if not v]
  if empty:
    raise ValueError(
      f'records: no record for (arm, seed) {empty[0]}; runs present must cover arms x seeds.'
    )
  return out


def seed_curves(
  records: Sequence[Mapping], arm: str, key: str, seed: Any = None, start: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
  """(iterations [n], values [seeds, n]): `key` in arm `arm`'s records with `iteration` >=
  `start`, one row per seed (sorted), or only `seed`'s; the iterations are the first seed's."""
  by_seed: Dict[Any, list] = {}
  for r in records:
    if r.get('arm') == arm and r['iteration'] >= start and key in r:
      by_seed.setdefault(r['seed'], []).append((r['iteration'], r[key]))
  seeds = sorted(by_seed) if seed is None else [seed]
  its = [i for i, _ in by_seed.get(seeds[0], [])]
  return np.asarray(its), np.asarray([[v for _, v in by_seed.get(s, [])] for s in seeds])


def lockstep_series(records: Sequence[Mapping], key: str) -> Tuple[np.ndarray, np.ndarray]:
  """(steps [n], values [n, runs]) of the records holding `key`, for runs that advance in
  lockstep (one record per step holding a list of every run's value, e.g. vmapped runs)."""
  rows = [r for r in records if key in r]
  return np.asarray([r['step'] for r in rows]), np.asarray([r[key] for r in rows], float)


def run_row(
  records: Sequence[Mapping],
  means: Sequence[str] = (),
  key: str = 'eval_exact_match',
  last: int = 10,
) -> dict:
  """One run's summary row from its records (iteration 0 = the warm start).

  start / final / best (`key` at the first and last record, its best evaluation), iterations,
  wall (training seconds), elapsed, s_per_iter, compile_s (summed), sampled (mean training
  `accuracy` over the `last` iterations, None without any), and the mean over the training
  iterations of each key in `means` (None where no record has it).
  """
  first, end = records[0], records[-1]
  its = [r for r in records if r['iteration'] > 0]
  row = dict(
    start=first[key],
    final=end[key],
    best=max(r[key] for r in records if key in r),
    iterations=end['iteration'],
    wall=end['wall'],
    elapsed=end.get('elapsed'),
    s_per_iter=end['wall'] / max(end['iteration'], 1),
    compile_s=sum(r.get('compile_s', 0.0) for r in records),
    sampled=float(np.mean([r['accuracy'] for r in its[-last:]])) if its else None,
  )
  for k in means:
    vals = [r[k] for r in its if k in r]
    row[k] = float(np.mean(vals)) if vals else None
  return row


def auc_vs(records: Sequence[Mapping], axis: str, x_max: float, key: str = 'eval_exact_match'):
  """The mean of `key` over [0, x_max] of `axis` (`report.curve_auc`: a step function through
  the run's evaluations)."""
  pts = [(r[axis], r[key]) for r in records if key in r]
  return report.curve_auc([x for x, _ in pts], [y for _, y in pts], x_max)


def first_reaching(
  records: Sequence[Mapping], threshold: float, key: str = 'eval_exact_match'
) -> Optional[int]:
  """The first iteration (> 0) whose `key` is >= `threshold`; None if no evaluation reaches it."""
  for r in records:
    if r['iteration'] > 0 and key in r and r[key] >= threshold:
      return r['iteration']
  return None


def equal_budget(
  runs: Mapping[RunKey, Sequence[Mapping]],
  seed: Any,
  axis: str,
  exclude: Sequence[str] = (report.NOISE_FLOOR_ARM,),
) -> float:
  """The smallest final `axis` (e.g. 'iteration', 'wall', 'tokens') over the runs of `seed`.

  The budget every arm of the seed reached; arms in `exclude` (the noise floor) set none.
  """
  ends = [recs[-1][axis] for (a, s), recs in runs.items() if s == seed and a not in exclude]
  if not ends:
    raise ValueError(f'seed: no run of seed {seed!r} outside exclude={tuple(exclude)}.')
  return min(ends)


def readings_at_equal(
  runs: Mapping[RunKey, Sequence[Mapping]],
  axis: str,
  key: str = 'eval_exact_match',
  exclude: Sequence[str] = (report.NOISE_FLOOR_ARM,),
) -> Dict[RunKey, Tuple[float, Optional[float]]]:
  """{(arm, seed): (budget, score)}: each run's `key` at its seed's `equal_budget` along `axis`.

  The score is the run's last evaluation at or before the budget (`report.value_at`), None if
  it has none there.
  """
  seeds = sorted({s for _, s in runs}, key=str)
  budgets = {s: equal_budget(runs, s, axis, exclude) for s in seeds}
  return {
    (a, s): (budgets[s], report.value_at(recs, axis, budgets[s], key))
    for (a, s), recs in runs.items()
  }


def summary_gate(
  summary: Mapping[RunKey, Mapping],
  seeds: Sequence[Any],
  arms: Sequence[str],
  baseline: str,
  noise_arm: str = report.NOISE_FLOOR_ARM,
) -> Optional[report.Gate]:
  """`report.arm_gate` over `run_row`s: the baseline's `final` vs its `start` (the warm start)
  and the noise floor's `final`, in every seed (None when the baseline did not run)."""
  start = {k: r['start'] for k, r in summary.items()}
  final = {k: r['final'] for k, r in summary.items()}
  return report.arm_gate(final, start, seeds, arms, baseline, noise_arm=noise_arm)


# ----------------------------------------------------------------------------- tables


@dataclasses.dataclass(frozen=True)
class Column:
  """One column of `seed_table` / `run_table`.

  Attributes:
    header: the column's title.
    value: a key of a run's summary row, or `row -> value`.
    pct: write 100 x (`report.fmt`).
    digits: decimals (None: `report.fmt`'s default).
    fold: how `seed_table` folds the per-seed values: 'ci' (mean ± sd [95% CI] (n seeds)),
      'seeds' (mean (per seed)), 'mean', 'per_seed' (comma-separated), 'max', or a callable
      `values -> str`.
    minus: an arm whose value of the same seed is subtracted (a 'Δ vs baseline' column).
    cell: `run_table`'s cell as `value -> str` (default `report.fmt(value, digits, pct)`).
  """

  header: str
  value: Union[str, Callable[[Mapping], Any]]
  pct: bool = False
  digits: Optional[int] = None
  fold: Union[str, Callable[[list], str]] = 'ci'
  minus: Optional[str] = None
  cell: Optional[Callable[[Any], str]] = None

  def __post_init__(self):
    if not callable(self.fold) and self.fold not in FOLDS:
      raise ValueError(f'fold must be one of {FOLDS} or a callable, got {self.fold!r}.')

  def get(self, summary: Mapping[RunKey, Mapping], arm: str, seed: Any):
    row = summary[(arm, seed)]
    v = row[self.value] if isinstance(self.value, str) else self.value(row)
    if self.minus is not None and v is not None:
      base = Column(self.header, self.value).get(summary, self.minus, seed)
      v = None if base is None else v - base
    return v

  def fold_values(self, values: list) -> str:
    if callable(self.fold):
      return self.fold(values)
    if self.fold == 'ci':
      return report.fmt_ci(values, self.digits, self.pct)
    if self.fold == 'seeds':
      return report.fmt_seeds(values, self.digits, self.pct)
    if self.fold == 'per_seed':
      return ', '.join(report.fmt(v, self.digits, self.pct) for v in values)
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
      return '-'
    return report.fmt(
      float(np.mean(finite) if self.fold == 'mean' else max(finite)), self.digits, self.pct
    )

  def format(self, value) -> str:
    return self.cell(value) if self.cell else report.fmt(value, self.digits, self.pct)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table: `header` cells, then one line per row (cells written with str)."""
  if any(len(r) != len(header) for r in rows):
    raise ValueError(
      f'rows must have {len(header)} cells each (the header), got {[len(r) for r in rows]}.'
    )
  return _table([str(h) for h in header], [[str(c) for c in r] for r in rows])


def seed_table(
  summary: Mapping[RunKey, Mapping],
  arms: Sequence[str],
  seeds: Sequence[Any],
  columns: Sequence[Column],
  *,
  labels: Optional[Mapping[str, str]] = None,
  label_header: str = 'reading',
) -> str:
  """One row per arm: its name, (with `labels`) a label, then each column folded over seeds."""
  header = ['arm'] + ([label_header] if labels is not None else []) + [c.header for c in columns]
  rows = []
  for a in arms:
    row = [a] + ([labels[a]] if labels is not None else [])
    row += [c.fold_values([c.get(summary, a, s) for s in seeds]) for c in columns]
    rows.append(row)
  return _table(header, rows)


def metric_table(
  summary: Mapping[RunKey, Mapping],
  arms: Sequence[str],
  seeds: Sequence[Any],
  columns: Sequence[Column],
) -> str:
  """One row per arm x column: arm, the column's header, its values folded over seeds (the
  column's `fold`, mean ± sd [95% CI] by default), then the per-seed values."""
  rows = []
  for a in arms:
    for c in columns:
      vals = [c.get(summary, a, s) for s in seeds]
      rows.append([a, c.header, c.fold_values(vals), ', '.join(c.format(v) for v in vals)])
  return _table(['arm', 'metric', 'mean ± sd [95% CI]', 'per seed'], rows)


def run_table(
  summary: Mapping[RunKey, Mapping],
  arms: Sequence[str],
  seeds: Sequence[Any],
  columns: Sequence[Column],
) -> str:
  """One row per arm x seed (arm-major): arm, seed, then each column's value of that run."""
  rows = [
    [a, str(s)] + [c.format(c.get(summary, a, s)) for c in columns] for a in arms for s in seeds
  ]
  return _table(['arm', 'seed'] + [c.header for c in columns], rows)


def arm_means(summary: Mapping[RunKey, Mapping], arms, seeds, key: str) -> Dict[str, float]:
  """{arm: mean over seeds of summary[(arm, seed)][key]}."""
  return {a: float(np.mean([summary[(a, s)][key] for s in seeds])) for a in arms}


def seed_spread(summary: Mapping[RunKey, Mapping], arms, seeds, key: str = 'final') -> float:
  """The largest within-arm range over seeds of summary[(arm, seed)][key]: the seed noise a
  difference between arms must exceed to count."""
  return max(
    max(summary[(a, s)][key] for s in seeds) - min(summary[(a, s)][key] for s in seeds)
    for a in arms
  )


# ----------------------------------------------------------------------------- figures


@dataclasses.dataclass(frozen=True)
class Panel:
  """One axis of `curves_figure`: `y` against `x` over the records where both are present.

  Attributes:
    x, y: record keys.
    xlabel, ylabel: axis labels (default: the keys).
    where: keeps a record when `where(record)` (default: every record with x and y).
    smooth: a running mean over this many points (0: none).
    yscale: a matplotlib scale ('symlog' is drawn with linthresh 1e-3).
    marker: draw points.
    title: the axis title.
  """

  x: str
  y: str
  xlabel: str = ''
  ylabel: str = ''
  where: Optional[Callable[[Mapping], bool]] = None
  smooth: int = 0
  yscale: str = 'linear'
  marker: bool = True
  title: str = ''


def score_panels(
  axes: Sequence[Tuple[str, str]],
  y: str = 'eval_exact_match',
  ylabel: str = 'held-out greedy exact match',
) -> Tuple[Panel, ...]:
  """One `Panel` of the score `y` against each (x key, x label) of `axes`."""
  return tuple(Panel(x, y, label, ylabel) for x, label in axes)


def curve(records: Sequence[Mapping], panel: Panel) -> Tuple[np.ndarray, np.ndarray]:
  """(xs, ys) of one run on `panel` (after `where` and `smooth`)."""
  pts = [
    r for r in records if panel.x in r and panel.y in r and (panel.where is None or panel.where(r))
  ]
  xs = np.asarray([r[panel.x] for r in pts], np.float64)
  ys = np.asarray([r[panel.y] for r in pts], np.float64)
  if panel.smooth > 1 and ys.size:
    w = min(panel.smooth, ys.size)
    ys = np.convolve(ys, np.ones(w) / w, mode='valid')
    xs = xs[xs.size - ys.size :]
  return xs, ys


def curves_figure(
  path: str,
  runs: Mapping[RunKey, Sequence[Mapping]],
  arms: Sequence[str],
  seeds: Sequence[Any],
  panels: Sequence[Panel],
  *,
  labels: Optional[Mapping[str, str]] = None,
  title: str = '',
  mean_over_seeds: bool = False,
  band: bool = False,
  dotted: Sequence[str] = (),
  ncols: Optional[int] = None,
  dpi: int = 110,
):
  """Writes `panels` to `path` (one row, or rows of `ncols`): one colour per arm (`C<i>`).

  Each seed's curve is drawn (solid for the first seed, dashed for the others), or with
  `mean_over_seeds` the mean over seeds of the curves cut to their shortest length (with
  `band`, shaded between the seeds' min and max). Arms in `dotted` (e.g. the noise floor) are
  drawn dotted. The first panel carries the legend.
  """
  import matplotlib  # noqa: PLC0415 (plots only)

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415

  ncols = ncols or len(panels)
  nrows = -(-len(panels) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 4 * nrows), squeeze=False)
  axes = axes.ravel()
  for ax in axes[len(panels) :]:
    ax.axis('off')
  for i, a in enumerate(arms):
    label = (labels or {}).get(a, a)
    for ax, p in zip(axes, panels):
      style = dict(color=f'C{i % 10}', **(dict(marker='o', ms=3) if p.marker else {}))
      cs = [curve(runs[(a, s)], p) for s in seeds]
      if mean_over_seeds:
        n = min(len(x) for x, _ in cs)
        ls = ':' if a in dotted else '-'
        ys = np.asarray([y[:n] for _, y in cs])
        ax.plot(cs[0][0][:n], ys.mean(axis=0), ls=ls, label=label, **style)
        if band:
          ax.fill_between(
            cs[0][0][:n], ys.min(axis=0), ys.max(axis=0), color=style['color'], alpha=0.2
          )
        continue
      for j, (xs, ys) in enumerate(cs):
        ls = ':' if a in dotted else ('-' if j == 0 else '--')
        ax.plot(xs, ys, ls=ls, label=label if j == 0 else None, **style)
  for ax, p in zip(axes, panels):
    ax.set_title(p.title)
    ax.set_xlabel(p.xlabel or p.x)
    ax.set_ylabel(p.ylabel or p.y)
    if p.yscale == 'symlog':
      ax.set_yscale('symlog', linthresh=1e-3)
    elif p.yscale != 'linear':
      ax.set_yscale(p.yscale)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


# ----------------------------------------------------------------------------- text


def command_line(module: str, argv: Optional[Sequence[str]] = None) -> str:
  """'python -m <module> <args>' of this process (`argv` default: sys.argv)."""
  argv = sys.argv if argv is None else argv
  return ' '.join([f'python -m {module}'] + list(argv[1:]))


def run_header(
  command: str,
  commit: str,
  *,
  platform: str,
  load_start: float,
  load_end: float,
  total_s: float,
  parts: Mapping[str, float] = (),
  compiles: Optional[Mapping[str, float]] = None,
  cores: Optional[int] = None,
  note: str = '',
) -> str:
  """The paragraph that opens a results.md: command, commit, hardware, load and wall time.

  Args:
    command: the command line (`command_line`).
    commit: the code's commit (`runs.git_commit()`).
    platform: the accelerator platform (`jax.devices()[0].platform`).
    load_start, load_end: the 1-minute load average at the start and end (`bench.load_average`).
    total_s: the wall time of the whole run.
    parts: {part: seconds} of the wall time (e.g. warm start, learning runs, probe), in order.
    compiles: {arm: compile seconds}, ahead of time and excluded from the training budgets.
    cores: CPU cores (default `os.cpu_count()`).
    note: a sentence appended (e.g. what load means for this experiment's budgets).
  """
  cores = os.cpu_count() if cores is None else cores
  parts = dict(parts)
  wall = f'Wall time {total_s:.0f} s in all'
  if parts:
    wall += ': ' + ', '.join(f'{k} {v:.0f} s' for k, v in parts.items())
  text = (
    f'Command: `{command}`, commit `{commit}`. Hardware: {cores}-core CPU ({platform}); load '
    f'average {load_start:.1f} at the start and {load_end:.1f} at the end (a machine shared '
    f'with other jobs inflates absolute seconds). {wall}.'
  )
  if compiles:
    text += (
      ' Compile seconds per arm (ahead of time, excluded from the training budgets): '
      + ', '.join(f'{a} {v:.0f}' for a, v in compiles.items())
      + '.'
    )
  return text + (f' {note}' if note else '')


def recipe_text(config, unit: str = 'iterations') -> str:
  """The learning runs' shared recipe in words, for a results.md: the `rl`, `optim`, `loss`,
  `data` and `seeds` sections of an arms x seeds reproduction (`jaxca.loop.run_arm`)."""
  rl, seeds = config.rl, list(config.seeds)
  return (
    f'{rl.prompts} prompts x G={rl.group_size} per {unit[:-1]} at temperature '
    f'{rl.temperature}, outcome reward, Adam {config.optim.lr} (grad-norm clip '
    f'{config.optim.max_grad_norm}, fresh optimiser state), {rl.num_epochs} epoch(s) x '
    f'{rl.num_minibatches} minibatches, entropy bonus {config.loss.ent_coef}; {rl.iterations} '
    f'{unit} or {rl.max_wall_s:.0f} s of training wall clock (compile and evaluation '
    f'excluded; a safety cap), whichever first; held-out greedy exact match on '
    f'{config.data.num_test} prompts every {rl.eval_every} {unit}. Seeds {seeds}: a seed fixes '
    'the batches and sampling keys, identical across arms.'
  )


def run_note(
  records: Sequence[Mapping], unit: str = 'iterations', key: str = 'eval_exact_match'
) -> str:
  """One finished run in a line: '<arm> seed <s>: <n> <unit>, <wall> s, <key> a% -> b%'."""
  first, last = records[0], records[-1]
  what = key.removeprefix('eval_').replace('_', ' ')
  return (
    f'{last["arm"]} seed {last["seed"]}: {last["iteration"]} {unit}, {last["wall"]:.1f} s, '
    f'{what} {100 * first[key]:.1f}% -> {100 * last[key]:.1f}%'
  )


def summary_line(
  name: str,
  warm: float,
  finals: Mapping[str, float],
  seconds: float,
  results: str,
  *,
  seeds: int,
  extra: str = '',
) -> str:
  """The CLI's closing line: warm start -> each arm's mean final held-out exact match."""
  line = ', '.join(f'{a} {report.fmt(v, pct=True)}%' for a, v in finals.items())
  return (
    f'{name}: warm start {100 * warm:.1f}% -> final held-out exact match (mean of {seeds} '
    f'seed(s)): {line}; {extra + "; " if extra else ""}{seconds:.0f} s; results in {results}'
  )


def write_markdown(
  path: str, title: str, sections: Sequence[Union[str, Tuple[str, str]]], level: int = 2
) -> str:
  """Writes `# title` then each section to `path` (a results.md); returns the text.

  A section is a paragraph (str) or (header, body): `## header` then the body; blank lines
  between. An existing file is replaced (the run's own output).
  """
  parts = [f'# {title}']
  for sec in sections:
    if isinstance(sec, str):
      parts.append(sec.strip('\n'))
    else:
      head, body = sec
      parts.append(f'{"#" * level} {head}')
      parts.append(body.strip('\n'))
  text = '\n\n'.join(parts) + '\n'
  with open(path, 'w') as f:
    f.write(text)
  return text
