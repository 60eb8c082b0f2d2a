"""Every config loads (default and smoke), is locked-safe, and pairs with an experiment."""

import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in (ROOT / 'configs').glob('[!_]*.py') if p.stem not in ('common',))


def test_there_are_configs():
  assert NAMES, 'no configs found'


@pytest.mark.parametrize('name', NAMES)
def test_config_has_experiment_and_loads(name):
  assert (ROOT / 'experiments' / f'{name}.py').exists(), f'configs/{name}.py has no experiment'
  module = importlib.import_module(f'configs.{name}')
  assert module.__doc__ and 'python -m experiments.' in module.__doc__, (
    f'configs/{name}.py docstring must give the exact command'
  )
  for arg in (None, 'smoke'):
    cfg = module.get_config(arg)
    cfg.lock()
    assert cfg.to_dict()


@pytest.mark.parametrize('name', NAMES)
def test_unknown_config_arg_is_rejected(name):
  module = importlib.import_module(f'configs.{name}')
  with pytest.raises(ValueError, match='Unknown config arg'):
    module.get_config('definitely_not_an_arg=1')


def test_parse_arg_types_and_errors():
  from configs import common

  arg = common.parse_arg('smoke,lr=0.5,n=3', smoke=False, lr=1.0, n=1, name='x')
  assert arg.smoke is True and arg.lr == 0.5 and arg.n == 3 and arg.name == 'x'
  with pytest.raises(ValueError, match="known: \\['lr'\\]"):
    common.parse_arg('bogus=1', lr=1.0)
