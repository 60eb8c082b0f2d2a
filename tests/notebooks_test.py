"""Every notebook (notebooks/[0-9]*.py, jupytext py:percent) runs top to bottom in smoke mode."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('[0-9]*.py'))
TIMEOUT_S = 600  # generous: CI boxes are shared; the notebooks target < 60 s


def test_there_are_notebooks():
  assert NOTEBOOKS, 'no notebooks/[0-9]*.py found'


@pytest.mark.slow
@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path):
  env = dict(os.environ, JAXCA_SMOKE='1', MPLBACKEND='Agg', JAX_PLATFORMS='cpu')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
  out = subprocess.run(
    [sys.executable, str(path)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
  )
  assert out.returncode == 0, f'{path.name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}'
