"""Fault injection: runs that meet a second process, a kill, a full disk or a NaN (jaxca.runs).

* a second process on a running workdir is refused in one line naming the holder's PID;
* two processes building the same dataset at once both finish;
* a kill while `metrics.jsonl` is rewritten on resume leaves the old file, and a run
  SIGKILLed at chosen points (`runs.debug_kill_point`) resumes to the metrics of an
  uninterrupted run;
* a torn last line (disk full inside a write) is dropped with a message, and disk-full,
  read-only, a workdir that is a file and an unwritable results file are one-line errors;
* a state with a NaN is never saved (nor named the last good checkpoint), and the advice
  of the NaN message is one the resume check accepts;
* every compile of a fresh and of a resumed arith_rl run comes after a progress call that
  gives the watchdog its first-step allowance (`at(..., next_compiles=True)`);
* a safe key (rl.steps) lowered below the step a finished run reached is refused;
* SIGTERM stops at a step boundary like Ctrl-C (exit 143) and a stop on any host stops
  every host (simulated all-gather);
* ppo_gymnax's TensorBoard events written after the checkpoint a run resumes from are purged.

Most runs use a tiny experiment of the harness (no JAX program: one Python start each);
only the checks that need a real experiment run a smoke config (arith_rl, ppo_gymnax),
in-process where they can. Every subprocess has a timeout, so a hang fails with the
captured output. The module takes about a minute on the 2-core CPU.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

from jaxca import runs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 120

TINY = """
import os
import time
from absl import app
from jaxca import metrics
from jaxca import runs

def run(config, workdir):
  if config.fail_setup:  # a start that fails while it sets up (data, model, restore)
    raise RuntimeError('setup failed')
  done = [r for r in metrics.read(workdir)]
  writer = metrics.Writer(workdir, keep=lambda r: True)
  try:
    for i in range(len(done) + 1, config.steps + 1):
      time.sleep(config.step_s)
      writer.write(i, dict(loss=1.0 / i))
      while i == 1 and config.hold and not os.path.exists(config.hold):  # held by the test
        time.sleep(0.05)
      runs.at(f'step {i} of {config.steps}')
  finally:
    writer.close()
  return f'finished {config.steps} steps'

def validate(config):
  pass

if __name__ == '__main__':
  runs.define_flags('tiny')
  app.run(runs.main(runs.Experiment('tiny', run, validate)))
"""

TINY_CONFIG = """
import ml_collections

def get_config():
  return ml_collections.ConfigDict(dict(steps=4, step_s=0.05, hold='', fail_setup=False))
"""


def _env():
  return dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])),
  )


def _tiny_cmd(tmp_path, workdir, *flags):
  (tmp_path / 'tiny.py').write_text(textwrap.dedent(TINY))
  (tmp_path / 'tiny_config.py').write_text(textwrap.dedent(TINY_CONFIG))
  return [
    sys.executable,
    str(tmp_path / 'tiny.py'),
    f'--config={tmp_path / "tiny_config.py"}',
    f'--workdir={workdir}',
    *flags,
  ]


def _tiny(tmp_path, workdir, *flags):
  cmd = _tiny_cmd(tmp_path, workdir, *flags)
  return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


def _one_line_error(proc, *fragments, code=2):
  assert proc.returncode == code, proc.stdout + proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


def _records(workdir):
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


# ----------------------------------------------------------------------------- 0. failed starts


def test_a_failed_start_leaves_the_workdir_record_alone(tmp_path):
  """A run that fails while it sets up writes no config.json and keeps done.json, so the
  corrected command is not refused as config drift (issue 27 item 5)."""
  workdir = tmp_path / 'w'
  proc = _tiny(tmp_path, workdir, '--config.fail_setup=True', '--config.steps=2')
  assert proc.returncode == 1 and 'setup failed' in proc.stderr, proc.stdout + proc.stderr
  assert not (workdir / runs.CONFIG_FILE).exists()
  proc = _tiny(tmp_path, workdir, '--config.steps=2')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  record = {n: (workdir / n).read_text() for n in (runs.CONFIG_FILE, runs.DONE_FILE)}
  # A failed start with a safe change of a complete run: config.json and done.json stay.
  proc = _tiny(tmp_path, workdir, '--config.steps=2', '--config.fail_setup=True')
  assert proc.returncode != 0
  assert {n: (workdir / n).read_text() for n in record} == record
  proc = _tiny(tmp_path, workdir, '--config.steps=2')
  assert proc.returncode == 0 and 'complete run' in proc.stdout, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- 1. workdir lock


def test_a_second_process_on_a_running_workdir_is_refused_in_one_line(tmp_path):
  workdir, release = tmp_path / 'w', tmp_path / 'release'
  flags = ('--config.steps=40', '--config.step_s=0.01')
  first = subprocess.Popen(  # holds after its first step until `release` exists
    _tiny_cmd(tmp_path, workdir, *flags, f'--config.hold={release}'),
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.time() + TIMEOUT_S
    while not (workdir / 'metrics.jsonl').exists() and time.time() < deadline:
      assert first.poll() is None, first.communicate()
      time.sleep(0.1)
    second = _tiny(tmp_path, workdir, *flags, f'--config.hold={release}')
    line = _one_line_error(second, str(workdir), f'process {first.pid}', 'kill -INT', '--workdir')
    assert 'in use by another run' in line
    release.write_text('')
    out, err = first.communicate(timeout=TIMEOUT_S)
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 0, out + err
  assert [r['step'] for r in _records(workdir)] == list(range(1, 41))
  # The lock goes with the process: the next run of the complete workdir is not refused.
  again = _tiny(tmp_path, workdir, *flags, f'--config.hold={release}')
  assert again.returncode == 0 and 'complete run' in again.stdout, again.stderr


def test_lock_is_released_by_a_killed_process(tmp_path):
  workdir = tmp_path / 'w'
  with runs.lock_workdir(str(workdir)) as path:
    assert open(path).read().strip() == str(os.getpid())
    try:
      with runs.lock_workdir(str(workdir)):
        raise AssertionError('a second lock of the same workdir was granted')
    except runs.ConfigError as e:
      assert f'process {os.getpid()}' in str(e)
  proc = _tiny(tmp_path, workdir)  # the lock file is left behind; it is not a lock
  assert proc.returncode == 0, proc.stderr
  assert [r['step'] for r in _records(workdir)] == [1, 2, 3, 4]


def test_datasets_built_at_once_by_two_processes_both_finish(tmp_path, monkeypatch):
  from jaxca.tasks import arith  # pylint: disable=g-import-not-at-top
  from jaxca.tasks import arith_data  # pylint: disable=g-import-not-at-top

  cfg = arith.ArithConfig(num_steps=2, modulus=10)
  knobs = dict(num_train=32, num_test=8)
  generate = arith_data.ArithChains._generate_examples
  raced = []

  def generate_while_another_builds(self, split, num):
    if not raced:  # another process builds the same dataset while this one generates
      raced.append(True)
      arith_data.build(cfg, str(tmp_path), **knobs)
    return generate(self, split, num)

  monkeypatch.setattr(arith_data.ArithChains, '_generate_examples', generate_while_another_builds)
  builder = arith_data.build(cfg, str(tmp_path), **knobs)
  assert raced and builder.is_prepared()
  source = arith_data.load(cfg, str(tmp_path), **knobs)
  assert len(source['train']) == 32 and len(source['test']) == 8
  assert [p for p in os.listdir(tmp_path) if p.startswith('.')] == []  # no staging dir left


# ----------------------------------------------------------------------------- 2. metrics rewrite


def test_a_failure_while_metrics_are_rewritten_on_resume_keeps_the_old_file(tmp_path, monkeypatch):
  from jaxca import metrics  # pylint: disable=g-import-not-at-top

  writer = metrics.Writer(str(tmp_path), tensorboard=False)
  for step in range(1, 5):
    writer.write(step, dict(loss=1.0 / step))
  writer.close()
  before = (tmp_path / 'metrics.jsonl').read_text()
  calls = []

  def dumps_then_fail(obj, *args, **kwargs):  # the process dies after the first kept record
    calls.append(obj)
    if len(calls) > 1:
      raise KeyboardInterrupt
    return json.dumps(obj, *args, **kwargs)

  monkeypatch.setattr(metrics.json, 'dumps', dumps_then_fail)
  try:
    metrics.Writer(str(tmp_path), keep=lambda r: r['step'] <= 3, tensorboard=False)
    raise AssertionError('the rewrite did not fail')
  except KeyboardInterrupt:
    pass
  monkeypatch.undo()
  assert (tmp_path / 'metrics.jsonl').read_text() == before


def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_metrics(tmp_path):
  full = _tiny(tmp_path, tmp_path / 'full')
  assert full.returncode == 0, full.stderr
  workdir = tmp_path / 'w'
  for point in ('step 3 of 4', 'metrics.rewrite', 'step 4 of 4'):
    cmd = _tiny_cmd(tmp_path, workdir)
    proc = subprocess.run(
      cmd, env=dict(_env(), **{runs.DEBUG_KILL_ENV: point}), capture_output=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == -9, (point, proc.stderr)
    assert not (workdir / runs.DONE_FILE).exists()
  proc = _tiny(tmp_path, workdir)
  assert proc.returncode == 0, proc.stderr
  assert _records(workdir) == _records(tmp_path / 'full')


# ----------------------------------------------------------------------------- 3. full disks


class _FullDisk:
  """A file whose writes stop half-way with OSError(errno_) after `room` characters."""

  def __init__(self, f, room, errno_):
    self._f, self._room, self._errno = f, room, errno_

  def write(self, text):
    if len(text) > self._room:
      self._f.write(text[: self._room])
      self._f.flush()
      raise OSError(self._errno, os.strerror(self._errno), self._f.name)
    self._room -= len(text)
    return self._f.write(text)

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()


def _guarded_exit(fn, capsys):
  try:
    runs.guarded(fn)
  except SystemExit as e:
    err = capsys.readouterr().err
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    return e.code, err.strip()
  raise AssertionError('no error')


def test_a_full_disk_in_a_metrics_write_is_one_line_and_the_run_resumes(
  tmp_path, monkeypatch, capsys
):
  import errno  # pylint: disable=g-import-not-at-top

  from jaxca import metrics  # pylint: disable=g-import-not-at-top

  def run():
    writer = metrics.Writer(str(tmp_path), keep=lambda r: True, tensorboard=False)
    for step in range(len(writer.kept) + 1, 5):
      writer.write(step, dict(loss=1.0 / step))

  real_open = open
  monkeypatch.setattr(
    metrics,
    'open',
    lambda path, mode='r': (
      _FullDisk(real_open(path, mode), 60, errno.ENOSPC) if mode == 'a' else real_open(path, mode)
    ),
    raising=False,
  )
  code, line = _guarded_exit(run, capsys)
  assert code == 1 and 'No space left on device' in line and 'metrics.jsonl' in line, line
  assert 'rerun the same command to resume' in line
  monkeypatch.undo()
  # The half-written record is dropped, with a message, and the rerun writes the rest.
  assert not (tmp_path / 'metrics.jsonl').read_text().endswith('\n')
  assert [r['step'] for r in metrics.read(str(tmp_path))] == [1, 2]
  assert 'dropped the unfinished last line' in capsys.readouterr().err
  run()
  assert [r['step'] for r in metrics.read(str(tmp_path))] == [1, 2, 3, 4]


def test_a_read_only_workdir_is_one_line(tmp_path, monkeypatch, capsys):
  import errno  # pylint: disable=g-import-not-at-top

  from jaxca import metrics  # pylint: disable=g-import-not-at-top

  def read_only(path, mode='r'):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

  monkeypatch.setattr(metrics, 'open', read_only, raising=False)
  code, line = _guarded_exit(lambda: metrics.Writer(str(tmp_path)), capsys)
  assert code == 1 and 'Read-only file system' in line and 'writable' in line, line


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / 'w').write_text('not a workdir')
  _one_line_error(_tiny(tmp_path, tmp_path / 'w'), 'is a file, not a directory')
  assert (tmp_path / 'w').read_text() == 'not a workdir'


def test_an_unwritable_results_file_is_refused_before_training(tmp_path):
  from tests.experiments.cli_test import cli  # pylint: disable=g-import-not-at-top

  workdir = tmp_path / 'w'
  (workdir / 'results.md').mkdir(parents=True)
  start = time.time()
  proc = cli('arith_rl', f'--workdir={workdir}')
  _one_line_error(proc, 'results.md is a directory', '--workdir')
  assert not (workdir / 'metrics.jsonl').exists() and not (workdir / 'config.json').exists()
  assert time.time() - start < 60


# ----------------------------------------------------------------------------- 4. NaN checkpoints


def _arith_config(data_dir, **overrides):
  from configs import arith_rl as config_module  # pylint: disable=g-import-not-at-top

  c = config_module.get_config('smoke')
  c.data.dir = str(data_dir)
  for path, value in overrides.items():
    node = c
    *parents, leaf = path.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def test_a_non_finite_state_is_never_saved_or_named_the_last_good_one(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from experiments import arith_rl  # pylint: disable=g-import-not-at-top
  from jaxca import checkpoint  # pylint: disable=g-import-not-at-top

  # NaN params from RL step 4 on: the metrics of the chunk ending at step 4 are still finite
  # (computed before the poisoning), so only the state tells.
  config = _arith_config(tmp_path / 'data', **{'debug.nan_after_step': 3, 'rl.steps': 6})
  workdir = tmp_path / 'w'
  saved = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    try:
      arith_rl.train(config, str(workdir))
      raise AssertionError('no FloatingPointError')
    except FloatingPointError as e:
      message = str(e)
  finally:
    jax.config.update('jax_disable_most_optimizations', saved)
  assert 'step 4' in message and 'last good checkpoint is step 2' in message, message
  assert '--config.optim.lr=' in message and '--allow_config_change' in message, message
  ckpt_dir = workdir / 'checkpoints' / 'rl'
  with checkpoint.Checkpointer(str(ckpt_dir)) as ckpt:
    assert ckpt.latest_step() == 2
  params = checkpoint.load_params(str(ckpt_dir))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
  # The advice is accepted by the resume check (a smaller lr with the flag it names).
  (workdir / runs.CONFIG_FILE).write_text(json.dumps(runs.config_json(config)))
  smaller = _arith_config(tmp_path / 'data', **{'debug.nan_after_step': 3, 'rl.steps': 6})
  smaller.optim.lr = config.optim.lr / 10
  changes = runs.check_resume(str(workdir), smaller, arith_rl.SAFE_KEYS, allow_change=True)
  assert [k for k, _, _ in changes] == ['optim.lr']


# ----------------------------------------------------------------------------- 6. watchdog


class _Killed(Exception):
  pass


class _Recorder:
  """Stands in for the harness's Watchdog: records progress calls and the programs compiled."""

  def __init__(self, kill_at=None):
    self.events, self.kill_at = [], kill_at

  def progress(self, position, next_compiles=False):
    self.events.append(('at', position, next_compiles))
    if position == self.kill_at:
      raise _Killed(position)

  def emit(self, record):  # a logging handler's emit (jax_log_compiles)
    message = record.getMessage()
    for name in ('rl_chunk', '<lambda>'):  # the experiment's own jitted programs
      if message.startswith(f'Compiling jit({name})'):
        self.events.append(('compile', name, None))


def test_every_compile_gets_the_first_step_allowance_on_a_fresh_and_a_resumed_run(tmp_path):
  import logging  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from experiments import arith_rl  # pylint: disable=g-import-not-at-top

  config = _arith_config(tmp_path / 'data')
  workdir = str(tmp_path / 'w')
  logger = logging.getLogger('jax._src.interpreters.pxla')
  saved = {k: jax.config.values[k] for k in ('jax_log_compiles', 'jax_disable_most_optimizations')}
  level = logger.level
  runs_events = []
  try:
    jax.config.update('jax_log_compiles', True)
    jax.config.update('jax_disable_most_optimizations', True)
    logger.setLevel(logging.WARNING)
    for kill_at in ('RL step 4 of 4', None):  # killed after the step-2 checkpoint, resumed
      recorder = _Recorder(kill_at)
      handler = logging.Handler()
      handler.emit = recorder.emit
      logger.addHandler(handler)
      runs._state['watchdog'] = recorder  # pylint: disable=protected-access
      try:
        arith_rl.train(config, workdir)
      except _Killed:
        pass
      finally:
        runs._state['watchdog'] = None  # pylint: disable=protected-access
        logger.removeHandler(handler)
      runs_events.append(recorder.events)
  finally:
    for k, v in saved.items():
      jax.config.update(k, v)
    logger.setLevel(level)
  fresh, resumed = runs_events
  assert ('at', 'RL step 2 of 4', False) in fresh and ('compile', 'rl_chunk', None) in resumed
  for events in (fresh, resumed):
    last = None  # before the first progress call the watchdog allows --watchdog_first_s
    for kind, what, compiles in events:
      if kind == 'at':
        last = (what, compiles)
      else:
        assert last is None or last[1], f'{what} compiled after {last[0]!r} (no allowance)'


# ----------------------------------------------------------------------------- 5. safe keys


def test_a_finished_run_cannot_be_shortened_by_a_safe_key(tmp_path):
  from configs import arith_rl as config_module  # pylint: disable=g-import-not-at-top
  from tests.experiments.cli_test import cli  # pylint: disable=g-import-not-at-top

  workdir = tmp_path / 'w'
  (workdir / 'checkpoints' / 'rl' / '4').mkdir(parents=True)  # an orbax step directory
  config = runs.config_json(config_module.get_config('smoke'))
  (workdir / runs.CONFIG_FILE).write_text(json.dumps(config))
  (workdir / runs.DONE_FILE).write_text(json.dumps(dict(summary='4 steps', config=config)))
  before = {p: (workdir / p).read_text() for p in (runs.CONFIG_FILE, runs.DONE_FILE)}
  proc = cli('arith_rl', f'--workdir={workdir}', '--config.rl.steps=2')
  _one_line_error(proc, 'config.rl.steps=2 is below the step this run already reached (4')
  assert {p: (workdir / p).read_text() for p in before} == before


# ----------------------------------------------------------------------------- 7. preemption


def test_sigterm_stops_at_a_step_boundary_like_ctrl_c_and_the_run_resumes(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top

  workdir = tmp_path / 'w'
  flags = ('--config.steps=400', '--config.step_s=0.02')
  proc = subprocess.Popen(
    _tiny_cmd(tmp_path, workdir, *flags),
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.time() + TIMEOUT_S
    while not (workdir / 'metrics.jsonl').exists() and time.time() < deadline:
      assert proc.poll() is None, proc.communicate()
      time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT_S)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 143, err
  assert 'Traceback' not in err and 'SIGTERM: stopping at the end of the current step' in err, err
  assert 'Interrupted at step' in err and 'Rerun the same command to resume' in err, err
  steps = [r['step'] for r in _records(workdir)]
  assert steps == list(range(1, len(steps) + 1)) and len(steps) < 400
  again = _tiny(tmp_path, workdir, *flags)
  assert again.returncode == 0, again.stderr
  assert [r['step'] for r in _records(workdir)] == list(range(1, 401))


def test_a_stop_on_any_host_stops_every_host_at_the_same_step(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  other_host = []  # the flag of the other (simulated) host

  def allgather(x):
    return np.array([int(x), int(bool(other_host))])

  monkeypatch.setattr(multihost_utils, 'process_allgather', allgather)
  runs.at('step 1 of 3')  # no host was signalled
  other_host.append(True)  # the scheduler's SIGTERM reached the other host only
  try:
    runs.at('step 2 of 3')
    raise AssertionError('this host did not stop')
  except KeyboardInterrupt:
    pass
  monkeypatch.undo()
  assert runs._any_host(False) is False  # pylint: disable=protected-access  # one process


# ----------------------------------------------------------------------------- 8. TensorBoard


def _tensorboard_steps(directory, tag):
  """The steps of `tag` that TensorBoard shows: events in file order, a SessionLog START at
  step s (tensorboardX's `purge_step`) dropping those of steps >= s written before it."""
  import struct  # pylint: disable=g-import-not-at-top

  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  steps = []
  for path in sorted(pathlib.Path(directory).glob('events.out.tfevents.*')):
    data = path.read_bytes()
    i = 0
    while i < len(data):  # TFRecord: length (8), its crc (4), the record, its crc (4)
      (n,) = struct.unpack('<Q', data[i : i + 8])
      event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
      i += 16 + n
      if event.HasField('session_log') and event.session_log.status == 1:  # START
        steps = [s for s in steps if s < event.step]
      if any(v.tag == tag for v in event.summary.value):
        steps.append(event.step)
  return steps


def test_ppo_tensorboard_events_of_a_killed_run_are_purged_on_resume(tmp_path, monkeypatch):
  from configs import ppo_gymnax as config_module  # pylint: disable=g-import-not-at-top
  from experiments import ppo_gymnax  # pylint: disable=g-import-not-at-top
  from jaxca import checkpoint  # pylint: disable=g-import-not-at-top

  config = config_module.get_config('smoke')
  original = checkpoint.Checkpointer.maybe_save

  def die_before_the_last_save(ckpt, step, state, **kw):
    if step == 4:  # updates 3 and 4 are in TensorBoard, their checkpoint is not
      raise _Killed(step)
    return original(ckpt, step, state, **kw)

  monkeypatch.setattr(checkpoint.Checkpointer, 'maybe_save', die_before_the_last_save)
  try:
    ppo_gymnax.train(config, str(tmp_path))
    raise AssertionError('not killed')
  except _Killed:
    pass
  monkeypatch.undo()
  ppo_gymnax.train(config, str(tmp_path))
  assert _tensorboard_steps(tmp_path / 'tensorboard' / 'main', 'loss') == [1, 2, 3, 4]
