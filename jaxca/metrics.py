"""Host-side metric logging and result files: `metrics.jsonl`, TensorBoard, results.md, plots.

TensorBoard files are written with tensorboardX (no TensorFlow). Every record
is one JSON object per line with at least `step` (int); other values are
scalars, strings or flat lists of numbers (e.g. one value per vmapped seed;
TensorBoard gets their mean). Non-finite floats are written as the strings
'nan' / 'inf' / '-inf' so the file stays valid JSON.

Resuming: `Writer(workdir, keep=pred)` first rewrites `metrics.jsonl` keeping
only the records for which `pred(record)` is True (e.g. those written up to the
checkpoint the run resumes from); `purge_step` makes TensorBoard drop the
events from that step on. So a killed-and-resumed run ends with the same
`metrics.jsonl` as an uninterrupted one, apart from wall-clock fields.
"""

import json
import math
import os
import sys
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence

import numpy as np

from jaxca import runs

FILENAME = 'metrics.jsonl'
Record = Dict[str, Any]


def _scalar(v):
  if isinstance(v, (bool, np.bool_)):
    return bool(v)
  if isinstance(v, (int, np.integer)):
    return int(v)
  if isinstance(v, str):
    return v
  v = np.asarray(v)
  if v.ndim == 1 and v.dtype.kind in 'fiub':
    return [_scalar(x) for x in v]
  if v.size != 1:
    raise ValueError(f'metrics: expected a scalar or a flat list, got shape {v.shape}.')
  v = v.reshape(()).item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return v


def _board_value(v):
  """A number for TensorBoard (lists: their mean), or None."""
  if isinstance(v, list):
    nums = [float(x) for x in v if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return float(np.mean(nums)) if nums and len(nums) == len(v) else None
  if isinstance(v, (int, float)) and not isinstance(v, bool):
    return v
  return None


def summarize(tree: Mapping[str, Any], prefix: str = '') -> Dict[str, float]:
  """Reduces every (possibly stacked, e.g. [K] per chunk) numeric array to its mean (float)."""
  out = {}
  for k, v in tree.items():
    arr = np.asarray(v)
    if arr.dtype.kind in 'fiub':
      out[prefix + k] = float(np.mean(arr)) if arr.size else float('nan')
  return out


def all_finite(tree: Mapping[str, Any], keys: Sequence[str]) -> bool:
  """True iff every entry of `tree[k]` (k in keys, when present) is finite."""
  return all(np.all(np.isfinite(np.asarray(tree[k], np.float64))) for k in keys if k in tree)


def read(workdir: str) -> List[Record]:
  """All records of `workdir/metrics.jsonl` (an empty list if there is none).

  A last line without its newline is a record torn by a write that failed (a full disk, a
  kill): it is dropped, with a note on stderr, and the resumed run writes that step again.
  """
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split('\n')
  if lines[-1].strip():
    print(
      f'metrics: dropped the unfinished last line of {path} (a write that did not complete): '
      f'{lines[-1][:80]!r}',
      file=sys.stderr,
      flush=True,
    )
  return [json.loads(line) for line in lines[:-1] if line.strip()]


class Writer:
  """Appends scalar records to `metrics.jsonl` and TensorBoard; `workdir=None` is a no-op.

  TensorBoard events go to `workdir/tensorboard/<phase>` (the record's `phase`
  field, 'main' without one), one event file set per phase so that phases with
  overlapping step numbers (warm start, RL) do not collide.

  Args:
    workdir: output directory (None: write nothing, `write` still returns records).
    keep: predicate over the existing records to keep (None: start a new file).
    purge_steps: {phase: step}: TensorBoard drops events of that phase written
      by an earlier (killed) process with step >= this (resume).
    tensorboard: write TensorBoard event files.
  """

  def __init__(
    self,
    workdir: Optional[str],
    *,
    keep: Optional[Callable[[Record], bool]] = None,
    purge_steps: Optional[Mapping[str, int]] = None,
    tensorboard: bool = True,
  ):
    self._file = None
    self._tb = {}
    self._workdir = workdir
    self._purge = dict(purge_steps or {})
    self._tensorboard = tensorboard and workdir is not None
    self.kept: List[Record] = []
    if workdir is None:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, FILENAME)
    self.kept = [r for r in read(workdir) if keep is not None and keep(r)]
    # The kept records go to a temporary file that replaces the old one in one step, so a
    # process killed here leaves the old file or the new one, never an empty or half one.
    with open(path + '.tmp', 'w') as f:
      for r in self.kept:
        f.write(json.dumps(r) + '\n')
      f.flush()
      os.fsync(f.fileno())
    runs.debug_kill_point('metrics.rewrite')
    os.replace(path + '.tmp', path)
    self._file = open(path, 'a')

  def _board(self, phase):
    if phase not in self._tb:
      from tensorboardX import SummaryWriter  # host-side only; no TensorFlow.

      # tensorboardX names event files by the second and the host and opens them with 'wb': a
      # run resumed within the same second would erase the killed run's events. A
      # nanosecond suffix keeps every file, in the order written (TensorBoard reads by name).
      self._tb[phase] = SummaryWriter(
        os.path.join(self._workdir, 'tensorboard', phase),
        purge_step=self._purge.get(phase),
        filename_suffix=f'.{time.time_ns()}',
      )
    return self._tb[phase]

  def write(self, step: int, scalars: Mapping[str, Any]) -> Record:
    """Writes one record (`step` plus scalars); returns the JSON-ready record."""
    record = {'step': int(step)}
    record.update({k: _scalar(v) for k, v in scalars.items()})
    if self._file is not None:
      self._file.write(json.dumps(record) + '\n')
      self._file.flush()
    if self._tensorboard:
      board = self._board(str(record.get('phase', 'main')))
      for k, v in record.items():
        value = _board_value(v) if k != 'step' else None
        if value is not None:
          board.add_scalar(k, value, int(step))
    return record

  def close(self):
    if self._file is not None:
      self._file.close()
      self._file = None
    for board in self._tb.values():
      board.close()
    self._tb = {}


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


def _fmt(x, pct=True):
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return '-'
  return f'{100 * x:.1f}' if pct else f'{x:.0f}'


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
      f'| {label} | {_fmt(em["start"])} | {_fmt(em["final"])} | {_fmt(em["best"])} | '
      f'{_fmt(fa["start"])} | {_fmt(fa["final"])} | {em["rl_steps"]} | '
      f'{_fmt(em["rl_time"], False)} | {_fmt(em["total_time"], False)} |'
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
      cells.append(_fmt(float(rl['value'][idx[-1]])) if idx.size else '-')
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
      f'{_fmt(r.get("eval_exact_match"))} | {_fmt(r.get("eval_final_answer"))} | '
      f'{_fmt(r.get("eval_step_accuracy"))} |'
    )
  del rl
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def compare(
  workdirs: Sequence[str], out_dir: str, *, labels: Optional[Sequence[str]] = None, title: str = ''
) -> str:
  """Combined table (`results.md`), plot (`curves.png`) and `summary.json` for several runs."""
  labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  runs = {label: read(w) for label, w in zip(labels, workdirs)}
  os.makedirs(out_dir, exist_ok=True)
  plot_curves(os.path.join(out_dir, 'curves.png'), runs, title=title)
  parts = [f'# {title or "comparison"}', '', results_table(runs), '']
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
