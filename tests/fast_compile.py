"""Module set-up for tests whose time is mostly XLA compilation.

`from tests.fast_compile import setUpModule, tearDownModule` in a test module turns most XLA
optimisations off while that module's tests run (pytest calls both by name); the tests'
results do not depend on optimisation, only their compile time does.
"""

import jax

_SAVED = []


def setUpModule():  # noqa: N802  (unittest's name, looked up by pytest)
  _SAVED.append(jax.config.values['jax_disable_most_optimizations'])
  jax.config.update('jax_disable_most_optimizations', True)


def tearDownModule():  # noqa: N802
  jax.config.update('jax_disable_most_optimizations', _SAVED.pop())
