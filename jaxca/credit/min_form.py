"""PURE's min-form credit assignment (Cheng et al. 2025, arXiv 2504.15275).

Two kernels:
  * `min_form_returns`: the paper's definition, `V_t = min_{t' >= t} r_t'`
    over valid steps (a reverse cumulative minimum);
  * `min_form_rewards`: the transform PURE's code actually trains with,
    `w = softmax(-r / temperature)` over the valid steps of a row and output
    `w * r`; summing it from t onwards (the ordinary return with gamma = 1)
    approximates the minimum as the temperature goes to 0 (SPECS.md §2.1).
"""

import jax
import jax.numpy as jnp

from jaxca.credit import _checks


def min_form_returns(rewards: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Min-form value `V_t = min over valid t' >= t of r_t'` (reverse cumulative min).

  Masked steps are transparent (ignored by the min) and output 0. Gradients
  flow to the arg-min reward of each suffix.

  Args:
    rewards: [..., T] float32 (process) rewards.
    mask: optional [..., T] bool; True where the step counts.

  Returns:
    [..., T] float32; 0 where `mask` is False.
  """
  _checks.at_least_1d('rewards', rewards)
  rewards = _checks.as_float('rewards', rewards)
  if mask is None:
    return jax.lax.cummin(rewards, axis=rewards.ndim - 1, reverse=True)
  mask = _checks.check_mask(mask, 'rewards', rewards)
  big = jnp.finfo(jnp.float32).max
  out = jax.lax.cummin(jnp.where(mask, rewards, big), axis=rewards.ndim - 1, reverse=True)
  return jnp.where(mask, out, 0.0)


def min_form_rewards(rewards: jax.Array, temperature, mask: jax.Array | None = None) -> jax.Array:
  """PURE's soft-min reward transform: `softmax_valid(-r / temperature) * r`.

  The softmax runs over the valid steps of each row (masked steps get a -inf
  logit, i.e. weight 0). A fully masked row gives 0 everywhere, with finite
  gradients (masking happens with `jnp.where` before the exponential).

  Args:
    rewards: [..., T] float32 process rewards (PURE: PRM scores at the
      step-boundary tokens).
    temperature: positive scalar float32 (PURE default 0.1); traceable.
    mask: optional [..., T] bool; True at the steps that carry a reward.

  Returns:
    [..., T] float32 transformed rewards `w * r`; 0 where `mask` is False.
  """
  _checks.at_least_1d('rewards', rewards)
  rewards = _checks.as_float('rewards', rewards)
  temperature = _checks.as_float('temperature', temperature)
  if temperature.ndim != 0:
    raise ValueError(f'`temperature` must be a scalar; got shape {temperature.shape}.')
  mask = _checks.check_mask(mask, 'rewards', rewards)
  logits = jnp.where(mask, -rewards / temperature, 0.0)
  top = jnp.max(jnp.where(mask, logits, -jnp.inf), axis=-1, keepdims=True)
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  e = jnp.where(mask, jnp.exp(jnp.where(mask, logits - top, 0.0)), 0.0)
  total = jnp.sum(e, axis=-1, keepdims=True)
  w = e / jnp.where(total > 0, total, 1.0)
  return jnp.where(mask, w * rewards, 0.0)
