"""The command-line harness every experiment's `main` uses (host-side: files, flags, exits).

One place decides, for every `python -m experiments.<name>` run:

  * **Where it writes.** `--workdir` if given, else `runs/<name>/` (git-ignored;
    `runs/<name>_smoke/` for a smoke config, so it never meets the full run's workdir),
    printed at the start. Nothing writes into `results/` (committed results) unless
    that path is given explicitly, and a smoke config (`--config ...py:smoke`)
    refuses to write there at all.
  * **Order.** The config is validated before anything is written, and the run record
    (`config.json`, a stale `done.json` removed) waits until setup -- data, model,
    checkpoint restore -- has succeeded (`begin`), so a failed start never poisons a
    workdir; `--dry_run` runs the same validation. A workdir that
    already holds a `config.json` is compared with the new config first
    (`check_resume`): any difference outside the experiment's `safe_keys` (number
    of steps, evaluation / checkpoint cadence: keys that do not change what is
    computed) refuses the run with one line naming every differing key, its old
    and new value and how to proceed (a new `--workdir`, or
    `--allow_config_change`); a refused run leaves `config.json` untouched. The old
    `config.json` is read through `RENAMES` first (keys renamed since it was written), so a
    rename alone is not a change. A key that
    changes the shapes of the checkpointed state (the experiment's `shape_keys`, or
    any change a restore finds) is refused even with `--allow_config_change`.
  * **One run per workdir.** The run holds an exclusive lock (`lock_workdir`: `fcntl.flock`
    on `<workdir>/.jaxca.lock`) from before it writes `config.json` until it exits; a
    second process on the same workdir is refused in one line naming the holder's PID.
  * **Errors.** A `ConfigError` (config_lib) or usage error prints one line on
    stderr and exits with status 2, no traceback (`--debug` shows it). Ctrl-C
    stops the run at the next step boundary (`at`; a second Ctrl-C at once) and
    prints where it stopped and that rerunning the same command resumes (exit 130);
    so does a scheduler's SIGTERM (exit 143). On several hosts all of them stop at the
    same step when any one was signalled (one all-gather per `at`).
    A non-finite loss stops a run with the last good checkpoint (`check_finite`).
    A full disk, a read-only workdir, a workdir path that is a file or an output file that
    cannot be written is one line on stderr (exit 1; `--debug` shows the traceback);
    the outputs are checked before the run starts (`check_writable`).
  * **Hangs.** A watchdog (`Watchdog`) expects progress (a call of `at`) at least every
    `--watchdog_s` seconds (default 900; 0 turns it off; the first step, which compiles,
    and a step announced with `at(..., next_compiles=True)` get `--watchdog_first_s`,
    default 3600). When none comes it prints which step the run was on, that rerunning
    the same command resumes, and the stack of every thread, then exits with status
    124 (a hung XLA computation otherwise waits forever without using CPU).
  * **The end.** The experiment's `run` returns one summary line (what it
    measured, where it wrote); it is printed (a smoke config's labelled as not a
    result) and stored with the config in `done.json`, then what to try next when the
    experiment says (`Experiment.next_steps`). Rerunning a complete run (same config)
    prints that line and exits without rewriting anything, unless `--rewrite` is given.
  * **Noise.** absl/JAX/orbax INFO logs are off (`--debug` or `-v` turn them on);
    the full config goes to `config.json`, `--dry_run` prints it without running.
"""

import contextlib
import dataclasses
import errno
import faulthandler
import fcntl
import functools
import json
import logging as pylogging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any
from typing import Callable
from typing import Mapping
from typing import Optional
from typing import Sequence

from jaxca.config_lib import ConfigError

RUNS_DIR = 'runs'
RESULTS_DIR = 'results'
CONFIG_FILE = 'config.json'
DONE_FILE = 'done.json'
LOCK_FILE = '.jaxca.lock'  # held (fcntl.flock) by the process running in the workdir
WATCHDOG_EXIT = 124  # like timeout(1)

__all__ = [
  'ConfigError',
  'Experiment',
  'Watchdog',
  'at',
  'begin',
  'check_finite',
  'check_resume',
  'check_steps_reached',
  'check_writable',
  'config_diff',
  'define_flags',
  'flatten',
  'lock_workdir',
  'main',
  'migrate_config',
  'note',
  'resolve_workdir',
]

# What a non-finite loss or state tells the user (check_finite, checkpoint.Checkpointer): the
# config change it suggests is one the resume check accepts with the flag it names.
NAN_ADVICE = (
  'rerun with a smaller learning rate (e.g. --config.optim.lr=<lr/10> --allow_config_change) '
  'to resume from it'
)
_RESUME = 'Rerun the same command to resume from the last checkpoint.'
_state = dict(
  position=None,
  stop=False,
  signal=signal.SIGINT,
  watchdog=None,
  steps=0,
  stall_at=0,
  resume_hint='',
  record=None,
)


DEBUG_KILL_ENV = 'JAXCA_DEBUG_KILL_AT'


def debug_kill_point(point: str):
  """Fault injection (tests): SIGKILLs this process if $JAXCA_DEBUG_KILL_AT equals `point`.

  The points are every `at` position (e.g. 'RL step 2 of 4') and 'metrics.rewrite' (in
  `metrics.Writer`, the kept records written but not yet in place).
  """
  if os.environ.get(DEBUG_KILL_ENV) == point:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def at(position: str, next_compiles: bool = False):
  """Marks a safe stopping point and records where the run is (e.g. 'RL step 40 of 1000').

  Experiments call it between chunks. After a Ctrl-C under `main`, the next call
  raises KeyboardInterrupt here, so a run never stops inside a checkpoint save.
  Each call is progress for the watchdog; `next_compiles=True` says the next step
  compiles a new program, so it gets the first-step allowance (`--watchdog_first_s`).
  """
  begin()  # progress means setup succeeded
  _state['position'] = position
  _state['steps'] += 1
  debug_kill_point(position)
  if _state['watchdog'] is not None:
    _state['watchdog'].progress(position, next_compiles)
  if _state['steps'] == _state['stall_at']:  # --debug_stall_at: simulates a hung step
    while True:
      time.sleep(1)
  if _any_host(_state['stop']):  # every host stops at the same step (multi-host runs)
    _state['stop'] = False
    raise KeyboardInterrupt


def begin():
  """Says that setup (data, model, checkpoint restore) succeeded: the run record is written now.

  Under `main` the workdir's run record (`config.json` written, a stale `done.json`
  removed) waits for this call, so a run that fails while it sets up leaves the workdir
  as it was and the corrected command is not refused as config drift. Experiments call it
  after restoring and before writing metrics or checkpoints; the first `at`, and the end
  of `run`, call it for experiments that do not. Later calls do nothing.
  """
  record, _state['record'] = _state['record'], None
  if record is not None:
    record()


def _any_host(flag: bool) -> bool:
  """`flag` on one process; True on every process iff it is True on any (multi-host).

  A scheduler's SIGTERM or a Ctrl-C may reach one host only; one tiny all-gather per
  `at` call makes all of them stop (and save) at the same step.
  """
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


class Watchdog:
  """Exits the process, with every thread's stack, when no progress comes in time.

  A daemon thread waits for `progress` calls. If `first_s` (before the first call,
  or after one with `next_compiles`) or `timeout_s` (otherwise) pass without one, it
  writes to stderr which step the run was on, how to resume and every thread's
  Python stack (`faulthandler.dump_traceback`), then calls `os._exit(WATCHDOG_EXIT)`.
  Should the thread never get the GIL, `faulthandler.dump_traceback_later`
  (a C thread, re-armed at every call) dumps the stacks and exits (status 1) a
  minute later. `timeout_s <= 0` disables it.
  """

  def __init__(self, timeout_s: float, first_s: float, resume_hint: str = '', file=None):
    self.timeout_s, self.first_s = float(timeout_s), max(float(first_s), float(timeout_s))
    self.resume_hint = resume_hint or _RESUME
    self.file = file or sys.stderr
    self._position, self._deadline = 'before the first step (compiling)', None
    self._cond = threading.Condition()
    self._closed = False
    self._thread = None

  @property
  def enabled(self) -> bool:
    return self.timeout_s > 0

  def start(self):
    if self.enabled:
      self._arm(self.first_s)
      self._thread = threading.Thread(target=self._watch, name='jaxca-watchdog', daemon=True)
      self._thread.start()
    return self

  def progress(self, position: str, next_compiles: bool = False):
    if self.enabled and not self._closed:
      self._position = position
      self._arm(self.first_s if next_compiles else self.timeout_s)

  def close(self):
    if self.enabled:
      with self._cond:
        self._closed = True
        self._cond.notify_all()
      faulthandler.cancel_dump_traceback_later()

  def _arm(self, seconds):
    with self._cond:
      self._limit, self._deadline = seconds, time.monotonic() + seconds
      self._cond.notify_all()
    faulthandler.dump_traceback_later(seconds + 60, exit=True, file=self.file)

  def _watch(self):
    with self._cond:
      while not self._closed:
        left = self._deadline - time.monotonic()
        if left <= 0:
          return self._fire()
        self._cond.wait(left)

  def _fire(self):
    self.file.write(
      f'\nwatchdog: no progress for {self._limit:.0f} s; the run is stuck {self._position}'
      if self._position.startswith('before')
      else f'\nwatchdog: no progress for {self._limit:.0f} s after {self._position}'
    )
    self.file.write(
      f'. {self.resume_hint} (--watchdog_s=0 turns this check off; --watchdog_s / '
      '--watchdog_first_s set the limits.) Stacks of every thread:\n'
    )
    self.file.flush()
    faulthandler.dump_traceback(file=self.file, all_threads=True)
    self.file.flush()
    sys.stdout.flush()
    os._exit(WATCHDOG_EXIT)


def _stop_at_next_step(signum, frame):
  """SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption): stop at the next `at`."""
  del frame
  _state['stop'], _state['signal'] = True, signum
  if signum == signal.SIGTERM:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM stops at once
    what, again = 'SIGTERM', 'a second SIGTERM stops now'
  else:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
    what, again = 'Ctrl-C', 'Ctrl-C again to stop now'
  print(
    f'\n{what}: stopping at the end of the current step ({again}).', file=sys.stderr, flush=True
  )


def note(message: str):
  """One line for the user (stdout, flushed); progress bars go to stderr."""
  print(message, flush=True)


# ----------------------------------------------------------------------------- config drift


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (JSON-ready configs)."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, Mapping):
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


_ABSENT = '(absent)'


@dataclasses.dataclass(frozen=True)
class Rename:
  """A config key renamed (or an "off" sentinel replaced) since runs were written.

  `old` and `new` are flattened keys; a `*` stands for one part (an arm's name) and is
  carried over. `value` maps the old value to the new one (None: unchanged).
  """

  old: str
  new: str
  value: Optional[Callable[[Any], Any]] = None
  why: str = ''


def _off(sentinel):
  return lambda v: None if v == sentinel else v


# Every rename of a config key (issue 22: one name per concept, None for "off"), in one place.
# `migrate_config` reads an existing workdir's config.json (and done.json) through it, so a
# run written before a rename resumes with the same settings; `--config.<old key>` fails
# naming the new one (`unknown_key_message`). BUILD_NOTES.md > Decisions gives the reasons.
RENAMES = (
  Rename('rl.lr', 'optim.lr', why='the RL optimizer has its own section, as in arith_rl'),
  Rename('arms.*.rl.lr', 'arms.*.optim.lr', why="an arm's override of optim.lr"),
  Rename('num_seeds', 'seeds', lambda n: list(range(n)), why='independent runs: seeds'),
  Rename('loss.clip_eps_high', 'loss.clip_eps_high', _off(0.0), why='None: = clip_eps'),
  Rename('arms.*.loss.clip_eps_high', 'arms.*.loss.clip_eps_high', _off(0.0)),
  Rename('loss.vf_clip', 'loss.vf_clip', _off(0.0), why='None: the value loss is not clipped'),
  Rename('debug.nan_after_step', 'debug.nan_after_step', _off(-1), why='None: off'),
  Rename('init_from', 'init_from', _off(''), why='None: this workdir runs the warm start'),
  Rename('arms.*.planning', 'arms.*.planning', _off(''), why='None: no planning set'),
  Rename('arms.*.mc', 'arms.*.mc', _off(''), why='None: no Monte-Carlo values'),
  Rename('arms.*.wall_budget', 'arms.*.wall_budget', _off(''), why='None: rl.max_wall_s'),
  Rename('credit.stages', 'credit.stages', _off(''), why='None: no user stages'),
  Rename('data.dir', 'data.dir', _off(''), why='None: <workdir>/data'),
  Rename('data.path', 'data.path', _off(''), why='None: none given (llm_rl)'),
  Rename('model.path', 'model.path', _off(''), why='None: none given (llm_rl)'),
  Rename('tokenizer.path', 'tokenizer.path', _off(''), why='None: model.path'),
  Rename('task.pad_token', 'task.pad_token', _off(''), why="None: the tokenizer's"),
)


def _rename_match(pattern: str, key: str) -> Optional[list]:
  """The parts `*` stands for when `key` matches `pattern`, else None."""
  p, k = pattern.split('.'), key.split('.')
  if len(p) != len(k) or any(a not in ('*', b) for a, b in zip(p, k)):
    return None
  return [b for a, b in zip(p, k) if a == '*']


def _rename_fill(pattern: str, stars: list) -> str:
  stars = iter(stars)
  return '.'.join(next(stars) if part == '*' else part for part in pattern.split('.'))


def migrate_config(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict:
  """`old` (a run's config.json) with the keys of `RENAMES` moved to their names in `new`.

  A rename applies only where `new` has the new key and not the old one (`num_seeds` stays
  in the configs that still count vmapped trials with it). Returns a nested dict.
  """
  flat, have = flatten(old), flatten(new)
  for r in RENAMES:
    for key in list(flat):
      stars = _rename_match(r.old, key)
      if stars is None:
        continue
      target = _rename_fill(r.new, stars)
      if target not in have or (target != key and key in have):
        continue
      value = flat.pop(key)
      flat[target] = r.value(value) if r.value is not None else value
  out = {}
  for key, value in flat.items():
    *parents, leaf = key.split('.')
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def renamed_key(config, path: str) -> Optional[str]:
  """The new name of `path` when it is an old key of `RENAMES` and `config` has the new one."""
  keys = set(config_keys(config))
  for r in RENAMES:
    stars = _rename_match(r.old, path)
    if stars is not None and r.new != r.old and _rename_fill(r.new, stars) in keys:
      return _rename_fill(r.new, stars)
  return None


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list:
  """[(key, old value, new value)] for every flattened key that differs, sorted."""
  a, b = flatten(old), flatten(new)
  return [
    (k, a.get(k, _ABSENT), b.get(k, _ABSENT))
    for k in sorted(set(a) | set(b))
    if a.get(k, _ABSENT) != b.get(k, _ABSENT)
  ]


def config_differences(workdirs, ignore=()) -> list:
  """How the configs of the runs in `workdirs` differ, outside the keys `ignore` (a key, or a
  prefix ending in '.'): one line per run that differs from the first.

  Keys renamed since a run was written (`RENAMES`) are compared by their new name; a run
  without `config.json` is named as such (its config cannot be compared).
  """
  configs = {w: read_json(os.path.join(w, CONFIG_FILE)) for w in workdirs}
  out = [f'{w} has no {CONFIG_FILE}' for w, c in configs.items() if c is None]
  known = [(w, c) for w, c in configs.items() if c is not None]
  first = known[0][1] if known else None
  for w, c in known[1:]:
    diffs = [
      f'{k}: {a!r} vs {b!r}'
      for k, a, b in config_diff(migrate_config(first, c), migrate_config(c, first))
      if not any(k == p or (p.endswith('.') and k.startswith(p)) for p in ignore)
    ]
    if diffs:
      out.append(f'{known[0][0]} and {w} differ in ' + '; '.join(diffs))
  return out


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
  """The short commit of the checkout the run starts from ('unknown' outside git), for reports.

  Read once per process (the CLI reads it at start), so a report written at the end of a long
  run names the code that ran, not a commit made in the checkout meanwhile.
  """
  try:
    out = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, timeout=10
    )
    return out.stdout.strip() or 'unknown'
  except (OSError, subprocess.SubprocessError):
    return 'unknown'


def config_json(config) -> dict:
  """The config as the JSON dict written to `config.json` (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def read_json(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_resume(
  workdir: str,
  config,
  safe_keys: Sequence[str] = (),
  allow_change: bool = False,
  overridden: Sequence[str] = (),
  shape_keys: Sequence[str] = (),
) -> list:
  """Compares `config` with `<workdir>/config.json`; raises ConfigError on unsafe changes.

  A key the run's config.json lacks (added to the config file since the run) at the value
  the config file gives it (not in `overridden`, the keys set on the command line) is not a
  change: new options are added off by default, so the run already computed that value.

  `shape_keys` (keys, or prefixes ending in '.') change the shapes of what the run's
  checkpoints hold; a change of one is refused even with `allow_change`, before anything
  is read or written (a restore could not fit the saved arrays into the new shapes).

  The run's config.json is read through `migrate_config` (keys renamed since, `RENAMES`), so
  a workdir written before a rename resumes when only the names differ.

  Returns the differing (key, old, new) triples that are allowed (safe keys, keys added
  since the run at their defaults, or any with `allow_change`); empty for a new workdir.
  """
  old = read_json(os.path.join(workdir, CONFIG_FILE))
  if old is None:
    return []
  new = config_json(config)
  diffs = config_diff(migrate_config(old, new), new)
  added = {k for k, o, _ in diffs if o == _ABSENT and k not in set(overridden)}
  unsafe = [d for d in diffs if d[0] not in safe_keys and d[0] not in added]
  shaped = [d for d in unsafe if any(_matches(d[0], k) for k in shape_keys)]
  if shaped and allow_change:
    changes = '; '.join(f'config.{k}: {o!r} -> {n!r}' for k, o, n in shaped)
    raise ConfigError(
      f'{changes} changes the shapes of the arrays in the checkpoints of {workdir}, so '
      '--allow_config_change cannot resume with it: pass a new --workdir (config.init_from='
      f'{workdir} starts from its parameters where the experiment supports it).'
    )
  if unsafe and not allow_change:
    changes = '; '.join(f'config.{k}: {o!r} -> {n!r}' for k, o, n in unsafe)
    safe = ', '.join(safe_keys) if safe_keys else 'none'
    raise ConfigError(
      f'the config differs from the run in {workdir} ({CONFIG_FILE}): {changes}. '
      'Resuming would mix two configs: pass a new --workdir, or --allow_config_change to '
      f'resume with the new values (keys that may change on resume: {safe}).'
    )
  return diffs


def same_run(old: Mapping[str, Any], config, overridden: Sequence[str] = ()) -> bool:
  """True when `config` is the config of a run recorded as `old` (a done.json's config): equal
  after `migrate_config`, up to keys added since the run at their defaults (`check_resume`)."""
  new = config_json(config)
  diffs = config_diff(migrate_config(old, new), new)
  return all(o == _ABSENT and k not in set(overridden) for k, o, _ in diffs)


def _matches(key: str, pattern: str) -> bool:
  return key == pattern or (pattern.endswith('.') and key.startswith(pattern))


# `credit` keys that are not stage options (the spec, a module of stages, the whitening switch).
_NOT_STAGE_OPTIONS = ('estimator', 'stages', 'whiten')


def check_explicit_options(config, overridden: Sequence[str]):
  """Raises ConfigError when a `credit.<option>` set on the command line (`overridden`) is
  read by no stage of the chosen estimator spec; the message names the stages that take it.

  Config defaults the spec ignores stay fine (`estimators.from_config`); only what the user
  set explicitly must matter. Configs without a `credit.estimator` are left alone.
  """
  explicit = [k.partition('.')[2] for k in overridden if k.startswith('credit.')]
  explicit = [k for k in explicit if '.' not in k and k not in _NOT_STAGE_OPTIONS]
  if not explicit or 'credit' not in config or 'estimator' not in config.credit:
    return
  from jaxca import estimators  # pylint: disable=g-import-not-at-top

  try:
    estimators.from_config(config.credit, explicit=explicit)
  except (ValueError, TypeError) as e:
    raise ConfigError(f'config.credit: {e}') from None


def check_grid(config):
  """Raises ConfigError unless `config.seeds` and `config.run_arms` are non-empty, every run
  arm is defined in `config.arms` and none repeats: the arms x seeds grid of a reproduction."""
  if not config.seeds:
    raise ConfigError('config.seeds is empty.')
  if not config.run_arms:
    raise ConfigError('config.run_arms is empty.')
  unknown = [a for a in config.run_arms if a not in config.arms]
  if unknown:
    raise ConfigError(
      f'config.run_arms: {unknown} not in config.arms; defined: {sorted(config.arms)}.'
    )
  if len(set(config.run_arms)) != len(config.run_arms):
    raise ConfigError(f'config.run_arms repeats an arm: {list(config.run_arms)}.')


def is_smoke(config_arg: Optional[str]) -> bool:
  """True for `--config configs/x.py:smoke` (or `:smoke=true,...`)."""
  _, _, args = (config_arg or '').partition(':')
  for item in args.split(','):
    key, _, value = item.partition('=')
    if key.strip() == 'smoke' and value.strip().lower() in ('', 'true', '1', 'yes'):
      return True
  return False


def _inside(path: str, root: str) -> bool:
  path, root = os.path.realpath(path), os.path.realpath(root)
  return path == root or path.startswith(root + os.sep)


def resolve_workdir(workdir: Optional[str], name: str, *, smoke: bool = False) -> str:
  """`workdir`, or `runs/<name>` (`runs/<name>_smoke` for a smoke config) when None.

  A smoke config may not write under results/.
  """
  if not workdir:
    return os.path.join(RUNS_DIR, f'{name}_smoke' if smoke else name)
  if smoke and _inside(workdir, RESULTS_DIR):
    raise ConfigError(
      f'--workdir={workdir} is under {RESULTS_DIR}/ (committed results) and this is a smoke '
      f'config; write smoke runs elsewhere (the default is {RUNS_DIR}/{name}_smoke).'
    )
  return workdir


def check_steps_reached(directory: str, key: str, steps: int):
  """Raises ConfigError if `directory` holds a checkpoint past `steps` (config `key`).

  A safe key such as `rl.steps` may grow on resume; lowered below the step a run already
  reached, config.json and done.json would say fewer steps than the checkpoints, metrics
  and summary. Checkpoints are orbax step directories named by their step.
  """
  reached = max(
    (int(n) for n in (os.listdir(directory) if os.path.isdir(directory) else ()) if n.isdigit()),
    default=None,
  )
  if reached is not None and reached > steps:
    raise ConfigError(
      f'config.{key}={steps} is below the step this run already reached ({reached}, in '
      f'{directory}); a run cannot be shortened: set {key} >= {reached}, or pass a new '
      '--workdir.'
    )


# ----------------------------------------------------------------------------- finite losses


def check_finite(
  metrics: Mapping[str, Any],
  keys: Sequence[str],
  *,
  phase: str,
  step: int,
  checkpointer=None,
):
  """Raises FloatingPointError if any entry of `metrics[k]` (k in keys) is not finite.

  The message names the phase, the step, the offending values and the last good
  checkpoint of `checkpointer` (a `jaxca.checkpoint.Checkpointer`, waited for), so
  the user knows what a rerun resumes from. Nothing is saved by this function.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  bad = {
    k: np.asarray(metrics[k], np.float64)
    for k in keys
    if k in metrics and not np.all(np.isfinite(np.asarray(metrics[k], np.float64)))
  }
  if not bad:
    return
  last, where = None, '(no workdir)'
  if checkpointer is not None:
    checkpointer.wait()
    last, where = checkpointer.latest_step(), checkpointer.directory
  values = ', '.join(f'{k} {v.ravel().tolist()[:8]}' for k, v in bad.items())
  raise FloatingPointError(
    f'Non-finite loss or parameters in the {phase} phase at step {step} ({values}); stopping '
    f'without saving. The last good checkpoint is step {last} in {where}; {NAN_ADVICE}.'
  )


# ----------------------------------------------------------------------------- workdir lock


@contextlib.contextmanager
def lock_workdir(workdir: str):
  """Holds an exclusive lock on `workdir` (created if needed) while the block runs.

  The lock is `fcntl.flock` on `<workdir>/.jaxca.lock`, which also holds the holder's PID;
  the kernel releases it when the process ends, however it ends (a SIGKILL too), so a
  killed run never leaves a stale lock. A second process raises ConfigError naming the
  holder's PID and the ways out, before it has written anything.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'--workdir={workdir} is a file, not a directory; pass a directory.')
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
      raise ConfigError(
        f'{workdir} is in use by another run (process {holder} holds {path}); wait for it to '
        f'finish, stop it (kill -INT {holder} stops it at the next step; rerunning resumes), '
        'or pass a new --workdir.'
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    yield path
  finally:
    os.close(fd)  # releases the lock


def check_writable(workdir: str, names: Sequence[str]):
  """Raises ConfigError (one line) if a file `names` the run will write in `workdir` cannot be.

  Called before a run starts, so an unwritable `results.md` does not fail a run only after
  all of its training. Existing files are opened for appending (their content is untouched).
  """
  for name in names:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      raise ConfigError(
        f'{path} is a directory, but the run writes a file there: move it away or pass a new '
        '--workdir.'
      )
    if os.path.exists(path):
      try:
        with open(path, 'a'):
          pass
      except OSError as e:
        raise ConfigError(
          f'cannot write {path} ({e.strerror}); make it writable or pass a new --workdir.'
        ) from None


_IO_ERRNOS = {
  errno.ENOSPC: 'free some space, then rerun the same command to resume',
  errno.EDQUOT: 'free some of your quota, then rerun the same command to resume',
  errno.EROFS: 'the file system is read-only: pass a --workdir on a writable one',
  errno.EACCES: 'check its permissions, or pass a new --workdir',
  errno.EPERM: 'check its permissions, or pass a new --workdir',
  errno.ENOTDIR: 'a part of the path is a file: pass a new --workdir',
  errno.EISDIR: 'a directory stands where a file is written: move it or pass a new --workdir',
}


def _io_error(error: BaseException) -> Optional[OSError]:
  """The OSError (disk full, read-only, ...) behind `error`, looking through its causes."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _IO_ERRNOS:
      return error
    error = error.__cause__ or error.__context__
  return None


# ----------------------------------------------------------------------------- flags and main


@dataclasses.dataclass
class Experiment:
  """What `main` needs to know about one experiment.

  Attributes:
    name: the default workdir is `runs/<name>` (`runs/<name>_smoke` for a smoke config).
    run: run(config, workdir) -> one summary line (what was measured, where written).
    validate: validate(config) raises ConfigError; called before anything is written.
    safe_keys: flattened config keys that may differ when resuming a workdir.
    setup: optional setup() called first (e.g. distributed init, JAX flags).
    resume_hint: what a Ctrl-C or the watchdog tells the user about resuming (default:
      rerunning the same command resumes from the last checkpoint).
    outputs: the files `run` writes in the workdir (besides config.json and done.json);
      checked for writability before the run starts (`check_writable`).
    shape_keys: config keys (or prefixes ending in '.') that change the shapes of what the
      run checkpoints; `--allow_config_change` refuses them up front (`check_resume`).
    next_steps: optional next_steps(config, workdir) -> what to try next, printed after the
      summary ('Next: ...') of a finished run.
    check_workdir: optional check_workdir(config, workdir), called after the resume check
      and before anything is written; raises ConfigError for a workdir the config cannot
      continue (e.g. fewer steps than its checkpoints already reached).
  """

  name: str
  run: Callable[[Any, str], str]
  validate: Callable[[Any], Any]
  safe_keys: Sequence[str] = ()
  setup: Optional[Callable[[], None]] = None
  resume_hint: str = ''
  outputs: Sequence[str] = ()
  check_workdir: Optional[Callable[[Any, str], None]] = None
  shape_keys: Sequence[str] = ()
  next_steps: Optional[Callable[[Any, str], str]] = None


def define_flags(name: str, config_help: str = ''):
  """--config, --workdir and the harness switches (called by `if __name__ == '__main__'`)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file(
    'config',
    None,
    config_help
    or f'Config file: configs/{name}.py (add :smoke for a seconds-long check); override '
    'its keys with --config.<key>=<value>.',
    lock_config=True,
  )
  _one_line_override_errors(flags.FLAGS['config'])
  flags.DEFINE_string(
    'workdir',
    None,
    f'Output directory (default {RUNS_DIR}/{name}, {RUNS_DIR}/{name}_smoke for a :smoke '
    'config); rerun to resume.',
  )
  flags.DEFINE_bool('dry_run', False, 'Validate and print the resolved config; write nothing.')
  flags.DEFINE_bool(
    'allow_config_change', False, 'Resume a workdir although the config differs from its own.'
  )
  flags.DEFINE_bool('rewrite', False, 'Run again although the workdir holds a complete run.')
  flags.DEFINE_bool('debug', False, 'Tracebacks for config errors, INFO logs (absl, orbax, JAX).')
  flags.DEFINE_float(
    'watchdog_s',
    900,
    "Exit (status 124, with every thread's stack) after this many seconds without progress "
    '(a hang); 0 turns the watchdog off.',
  )
  flags.DEFINE_float(
    'watchdog_first_s', 3600, "The watchdog's limit for the first step (it compiles)."
  )
  flags.DEFINE_integer(
    'debug_stall_at', 0, 'Testing: hang at the N-th step (0: never) to exercise the watchdog.'
  )
  # `--help` lists the main module's key flags: make the harness's flags the experiment's.
  main_module = sys.argv[0] if sys.argv else ''
  for flag in ('config', 'workdir', 'dry_run', 'allow_config_change', 'rewrite', 'debug'):
    flags.FLAGS.register_key_flag_for_module(main_module, flags.FLAGS[flag])


def config_keys(config) -> list:
  """Every flattened key of `config` (a ConfigDict), sections included: ['a', 'a.b', ...]."""
  out = []
  for k, v in config.items():
    out.append(k)
    if hasattr(v, 'items'):
      out += [f'{k}.{sub}' for sub in config_keys(v)]
  return out


def closest_keys(key: str, keys: Sequence[str], n: int = 3) -> list:
  """Up to `n` of `keys` closest to `key`: same last part first, then by spelling (difflib)."""
  import difflib  # pylint: disable=g-import-not-at-top

  leaf = key.rpartition('.')[2]
  same_leaf = [k for k in keys if k.rpartition('.')[2] == leaf]
  by_leaf = {}
  for k in keys:
    by_leaf.setdefault(k.rpartition('.')[2], []).append(k)
  near_leaf = [
    k for name in difflib.get_close_matches(leaf, list(by_leaf), n=n) for k in by_leaf[name]
  ]
  near_path = difflib.get_close_matches(key, keys, n=n)
  out = []
  for k in near_path[:1] + same_leaf + near_leaf:
    if k not in out:
      out.append(k)
  return out[:n]


def unknown_key_message(config, path: str) -> Optional[str]:
  """One line for `--config.<path>` when `path` is not a key of `config`; None when it is."""
  keys = config_keys(config)
  if path in keys:
    return None
  renamed = renamed_key(config, path)
  if renamed:
    return f'--config.{path}: config.{path} is not a config key (renamed to config.{renamed}).'
  parent = path.rpartition('.')[0]
  close = closest_keys(path, keys)
  hint = f'closest: {", ".join("config." + k for k in close)}' if close else 'no close key'
  if parent in keys and hasattr(_get(config, parent), 'items'):
    section = ', '.join(_get(config, parent).keys())
    hint += f'; config.{parent} has {section}'
  return f'--config.{path}: config.{path} is not a config key ({hint}).'


def _get(config, path):
  for part in path.split('.'):
    config = config[part]
  return config


def _one_line_override_errors(flag):
  """Unknown keys and unparsable values in `--config.<key>=...` become one line, exit 2.

  ml_collections raises an AttributeError (a traceback) for a key the config lacks and absl
  exits 1 with two lines for a value of the wrong type; both become `fail` lines naming
  the key and the closest valid keys, or the key's type and current value (`--debug`
  keeps the library's error).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top

  parse = flag._parse  # pylint: disable=protected-access

  def _parse(argument):
    if '--debug' in sys.argv:
      return parse(argument)
    try:
      config = parse(argument)
    except flags.Error:
      raise
    except Exception as e:  # noqa: BLE001 -- an unknown key (AttributeError, KeyError)
      overrides = flag._GetOverrides(flag._GetArgv())  # pylint: disable=protected-access
      try:
        base = flag.parser.parse(argument)
      except Exception:  # noqa: BLE001 -- the config file itself fails: the library's error
        raise e from None
      for path in overrides:
        message = unknown_key_message(base, path)
        if message:
          fail(message)
      fail(f'--config: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')
    for path in flag._GetOverrides(flag._GetArgv()):  # pylint: disable=protected-access
      name = f'{flag.name}.{path}'
      if name in flags.FLAGS:
        _one_line_value_errors(flags.FLAGS[name], path, config)
    return config

  flag._parse = _parse  # pylint: disable=protected-access


def _one_line_value_errors(field_flag, path, config):
  parse = field_flag.parse

  def _parse(argument):
    try:
      return parse(argument)
    except Exception as e:  # noqa: BLE001 -- a value of the wrong type
      try:
        current = _get(config, path)
      except (KeyError, AttributeError):
        current = None
      what = f'; config.{path} is {type(current).__name__} ({current!r})' if current else ''
      detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      detail = re.sub(r'^flag --\S+: ', '', detail)  # absl repeats the flag
      fail(f'--config.{path}={argument}: {detail}{what}.')

  field_flag.parse = _parse


class _Quiet(pylogging.Filter):
  """Drops orbax INFO (one line per save), tfds's warnings about its own builder config and
  library tracebacks of a Ctrl-C."""

  def filter(self, record):
    if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
      return False  # Ctrl-C inside a library call: `guarded` prints one line instead
    if 'orbax' in record.pathname:
      return record.levelno >= pylogging.WARNING
    if 'tensorflow_datasets' in record.pathname:
      return record.levelno >= pylogging.ERROR
    return True


def quiet_logs(debug: bool = False):
  """INFO logs off (absl, JAX backends, orbax saves, tfds builders) unless `debug`."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  if debug:
    return
  logging.get_absl_handler().addFilter(_Quiet())
  if not (flags.FLAGS.is_parsed() and flags.FLAGS['verbosity'].present):
    logging.set_verbosity(logging.WARNING)
  for name in ('jax._src.xla_bridge', 'orbax', 'absl', 'tensorflow_datasets'):
    pylogging.getLogger(name).setLevel(pylogging.WARNING)


def fail(message: str, code: int = 2):
  """Prints `<prog>: error: message` on stderr (one line) and exits with `code`."""
  prog = os.path.basename(sys.argv[0]) if sys.argv else 'jaxca'
  if prog in ('__main__.py', '-m', '-c', ''):
    prog = 'jaxca'
  print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def guarded(fn: Callable[[], Any], debug: bool = False):
  """Calls fn(); config/usage errors and Ctrl-C become one line and an exit status."""
  from absl import app  # pylint: disable=g-import-not-at-top

  try:
    return fn()
  except (ConfigError, app.UsageError) as e:
    if debug:
      raise
    fail(str(e).strip().replace('\n', ' '))
  except Exception as e:  # noqa: BLE001 -- only I/O errors are turned into one line
    io = _io_error(e)
    if io is None or debug:
      raise
    where = f': {io.filename}' if io.filename else ''
    fail(f'{io.strerror}{where}; {_IO_ERRNOS[io.errno]}.', code=1)
  except KeyboardInterrupt:
    where = f' at {_state["position"]}' if _state['position'] else ''
    print(
      f'\nInterrupted{where}. {_state["resume_hint"] or _RESUME}',
      file=sys.stderr,
      flush=True,
    )
    sys.exit(128 + _state['signal'])  # 130 after Ctrl-C, 143 after SIGTERM


def main(experiment: Experiment) -> Callable[[Sequence[str]], None]:
  """The `main(argv)` for `absl.app.run`: validate, check the workdir, run, summarise."""

  def _main(argv):
    from absl import flags  # pylint: disable=g-import-not-at-top

    FLAGS = flags.FLAGS  # noqa: N806
    quiet_logs(FLAGS.debug)
    guarded(lambda: _run(experiment, argv, FLAGS), FLAGS.debug)

  return _main


def _run(experiment, argv, FLAGS):  # noqa: N803
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; options are --flags.')
  config = FLAGS.config
  if config is None:
    raise app.UsageError(f'--config is required, e.g. --config configs/{experiment.name}.py')
  signal.signal(signal.SIGINT, _stop_at_next_step)
  signal.signal(signal.SIGTERM, _stop_at_next_step)
  _state['stall_at'] = FLAGS.debug_stall_at
  _state['resume_hint'] = experiment.resume_hint
  git_commit()  # the commit this run starts from (cached for the reports)
  if experiment.setup is not None:
    experiment.setup()
  experiment.validate(config)
  overridden = tuple(getattr(FLAGS['config'], 'override_values', {}) or {})
  check_explicit_options(config, overridden)
  smoke = is_smoke(config_flags.get_config_filename(FLAGS['config']))
  workdir = resolve_workdir(FLAGS.workdir, experiment.name, smoke=smoke)
  if FLAGS.dry_run:
    note(str(config).rstrip())
    note(f'config OK; a run would write to {workdir}/ (nothing written: --dry_run)')
    return

  def checks():  # (accepted config changes, done.json or None)
    diffs = check_resume(
      workdir,
      config,
      experiment.safe_keys,
      FLAGS.allow_config_change,
      overridden=overridden,
      shape_keys=experiment.shape_keys,
    )
    if experiment.check_workdir is not None and os.path.isdir(workdir):
      experiment.check_workdir(config, workdir)
    done = read_json(os.path.join(workdir, DONE_FILE))
    complete = done is not None and same_run(done.get('config') or {}, config, overridden)
    if complete and not FLAGS.rewrite:
      note(f'{workdir} holds a complete run of this config; nothing to do.')
      note(done.get('summary', ''))
      note('(--rewrite runs it again into the same workdir; a new --workdir starts afresh.)')
      return diffs, done, True
    return diffs, done, False

  if checks()[2]:
    return
  primary = _is_primary()
  with contextlib.ExitStack() as stack:
    if primary:  # one run per workdir; the checks again, now that no other run can write
      stack.enter_context(lock_workdir(workdir))
      diffs, done, finished = checks()
      if finished:
        return
    _run_locked(experiment, config, workdir, primary, diffs, done, FLAGS, smoke)


SMOKE_LABEL = 'smoke config (checks that everything runs; its numbers are not results): '


def closing_lines(summary: str, smoke: bool, next_steps: str = '') -> list:
  """The lines a run ends with: the summary (labelled when a smoke config ran), then what
  to try next (`Experiment.next_steps`), if anything."""
  lines = [(SMOKE_LABEL if smoke else '') + summary]
  return lines + ([f'Next: {next_steps}'] if next_steps else [])


def _run_locked(experiment, config, workdir, primary, diffs, done, FLAGS, smoke=False):  # noqa: N803
  if primary:
    check_writable(workdir, (CONFIG_FILE, DONE_FILE, *experiment.outputs))
    resumed = os.path.exists(os.path.join(workdir, CONFIG_FILE))
    if diffs:
      note('config changes accepted: ' + '; '.join(f'{k}: {o!r} -> {n!r}' for k, o, n in diffs))
    note(f'{experiment.name}: {"resuming" if resumed else "writing to"} {workdir}/ (config.json)')

    def record():  # after setup succeeded (`begin`): a failed start leaves the record alone
      _write_json(os.path.join(workdir, CONFIG_FILE), config_json(config))
      if done is not None and os.path.exists(os.path.join(workdir, DONE_FILE)):
        os.remove(os.path.join(workdir, DONE_FILE))

    _state['record'] = record
  watchdog = _state['watchdog'] = Watchdog(
    FLAGS.watchdog_s, FLAGS.watchdog_first_s, experiment.resume_hint
  ).start()
  try:
    summary = experiment.run(config, workdir)
    begin()
  finally:
    _state['record'] = None
    watchdog.close()
    _state['watchdog'] = None
  summary, *rest = closing_lines(
    summary, smoke, experiment.next_steps(config, workdir) if experiment.next_steps else ''
  )
  if primary:
    _write_json(os.path.join(workdir, DONE_FILE), dict(summary=summary, config=config_json(config)))
  for line in (summary, *rest):
    note(line)


def _is_primary():
  try:
    import jax  # pylint: disable=g-import-not-at-top

    return jax.process_index() == 0
  except Exception:  # noqa: BLE001 -- no JAX backend: a single process
    return True


def _write_json(path, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)
