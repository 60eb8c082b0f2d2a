"""Reproducible installs: setup.py declares what the code imports, constraints.txt pins it.

* every third-party module that jaxca/, experiments/ or configs/ import at module level is
  in `install_requires`, and one imported only inside a function is in it or in an extra;
  a requirement no library code imports (chex) is not in `install_requires`;
* the linters are pinned exactly (a ruff release can fail `ruff format --check`);
* constraints.txt pins every requirement of setup.py (but the notebooks extra) to one
  version; `.ci/run` and the README's test command install with it, the README's first
  command without it, and the README starts with exactly the two set-up commands.
"""

import ast
import importlib.metadata
import pathlib
import re
import sys
from unittest import mock

import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOCAL = {'jaxca', 'experiments', 'configs'}
# Installed for the code but never imported by name: tfds's file format.
NOT_IMPORTED = {'array-record'}
# Distributions that provide a module another requirement installs (jaxlib comes with jax).
PROVIDED_BY = {'jaxlib': 'jax'}
# Modules of an optional extra that may be absent from the test environment: their distribution.
OPTIONAL = {'tunix': 'google-tunix'}


def _setup_kwargs():
  with mock.patch.object(setuptools, 'setup') as setup:
    exec(compile((ROOT / 'setup.py').read_text(), 'setup.py', 'exec'), {'__name__': 'setup'})  # noqa: S102
  return setup.call_args.kwargs


def _name(requirement):
  return re.split(r'[<>=!~;\[ ]', requirement, maxsplit=1)[0].strip().lower().replace('_', '-')


def _imports():
  """{module: True if imported at module level somewhere} over the library code."""
  out = {}
  for d in LOCAL:
    for path in sorted((ROOT / d).rglob('*.py')):
      tree = ast.parse(path.read_text())
      top = set(map(id, tree.body))
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          names = [node.module]
        else:
          continue
        for name in names:
          root = name.split('.')[0]
          if root not in LOCAL and root not in sys.stdlib_module_names:
            out[root] = out.get(root, False) or id(node) in top
  return out


def test_every_imported_module_is_declared_and_every_requirement_imported():
  kwargs = _setup_kwargs()
  required = {_name(r) for r in kwargs['install_requires']}
  extras = {_name(r) for reqs in kwargs['extras_require'].values() for r in reqs}
  dists = importlib.metadata.packages_distributions()
  imported = set()
  for module, top_level in _imports().items():
    found = dists.get(module) or [OPTIONAL[module]]  # KeyError: an undeclared, absent module
    names = {PROVIDED_BY.get(n.lower(), n.lower()).replace('_', '-') for n in found}
    imported |= names
    where = required if top_level else required | extras
    assert names & where, f'{module} ({names}) is imported but not declared in setup.py'
  unused = required - imported - NOT_IMPORTED
  assert not unused, f'install_requires names {unused}, which no library code imports'
  assert 'scipy' in required and 'chex' not in required and 'chex' in extras


def test_linters_are_pinned_exactly():
  ruff = [r for r in _setup_kwargs()['extras_require']['test'] if _name(r) == 'ruff']
  assert len(ruff) == 1 and re.fullmatch(r'ruff==[\d.]+', ruff[0]), ruff


def test_constraints_pin_every_requirement_and_ci_and_the_readme_use_them():
  pins = {}
  for line in (ROOT / 'constraints.txt').read_text().splitlines():
    if line.strip() and not line.startswith('#'):
      name, _, version = line.partition('==')
      assert version and re.fullmatch(r'[\w.+!-]+', version), line
      assert _name(name) not in pins, f'{name} pinned twice'
      pins[_name(name)] = version
  kwargs = _setup_kwargs()
  extras = kwargs['extras_require']
  for requirement in kwargs['install_requires'] + extras['test'] + extras['crosscheck']:
    assert _name(requirement) in pins, f'{requirement} has no pin in constraints.txt'
  assert 'jaxca' not in pins
  ci = (ROOT / '.ci' / 'run').read_text()
  readme = (ROOT / 'README.md').read_text()
  commands = re.match(r'# jaxca\n\n```bash\n(.*?)\n```', readme, re.S).group(1).splitlines()
  assert len(commands) == 2, commands
  assert commands[0].startswith('pip install -e . &&') and 'constraints' not in commands[0]
  assert commands[1] == 'pip install -e ".[test]" -c constraints.txt && python -m pytest -n 2 -q'
  assert commands[1].replace('pip install', 'pip install -q') in ci  # the same, quieter
  assert ci.count('-c constraints.txt') == 3  # the test extra, torch and the crosscheck extra
