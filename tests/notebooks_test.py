"""Every notebook (notebooks/[0-9]*.py, jupytext py:percent) runs in a real Jupyter kernel.

As Jupyter runs it: converted with jupytext, executed cell by cell by nbclient in an
ipykernel whose working directory is notebooks/ (not the repository root), in smoke
mode (`JAXCA_SMOKE=1`). Needs the `test` extra (nbclient, ipykernel).
"""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('[0-9]*.py'))
TIMEOUT_S = 600  # per cell; generous: CI boxes are shared; the notebooks target < 60 s


def test_there_are_notebooks():
  assert NOTEBOOKS, 'no notebooks/[0-9]*.py found'


@pytest.mark.slow
@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_a_jupyter_kernel_from_notebooks_dir(path, monkeypatch):
  jupytext = pytest.importorskip('jupytext')
  nbclient = pytest.importorskip('nbclient')
  # The kernel inherits this environment; PYTHONPATH is cleared so that the notebook
  # must find the repository root (configs/, experiments/) itself.
  # MPLBACKEND is cleared so that figures use the kernel's inline backend.
  for name, value in dict(JAXCA_SMOKE='1', JAX_PLATFORMS='cpu').items():
    monkeypatch.setenv(name, value)
  for name in ('PYTHONPATH', 'MPLBACKEND'):
    monkeypatch.delenv(name, raising=False)
  notebook = jupytext.read(path)
  client = nbclient.NotebookClient(
    notebook,
    timeout=TIMEOUT_S,
    kernel_name='python3',
    resources={'metadata': {'path': str(path.parent)}},
  )
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f'{path.name} failed in the kernel:\n{str(e)[-5000:]}')
  outputs = [o for cell in notebook.cells for o in cell.get('outputs', [])]
  assert any(o.get('output_type') == 'display_data' for o in outputs), 'no figure was shown'
  assert not any(o.get('output_type') == 'error' for o in outputs)
  assert os.getcwd() != str(path.parent)  # the kernel, not this process, ran in notebooks/
