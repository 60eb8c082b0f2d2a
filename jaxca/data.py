"""Host-side batching of offline datasets: pure functions of (seed, step).

Task datasets live with their task (the arithmetic chains: `jaxca.tasks.arith_data`,
opened through `Task.load_data`); this module only batches their random-access
sources. For backwards compatibility `data.load`, `data.build`, `data.make_builder`,
`data.ArithChains` and `data.ArithChainsConfig` still resolve to that module.

Batches are a pure function of (seed, step): `batch_indices` permutes the split
once per epoch with `np.random.default_rng([seed, epoch])`, so a resumed run that
starts `batch_iterator` at `start_step` sees exactly the batches an
uninterrupted run would.
"""

from collections.abc import Iterator
from collections.abc import Mapping
import importlib

import numpy as np

_FORWARDED = ('ArithChains', 'ArithChainsConfig', 'make_builder', 'build', 'load', 'tfds')


def __getattr__(name):  # lazy: tensorflow_datasets is imported only when a dataset is needed
  if name in _FORWARDED:
    return getattr(importlib.import_module('jaxca.tasks.arith_data'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def check_config(section) -> None:
  """Checks a `data` section's validation split: `validation_fraction` in [0, 0.9) and, when it
  is > 0, `num_validation` an int >= 1. Raises ValueError naming the `field`."""
  vf, nv = float(section.get('validation_fraction', 0.0)), section.get('num_validation', 0)
  if not 0.0 <= vf < 0.9:
    raise ValueError(f'`validation_fraction` must be in [0, 0.9); got {vf!r}.')
  if vf > 0 and (isinstance(nv, bool) or not isinstance(nv, int) or nv < 1):
    raise ValueError(
      f'`num_validation` must be an int >= 1 when validation_fraction > 0; got {nv!r}.'
    )


def get_batch(source, indices) -> dict[str, np.ndarray]:
  """Stacks the records at `indices` ([b] ints) into {'prompts': [b, 2K+3], ...} int32 arrays.

  `source` is a tfds data source (or any sequence of feature dicts), or a dict
  of already-stacked arrays (as from `to_arrays`), which is just indexed.
  """
  indices = np.asarray(indices, np.int64)
  if isinstance(source, Mapping):
    return {key: np.asarray(val)[indices] for key, val in source.items()}
  if hasattr(source, '__getitems__'):
    records = source.__getitems__(indices.tolist())
  else:
    records = [source[int(i)] for i in indices]
  if not records:
    raise ValueError('`indices` is empty.')
  return {
    key: np.stack([np.asarray(r[key]) for r in records]).astype(np.int32) for key in records[0]
  }


def to_arrays(source) -> dict[str, np.ndarray]:
  """The whole split as stacked int32 arrays (small synthetic splits fit in memory)."""
  return get_batch(source, np.arange(_length(source)))


def _length(source) -> int:
  if isinstance(source, Mapping):
    return len(next(iter(source.values())))
  return len(source)


def batch_indices(
  num_examples: int, batch_size: int, step: int, *, seed: int, shuffle: bool = True
) -> np.ndarray:
  """Indices of the batch at `step`: a pure function of (num_examples, batch_size, step, seed).

  Epoch `e = step // (num_examples // batch_size)` uses the permutation
  `np.random.default_rng([seed, e]).permutation(num_examples)` (or the identity
  when `shuffle=False`); the last `num_examples % batch_size` examples of each
  epoch's order are dropped, so every batch is full.

  Returns:
    [batch_size] int64 indices.
  """
  if batch_size < 1 or batch_size > num_examples:
    raise ValueError(
      f'`batch_size` must be in [1, {num_examples}] (the split size); got {batch_size}.'
    )
  if step < 0:
    raise ValueError(f'`step` must be >= 0; got {step}.')
  steps_per_epoch = num_examples // batch_size
  epoch, i = divmod(step, steps_per_epoch)
  order = _epoch_order(num_examples, epoch, seed, shuffle)
  return order[i * batch_size : (i + 1) * batch_size]


def _epoch_order(num_examples: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
  if not shuffle:
    return np.arange(num_examples, dtype=np.int64)
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_iterator(
  source,
  batch_size: int,
  *,
  seed: int,
  start_step: int = 0,
  shuffle: bool = True,
  num_steps: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields the batches of steps start_step, start_step+1, ... (forever unless `num_steps`).

  Batch `s` is `get_batch(source, batch_indices(len(source), batch_size, s,
  seed=seed))`, so the stream from `start_step=k` equals the k-th batch onward
  of a fresh iterator (checkpoint/resume equality).

  Args:
    source: a data source, a sequence of feature dicts, or a dict of arrays.
    batch_size: examples per batch (<= the split size).
    seed: shuffling seed.
    start_step: the first step to yield.
    shuffle: False keeps the stored order (still dropping the remainder).
    num_steps: stop after this many batches; None = infinite.
  """
  n = _length(source)
  batch_indices(n, batch_size, start_step, seed=seed, shuffle=shuffle)  # validates arguments
  steps_per_epoch = n // batch_size
  step, cached_epoch, order = start_step, None, None
  while num_steps is None or step < start_step + num_steps:
    epoch, i = divmod(step, steps_per_epoch)
    if epoch != cached_epoch:
      order, cached_epoch = _epoch_order(n, epoch, seed, shuffle), epoch
    yield get_batch(source, order[i * batch_size : (i + 1) * batch_size])
    step += 1
