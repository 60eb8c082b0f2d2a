"""Process-wide JAX settings for the test suite (rlax style).

Also a persistent XLA compilation cache shared by the pytest-xdist workers and the
subprocesses that tests spawn (notebooks, CLI runs, the 8-device test): experiments
rebuild their jitted closures on every `train()` call, and the cache turns those
recompilations into disk reads. It lives in the system temp dir and is only a cache.
"""

import os
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'jaxca_test_xla_cache')
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import jax  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_threefry_partitionable', True)
