"""Random inputs for tests and notebooks (NumPy only; seeded with `np.random.default_rng`).

Host-side helpers, never traced. Arrays are float32 (bool for masks) and put
time on the last axis, matching `jaxca.credit`.
"""

from typing import Sequence

import numpy as np

MASK_KINDS = ('none', 'suffix', 'prefix', 'random', 'mixed')


def random_mask(rng: np.random.Generator, shape: Sequence[int], kind: str = 'mixed') -> np.ndarray:
  """A bool mask of `shape` (time last).

  Kinds: `'none'` all True; `'suffix'` trailing padding; `'prefix'` leading
  masked steps; `'random'` interleaved; `'mixed'` interleaved plus leading and
  trailing masked steps, with the first row of the flattened batch fully masked
  (when there are at least 2 rows) and each step masked with probability 0.3.
  """
  shape = tuple(shape)
  t = shape[-1]
  flat = np.ones((int(np.prod(shape[:-1], dtype=int)), t), bool)
  n = flat.shape[0]
  if kind == 'none':
    pass
  elif kind == 'suffix':
    lengths = rng.integers(1, t + 1, size=n)
    flat = np.arange(t)[None, :] < lengths[:, None]
  elif kind == 'prefix':
    starts = rng.integers(0, t, size=n)
    flat = np.arange(t)[None, :] >= starts[:, None]
  elif kind in ('random', 'mixed'):
    flat = rng.random((n, t)) > 0.3
    if kind == 'mixed':
      flat[:, 0] = False
      flat[:, -1] = False
      if n >= 2:
        flat[0] = False
  else:
    raise ValueError(f'Unknown `kind`={kind!r}; choose from {MASK_KINDS}.')
  return flat.reshape(shape)


def random_gae_inputs(
  seed: int,
  shape: Sequence[int],
  *,
  mask_kind: str = 'mixed',
  gamma: float = 0.9,
  p_terminal: float = 0.2,
  per_step_lambda: bool = False,
) -> dict[str, np.ndarray]:
  """Random `credit.gae` arguments (keyword dict) of `shape` = batch + (T,).

  Discounts are `gamma` with terminations (`d = 0`) at probability
  `p_terminal`; `lambda_` is per-step in [0, 1] if `per_step_lambda`, else 0.8.
  """
  rng = np.random.default_rng(seed)
  shape = tuple(shape)
  f32 = np.float32
  return dict(
    rewards=rng.normal(size=shape).astype(f32),
    values=rng.normal(size=shape).astype(f32),
    discounts=(gamma * (rng.random(shape) > p_terminal)).astype(f32),
    bootstrap_value=rng.normal(size=shape[:-1]).astype(f32),
    lambda_=rng.random(shape).astype(f32) if per_step_lambda else f32(0.8),
    mask=random_mask(rng, shape, mask_kind),
  )


def insert_masked_steps(
  seed: int, arrays: dict[str, np.ndarray], positions: Sequence[int], time_keys: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Inserts masked junk steps into 1-D trajectories.

  Args:
    seed: seed of the junk values.
    arrays: dict of arrays; those named in `time_keys` are `[T]`, others copied.
    positions: insertion indices into the original sequence (`np.insert`
      semantics; repeats insert several steps).
    time_keys: the keys with a time axis.

  Returns:
    `(new_arrays, mask)`: `mask` `[T + len(positions)]` is False at inserted
    steps and True elsewhere (an existing `'mask'` entry is merged in).
  """
  rng = np.random.default_rng(seed)
  t = len(arrays[time_keys[0]])
  base_mask = np.asarray(arrays.get('mask', np.ones(t, bool)))
  out = dict(arrays)
  for k in time_keys:
    x = np.asarray(arrays[k])
    junk = (10 * rng.normal(size=len(positions))).astype(x.dtype)
    out[k] = np.insert(x, positions, junk)
  mask = np.insert(base_mask, positions, False)
  out['mask'] = mask
  return out, mask
