"""Process-wide JAX settings for the test suite (rlax style).

Also a persistent XLA compilation cache shared by the pytest-xdist workers and the
subprocesses that tests spawn (notebooks, CLI runs, the 8-device test): experiments
rebuild their jitted closures on every `train()` call, and the cache turns those
recompilations into disk reads. It lives in the system temp dir and is only a cache.

A test that fails because a subprocess ran past its `timeout=` (subprocess.TimeoutExpired)
shows what the subprocess had written until then (`timeout_output`), so a hang in CI
fails with the evidence rather than only "timed out".
"""

import os
import subprocess
import tempfile

import pytest

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'jaxca_test_xla_cache')
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import jax  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_threefry_partitionable', True)


TIMEOUT_OUTPUT_CHARS = 20_000


def timeout_output(error: BaseException) -> list:
  """[(title, text)]: the tail of stdout / stderr captured before a subprocess timeout."""
  if not isinstance(error, subprocess.TimeoutExpired):
    return []
  sections = []
  for name in ('stdout', 'stderr'):
    text = getattr(error, name, None)
    if isinstance(text, bytes):
      text = text.decode(errors='replace')
    if text:
      sections.append(
        (f'subprocess {name} until the {error.timeout} s timeout', text[-TIMEOUT_OUTPUT_CHARS:])
      )
  return sections or [(f'subprocess timed out after {error.timeout} s', '(no output captured)')]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  del item
  report = (yield).get_result()
  if call.excinfo is not None:
    report.sections.extend(timeout_output(call.excinfo.value))
