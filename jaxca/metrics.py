"""Host-side metric logging: `metrics.jsonl` and TensorBoard (result tables and plots: `report`).

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
