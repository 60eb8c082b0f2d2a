"""Every ```python block of README.md runs verbatim (fresh namespace each, from the repo root)."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r'^```python\n(.*?)^```', (ROOT / 'README.md').read_text(), re.M | re.S)


def test_readme_has_python_blocks():
  assert BLOCKS


@pytest.mark.parametrize('index', range(len(BLOCKS)))
def test_readme_python_block_runs(index, monkeypatch):
  monkeypatch.chdir(ROOT)
  code = compile(BLOCKS[index], f'README.md python block {index}', 'exec')
  exec(code, {'__name__': f'readme_block_{index}'})  # noqa: S102
