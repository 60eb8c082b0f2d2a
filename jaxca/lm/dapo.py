"""DAPO's sampling-side options: soft overlong punishment and dynamic sampling (kernels).

DAPO (Yu et al. 2025, arXiv 2503.14476):

* Soft overlong punishment (Sec. 3.4, Eq. 13): with the generation cap L_max and a buffer
  L_cache, a response of length |y| gets the extra sequence reward

      R_length(y) = 0                                  if |y| <= L_max - L_cache
                    ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
                    -1                                 if |y| > L_max

  times `penalty_factor` (verl's `overlong_buffer.penalty_factor`, default 1.0). Overlong
  filtering (Sec. 3.4, "Overlong Filtering") instead masks truncated responses out of the loss.
* Dynamic sampling (Sec. 3.2, Eq. 11): groups whose G rewards are all equal have zero group
  advantage and no gradient; drop them and sample more prompts until the batch holds the
  target number of informative groups. `informative_groups` is the keep rule; the host-side
  loop is `lm.collect_dynamic`.
"""

import jax
import jax.numpy as jnp

from jaxca import types


def overlong_penalty(lengths, max_len: int, buffer_len: int, penalty_factor: float = 1.0):
  """[B] float32 soft overlong punishment of DAPO Eq. 13 (<= 0; see the module docstring).

  Args:
    lengths: [B] int response lengths (generated tokens, EOS included).
    max_len: L_max, the generation cap.
    buffer_len: L_cache in [1, max_len], the length of the linear ramp.
    penalty_factor: the penalty at (and beyond) `max_len`.
  """
  if not 1 <= buffer_len <= max_len:
    raise ValueError(f'buffer_len must be in [1, max_len={max_len}]; got {buffer_len}.')
  lengths = jnp.asarray(lengths).astype(jnp.float32)
  start = float(max_len - buffer_len)
  ramp = (start - lengths) / float(buffer_len)
  pen = jnp.where(lengths <= start, 0.0, jnp.where(lengths <= max_len, ramp, -1.0))
  return (penalty_factor * pen).astype(jnp.float32)


def truncated(responses: jax.Array, mask: jax.Array, eos_id: int) -> jax.Array:
  """[B] bool: the response never emitted `eos_id` (cut off at the cap), for overlong filtering."""
  return ~jnp.any((responses == eos_id) & mask, axis=-1)


def informative_groups(seq_rewards: jax.Array, group_size: int) -> jax.Array:
  """[P] bool: group p's G rewards (rows p*G .. p*G+G-1) are not all equal (DAPO Eq. 11).

  Works on NumPy or JAX arrays; `seq_rewards` is [P*G].
  """
  if seq_rewards.ndim != 1 or seq_rewards.shape[0] % group_size:
    raise ValueError(
      f'`seq_rewards` must be [P*G] with G={group_size}; got shape {seq_rewards.shape}.'
    )
  g = seq_rewards.reshape(-1, group_size)
  return g.max(axis=1) != g.min(axis=1)


REWARD_SHAPING_KEYS = ('overlong_buffer', 'overlong_penalty', 'overlong_filter')


def reward_shaping_options(cfg, max_len: int):
  """(buffer_len or 0, penalty_factor, overlong_filter) from a `reward_shaping` dict.

  `max_len` is the response length N (the generation cap). Raises ValueError naming the key
  and the allowed values."""
  if not cfg:
    return 0, 1.0, False
  unknown = sorted(set(cfg.keys()) - set(REWARD_SHAPING_KEYS))
  if unknown:
    raise ValueError(
      f'Unknown reward_shaping option(s) {unknown}; choose from {list(REWARD_SHAPING_KEYS)}.'
    )
  buffer_len = int(types.config_get(cfg, 'overlong_buffer', 0) or 0)
  if not 0 <= buffer_len <= max_len:
    raise ValueError(
      f'reward_shaping.overlong_buffer must be in [0, {max_len}] (the response length); '
      f'got {buffer_len}.'
    )
  factor = types.config_get(cfg, 'overlong_penalty', None)
  factor = 1.0 if factor is None else float(factor)
  if factor < 0:
    raise ValueError(f'reward_shaping.overlong_penalty must be >= 0; got {factor}.')
  return buffer_len, factor, bool(types.config_get(cfg, 'overlong_filter', False))
