"""Each notebook finds the repository root from its own location, not the working directory."""

import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('[0-9]*.py'))


def _root_finder(path):
  """The notebook's `find_repo_root` (its source up to `ROOT = find_repo_root()`), executed
  as the notebook would define it when run as a script from `path`."""
  source = path.read_text()
  start = source.index('def find_repo_root(')
  end = re.search(r'^ROOT = find_repo_root\(\)', source, re.M).start()
  namespace = dict(__file__=str(path), __name__='__main__')
  exec('import os\nimport pathlib\n' + source[start:end], namespace)  # noqa: S102
  return namespace['find_repo_root']


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_root_from_notebook_location_not_cwd(path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a working directory outside any checkout
  monkeypatch.delenv('JPY_SESSION_NAME', raising=False)
  assert _root_finder(path)() == ROOT


@pytest.mark.parametrize('path', NOTEBOOKS[:1], ids=[p.name for p in NOTEBOOKS[:1]])
def test_root_from_cwd_without_a_file(path, monkeypatch):
  finder = _root_finder(path)
  finder.__globals__.pop('__file__')
  monkeypatch.chdir(ROOT / 'notebooks')
  monkeypatch.delenv('JPY_SESSION_NAME', raising=False)
  assert finder() == ROOT
  assert os.path.isdir(ROOT / 'configs')
