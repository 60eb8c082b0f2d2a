"""The harness's watchdog (jaxca.runs): a stalled step ends the run with every stack, exit 124.

Each run is a subprocess (the watchdog exits the process) with a timeout, so a
watchdog that fails to fire fails the test with the captured output instead of
hanging. A tiny experiment (no JAX program) exercises the harness; one smoke run
of a real experiment (ppo_gymnax) stalls inside its update loop.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

from jaxca import bench
from jaxca import runs
from tests.experiments.cli_test import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 120

EXPERIMENT = """
import time
from absl import app
from jaxca import runs

def run(config, workdir):
  time.sleep(config.compile_s)  # the first step compiles: covered by --watchdog_first_s
  for i in range(1, config.steps + 1):
    runs.at(f'step {i} of {config.steps}', next_compiles=i == config.compiles_after)
    time.sleep(config.compile_s if i == config.compiles_after else config.step_s)
  return 'finished'

def validate(config):
  pass

if __name__ == '__main__':
  runs.define_flags('tiny')
  app.run(runs.main(runs.Experiment('tiny', run, validate)))
"""

CONFIG = """
import ml_collections

def get_config():
  return ml_collections.ConfigDict(dict(steps=4, compile_s=2.5, step_s=0.1, compiles_after=2))
"""


def _tiny(tmp_path, *flags):
  (tmp_path / 'tiny.py').write_text(textwrap.dedent(EXPERIMENT))
  (tmp_path / 'tiny_config.py').write_text(textwrap.dedent(CONFIG))
  env = dict(
    os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
  )
  cmd = [
    sys.executable,
    str(tmp_path / 'tiny.py'),
    f'--config={tmp_path / "tiny_config.py"}',
    f'--workdir={tmp_path / "w"}',
    *flags,
  ]
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_a_stalled_step_exits_124_with_every_stack_the_step_and_how_to_resume(tmp_path):
  proc = _tiny(tmp_path, '--watchdog_s=1', '--watchdog_first_s=30', '--debug_stall_at=3')
  out = proc.stdout + proc.stderr
  assert proc.returncode == runs.WATCHDOG_EXIT, out
  assert 'watchdog: no progress for 1 s after step 3 of 4' in proc.stderr, out
  assert 'Rerun the same command to resume' in proc.stderr, out
  assert '--watchdog_s=0 turns this check off' in proc.stderr, out
  # faulthandler's dump: the stalled main thread (inside `at`, called from `run`) and the others.
  assert 'Stacks of every thread' in proc.stderr and 'Thread 0x' in proc.stderr, out
  assert 'in at' in proc.stderr and 'in run' in proc.stderr, out
  assert not (tmp_path / 'w' / runs.DONE_FILE).exists()


def test_compiling_steps_get_the_first_step_allowance_and_a_healthy_run_finishes(tmp_path):
  # The first step and the one after `next_compiles=True` take 2.5 s, above --watchdog_s=1.
  proc = _tiny(tmp_path, '--watchdog_s=1', '--watchdog_first_s=60')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert 'watchdog' not in proc.stderr and 'finished' in proc.stdout
  assert (tmp_path / 'w' / runs.DONE_FILE).exists()


def test_a_slow_first_step_beyond_its_allowance_names_it(tmp_path):
  proc = _tiny(tmp_path, '--watchdog_s=1', '--watchdog_first_s=1')
  assert proc.returncode == runs.WATCHDOG_EXIT, proc.stdout + proc.stderr
  assert 'the run is stuck before the first step (compiling)' in proc.stderr, proc.stderr


def test_interleaved_timing_reports_progress_after_every_call():
  calls = []
  bench.interleaved(
    {'a': lambda: None, 'b': lambda: None}, 2, progress=lambda *args: calls.append(args)
  )
  assert calls[:2] == [('warm-up call of a', True), ('warm-up call of b', False)]
  assert len(calls) == 6 and all(not compiles for _, compiles in calls[2:])
  assert ('timed call 2 of 2 of b', False) in calls


def test_watchdog_off():
  watchdog = runs.Watchdog(0, 0).start()
  assert not watchdog.enabled and watchdog._thread is None  # pylint: disable=protected-access
  watchdog.progress('step 1')
  watchdog.close()


def test_a_real_experiment_stalled_in_its_update_loop(tmp_path):
  proc = cli('ppo_gymnax', f'--workdir={tmp_path / "w"}', '--watchdog_s=2', '--debug_stall_at=1')
  assert proc.returncode == runs.WATCHDOG_EXIT, proc.stdout + proc.stderr
  assert 'watchdog: no progress for 2 s after update 2 of 4' in proc.stderr, proc.stderr
  assert 'in train' in proc.stderr and 'Rerun the same command' in proc.stderr, proc.stderr
