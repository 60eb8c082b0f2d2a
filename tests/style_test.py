"""The tree is ruff-clean (lint + format), as recorded in BUILD_NOTES.md."""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PATHS = ['jaxca', 'experiments', 'configs', 'tests', 'notebooks', 'setup.py']


def _ruff(*args):
  exe = shutil.which('ruff')
  cmd = [exe] if exe else [sys.executable, '-m', 'ruff']
  return subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_check():
  out = _ruff('check', *PATHS)
  assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format():
  out = _ruff('format', '--check', *PATHS)
  assert out.returncode == 0, out.stdout + out.stderr
