"""Tests and code leave no litter and cannot hang silently.

* No `tempfile.mkdtemp` anywhere (tests use pytest's `tmp_path` or a
  `TemporaryDirectory` that is cleaned up; library code a `TemporaryDirectory`).
* Every `subprocess.run` / `subprocess.check_output` in tests/ has a `timeout=`, so a hang
  fails with the captured output (shown by tests/conftest.py) instead of blocking CI.
"""

import ast
import pathlib
import subprocess
import sys

from tests import conftest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = [
  p
  for d in ('jaxca', 'experiments', 'configs', 'tests', 'notebooks')
  for p in sorted((ROOT / d).rglob('*.py'))
]


def _calls(path, names):
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      if node.func.attr in names and getattr(node.func.value, 'id', None) in (
        'subprocess',
        'tempfile',
      ):
        yield node


def test_no_mkdtemp():
  found = [f'{p.relative_to(ROOT)}:{n.lineno}' for p in SOURCES for n in _calls(p, {'mkdtemp'})]
  assert not found, f'tempfile.mkdtemp leaves directories behind: {found}'


def test_every_subprocess_call_in_tests_has_a_timeout():
  missing = [
    f'{p.relative_to(ROOT)}:{n.lineno}'
    for p in SOURCES
    if p.parts[len(ROOT.parts)] == 'tests'
    for n in _calls(p, {'run', 'check_output', 'check_call', 'call'})
    if not any(k.arg == 'timeout' for k in n.keywords)
  ]
  assert not missing, f'subprocess calls without timeout=: {missing}'


def test_a_timed_out_subprocess_shows_its_output():
  try:
    subprocess.run(
      [sys.executable, '-c', 'import time; print("got this far", flush=True); time.sleep(60)'],
      capture_output=True,
      text=True,
      timeout=5,
    )
  except subprocess.TimeoutExpired as e:
    sections = conftest.timeout_output(e)
  else:
    raise AssertionError('the subprocess did not time out')
  assert any('stdout' in title and 'got this far' in text for title, text in sections), sections
  assert conftest.timeout_output(ValueError('x')) == []
