"""Host-side timing utilities for benchmarks (not used by kernels).

This module is host-side by design, like `checkpoint`/`metrics`: it calls `jax.jit` (for the copy
bandwidth probe), blocks on results and reads clocks. Kernels never import it.

Timing protocol used by `interleaved`:
  * every contender is a zero-argument thunk whose inputs were generated once, before timing;
  * one warm-up call per contender (compilation; its wall time is reported as `first_s`);
  * then rounds A, B, C, A, B, C, ... (the starting contender rotates every round), each call
    timed with `time.perf_counter` around `jax.block_until_ready(thunk())`, so slow drifts of a
    shared, noisy machine hit every contender alike; medians are reported.
"""

from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Mapping
import dataclasses
import os
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import sampling


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock timings of one contender.

  Attributes:
    times_s: the timed calls, in seconds, in the order they ran.
    first_s: the warm-up call (includes compilation for jitted functions).
  """

  times_s: tuple[float, ...]
  first_s: float

  @property
  def median_s(self) -> float:
    return statistics.median(self.times_s)

  @property
  def median_ms(self) -> float:
    return 1e3 * self.median_s

  @property
  def reps(self) -> int:
    return len(self.times_s)

  @property
  def spread(self) -> float:
    """(p90 - p10) / median of the timed calls: a noise indicator (0 = perfectly stable)."""
    if len(self.times_s) < 3:
      return float('nan')
    lo, hi = np.percentile(self.times_s, [10, 90])
    return float((hi - lo) / self.median_s)


class Aot:
  """A jitted function compiled ahead of time once per input signature (times measured)."""

  def __init__(self, fn):
    self.jitted = jax.jit(fn)
    self.compiled = {}
    self.compile_s = 0.0

  def __call__(self, *args):
    leaves, tree = jax.tree.flatten(args)
    sig = (tree, tuple((np.shape(x), str(getattr(x, 'dtype', type(x)))) for x in leaves))
    fn = self.compiled.get(sig)
    if fn is None:
      t = time.time()
      fn = self.compiled[sig] = self.jitted.lower(*args).compile()
      self.compile_s += time.time() - t
    return fn(*args)


def time_once(thunk: Callable[[], Any]) -> float:
  """Seconds for one call of `thunk`, including waiting for its (possibly async) results."""
  start = time.perf_counter()
  jax.block_until_ready(thunk())
  return time.perf_counter() - start


def interleaved(
  thunks: Mapping[str, Callable[[], Any]],
  reps: int,
  *,
  budget_s: Mapping[str, float] | None = None,
  min_reps: int = 1,
  no_warmup: Collection[str] = (),
  outputs: dict[str, Any] | None = None,
  progress: Callable[..., Any] | None = None,
) -> dict[str, Timing]:
  """Times several contenders in interleaved rounds (A, B, A, B, ...).

  Args:
    thunks: name -> zero-argument callable returning arrays (jax or numpy).
    reps: timed calls per contender (after one warm-up call).
    budget_s: optional name -> cap on the summed timed seconds of that contender; a contender
      whose calls exceed it stops early (after at least `min_reps` calls), so a slow NumPy loop
      does not dominate the run. Its actual repetition count is `Timing.reps`.
    min_reps: lower bound on the timed calls of every contender.
    no_warmup: names whose first call is timed rather than discarded (plain NumPy code has
      nothing to compile; `first_s` is then the first timed call).
    outputs: if given, filled with name -> the result of that contender's first call.
    progress: if given, called as `progress(position, next_compiles)` after every call
      (e.g. `jaxca.runs.at`, the harness's watchdog and Ctrl-C point); `next_compiles`
      is True while warm-up calls (compilations) remain.

  Returns:
    name -> Timing.
  """
  if reps < 1:
    raise ValueError(f'reps must be >= 1, got {reps}.')
  names = list(thunks)
  budget_s = budget_s or {}
  times = {name: [] for name in names}
  first = {}
  progress = progress or (lambda position, next_compiles: None)
  for i, name in enumerate(names):
    out, seconds = _call(thunks[name])
    first[name] = seconds
    if outputs is not None:
      outputs[name] = out
    if name in no_warmup:
      times[name].append(seconds)
    progress(f'warm-up call of {name}', i + 1 < len(names))
  for round_index in range(reps):
    offset = round_index % len(names)
    for name in names[offset:] + names[:offset]:
      done = len(times[name])
      spent = sum(times[name])
      if done >= reps or (name in budget_s and done >= min_reps and spent >= budget_s[name]):
        continue
      times[name].append(time_once(thunks[name]))
      progress(f'timed call {len(times[name])} of {reps} of {name}', False)
  return {name: Timing(tuple(times[name]), first[name]) for name in names}


def _call(thunk):
  start = time.perf_counter()
  out = jax.block_until_ready(thunk())
  return out, time.perf_counter() - start


def gigabytes_per_second(num_bytes: float, seconds: float) -> float:
  """Bytes moved / seconds, in GB/s (1 GB = 1e9 bytes)."""
  return num_bytes / seconds / 1e9


def copy_bandwidth(num_bytes: int = 256 * 2**20, reps: int = 20) -> tuple[float, Timing]:
  """Measures memory bandwidth with a jitted elementwise copy `x + 1` of a float32 array.

  Args:
    num_bytes: size of the array read (the same amount is written).
    reps: timed calls after one warm-up.

  Returns:
    (GB/s counting read + write, i.e. 2 * num_bytes per call, the Timing).
  """
  x = jnp.ones((num_bytes // 4,), jnp.float32)
  copy = jax.jit(lambda a: a + 1.0)
  timing = interleaved({'copy': lambda: copy(x)}, reps)['copy']
  return gigabytes_per_second(2 * x.size * 4, timing.median_s), timing


PREFIX_CONTENDERS = ('shared_prefill', 'naive_prefill')


def prefix_sampling_thunks(
  policy,
  params,
  key: jax.Array,
  prefixes,
  prefix_mask,
  *,
  num_samples: int,
  max_new_tokens: int,
  eos_id: int,
  pad_id: int,
  temperature: float = 1.0,
) -> dict[str, Callable[[], Any]]:
  """Zero-argument thunks for the MC-completion sampling benchmark (see `prefix_sampling`).

  `shared_prefill`: `sampling.sample_from_prefixes` (each of the U prefixes prefilled once,
  the KV cache repeated n times). `naive_prefill`: every prefix repeated n times and the
  U * n rows prefilled (`sampling.sample` with `num_samples=1`). Both are jitted here, with
  the same key, so they draw the same completions.
  """

  def shared(params, key, prefixes, prefix_mask):
    return sampling.sample_from_prefixes(
      policy,
      params,
      key,
      prefixes,
      prefix_mask,
      num_samples=num_samples,
      max_new_tokens=max_new_tokens,
      temperature=temperature,
      eos_id=eos_id,
      pad_id=pad_id,
    )

  def naive(params, key, prefixes, prefix_mask):
    rep = lambda x: jnp.repeat(x, num_samples, axis=0)
    return sampling.sample(
      policy,
      params,
      key,
      rep(prefixes),
      rep(prefix_mask),
      num_samples=1,
      max_new_tokens=max_new_tokens,
      temperature=temperature,
      eos_id=eos_id,
      pad_id=pad_id,
    )

  args = (params, key, jnp.asarray(prefixes), jnp.asarray(prefix_mask))
  fns = dict(zip(PREFIX_CONTENDERS, (jax.jit(shared), jax.jit(naive))))
  return {name: (lambda fn=fn: fn(*args)) for name, fn in fns.items()}


def prefix_sampling_rows(
  timings: Mapping[str, Timing], outputs: Mapping[str, Any], num_samples: int
) -> dict[str, Any]:
  """Benchmark rows from `interleaved(prefix_sampling_thunks(...), outputs=...)`.

  Returns:
    {'contenders': {name: {median_s, times_s, compile_and_first_run_s, spread,
    completions_per_s, valid_tokens_per_s}}, 'speedup' (naive / shared median time),
    'same_tokens_fraction', 'num_completions'}.
  """
  rows = {}
  first = outputs[PREFIX_CONTENDERS[0]]
  completions = int(first.tokens.shape[0])
  for name, timing in timings.items():
    out = outputs[name]
    rows[name] = dict(
      median_s=timing.median_s,
      times_s=list(timing.times_s),
      compile_and_first_run_s=timing.first_s,
      spread=timing.spread,
      completions_per_s=completions / timing.median_s,
      valid_tokens_per_s=float(np.asarray(out.mask).sum()) / timing.median_s,
    )
  a, b = (np.asarray(outputs[name].tokens) for name in PREFIX_CONTENDERS)
  return dict(
    contenders=rows,
    speedup=timings['naive_prefill'].median_s / timings['shared_prefill'].median_s,
    same_tokens_fraction=float(np.mean(a == b)),
    num_completions=completions,
    num_samples=num_samples,
  )


def prefix_sampling(policy, params, key, prefixes, prefix_mask, *, reps: int, **kwargs) -> dict:
  """Completions/s of MC sampling from U prefixes x n samples: shared prefill vs naive.

  Times `prefix_sampling_thunks(policy, params, key, prefixes, prefix_mask, **kwargs)` with
  `interleaved(..., reps)` and returns `prefix_sampling_rows` (host-side; compiles twice).
  """
  thunks = prefix_sampling_thunks(policy, params, key, prefixes, prefix_mask, **kwargs)
  outputs = {}
  timings = interleaved(thunks, reps, outputs=outputs)
  return prefix_sampling_rows(timings, outputs, kwargs['num_samples'])


def environment() -> dict[str, Any]:
  """Versions, devices and machine load, for the header of a benchmark report."""
  info = {
    'python': platform.python_version(),
    'jax': jax.__version__,
    'jaxlib': getattr(jax.lib, '__version__', None) or _jaxlib_version(),
    'numpy': np.__version__,
    'backend': jax.default_backend(),
    'devices': ', '.join(str(d) for d in jax.devices()),
    'cpu_count': os.cpu_count(),
    'machine': f'{platform.system()} {platform.machine()}',
    'cpu_model': cpu_model(),
    'loadavg_1_5_15': _loadavg(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  try:
    import rlax  # noqa: PLC0415 (optional dependency)

    info['rlax'] = rlax.__version__
  except ImportError:
    info['rlax'] = None
  return info


def _jaxlib_version():
  try:
    import jaxlib  # noqa: PLC0415

    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else `platform.processor()` or the machine type."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load_average() -> float:
  """The 1-minute load average, nan where the OS has none (recorded beside wall-clock figures)."""
  try:
    return float(os.getloadavg()[0])
  except (OSError, AttributeError):
    return float('nan')


def _loadavg():
  try:
    return ' '.join(f'{x:.2f}' for x in os.getloadavg())
  except OSError:
    return None


def seeds_batched_vs_sequential(
  step: Callable,
  state0: Any,
  batches: Any,
  keys: jax.Array,
  hparams: Any = None,
  *,
  reps: int,
  progress: Callable[..., Any] | None = None,
) -> dict[str, Any]:
  """S seeds of one arm: one vmapped program vs S sequential runs, same work, interleaved.

  The reproductions' harness (`loop.run_grid` over `loop.run_arm`) runs the seeds of an arm
  one after another; `loop.run_seeds_batched` (pure_credit) and `gigpo_keydoor.py` run them
  as one `jax.vmap`-ped program where shapes agree. This measures the two on the same iterations:
    * sequential: `jax.jit(step)` per iteration, seed after seed (what `run_arm` calls);
    * batched: `jax.jit(jax.vmap(step, in_axes=(0, 0, 0, None)))` per iteration, every seed at
      once on a leading axis (what `loop.seeds_chunk` does, without its scan).
  Both read the metrics back to the host after every iteration, as the harness does. The final
  states of the two untimed warm-up calls are compared seed by seed (`max_abs_diff`): a
  speed-up of two different computations is not one.

  Args:
    step: a jittable `step(state, batch, key, hparams) -> (state, metrics)`, e.g.
      `lm.make_rl_update(...)` (an `loop.ArmSteps.step` of a single-step arm).
    state0: the start state of every seed (the reproductions start each from one warm start).
    batches: pytree of arrays with leading axes [S, T] (seed, iteration).
    keys: [S] PRNG keys; iteration t (1-based) uses `fold_in(keys[s], t)`, as `run_arm`.
    hparams: the estimator's traced hyper-parameters (shared by the seeds), or None.
    reps: timed rounds (after one untimed warm-up call of each, the compile).
    progress: as in `interleaved`.

  Returns:
    dict(seeds, iterations, sequential / batched `Timing`s, speedup (per round, sequential
    time / batched time: timed, min, median, max), max_abs_diff (largest difference of any
    final state leaf between the two, over seeds), final_states (the batched run's, [S, ...])).
  """
  leaves = jax.tree.leaves(batches)
  num_seeds, iterations = leaves[0].shape[:2]
  if len(keys) != num_seeds:
    raise ValueError(f'`keys` must have one key per seed ({num_seeds}); got {len(keys)}.')
  one = jax.jit(step)
  many = jax.jit(jax.vmap(step, in_axes=(0, 0, 0, None)))
  at = lambda tree, *i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
  fold = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
  stacked0 = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * num_seeds), state0)

  def sequential():
    finals = []
    for s in range(num_seeds):
      state = state0
      for t in range(iterations):
        state, m = one(state, at(batches, s, t), jax.random.fold_in(keys[s], t + 1), hparams)
        jax.device_get(m)
      finals.append(state)
    return finals

  def batched():
    state = stacked0
    for t in range(iterations):
      state, m = many(state, at(batches, slice(None), t), fold(keys, t + 1), hparams)
      jax.device_get(m)
    return state

  outputs = {}
  timings = interleaved(
    dict(sequential=sequential, batched=batched), reps, outputs=outputs, progress=progress
  )
  finals = outputs['batched']
  diff = 0.0
  for s, seq in enumerate(outputs['sequential']):
    for a, b in zip(jax.tree.leaves(seq), jax.tree.leaves(at(finals, s))):
      if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact):
        diff = max(diff, float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0)))
  ratios = [a / b for a, b in zip(timings['sequential'].times_s, timings['batched'].times_s)]
  return dict(
    seeds=int(num_seeds),
    iterations=int(iterations),
    sequential=timings['sequential'],
    batched=timings['batched'],
    speedup=dict(timed=ratios, min=min(ratios), median=statistics.median(ratios), max=max(ratios)),
    max_abs_diff=diff,
    final_states=finals,
  )


def xla_flops(jitted, *args) -> float:
  """Floating-point operations of `jitted(*args)` (a `jax.jit` function) as XLA compiles it
  (`Compiled.cost_analysis()['flops']`; NaN where the backend does not count them)."""
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan')))
