"""PURE's min-form credit assignment (Cheng et al. 2025, arXiv 2504.15275).

Two kernels:
  * `min_form_returns`: the paper's definition, `V_t = min_{t' >= t} r_t'`
    over valid steps (a reverse cumulative minimum);
  * `min_form_rewards`: the transform PURE's code actually trains with,
    `w = softmax(-r / temperature)` over the valid steps of a row and output
    `w * r`; summing it from t onwards (the ordinary return with gamma = 1)
    gives, at a token of step j, `sum_{k >= j} w_k r_k`: about the minimum
    up to the arg-min step and about 0 after it as the temperature goes to 0
    (e.g. r = [.9, .8, -.5, .7], T = 0.1 -> [-.5, -.5, -.5, 0]);
  * `pure_baseline`: PURE's two leave-one-out baselines ('token', 'step').

PURE's code also has a "strict min-form" that takes the minimum over ALL tokens
of `r * mask` (so the zeros at non-step tokens clip it to <= 0); jaxca uses the
paper's minimum over the step rewards (`min_form_returns`) instead.
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


PURE_BASELINES = ('token', 'step')


def pure_baseline(
  step_rewards: jax.Array,
  step_valid: jax.Array,
  step_ntok: jax.Array,
  lengths: jax.Array,
  group_ids: jax.Array,
  num_groups: int,
  mode: str = 'token',
  row_valid: jax.Array | None = None,
) -> jax.Array:
  """PURE's leave-one-out baselines on step rewards (arXiv 2504.15275; code `CJReinforce/PURE`).

  With `O_i = sum_k r_ik` the (transformed) outcome of row i and the sums over
  the *other* valid rows j of its group:
    * `'token'` (PURE's `--reward_baseline token`, its training script default):
      `b_i = sum_j O_j / sum_j L_j` (reward per token of the other rows) and
      `r_ik - b_i * ntok_ik`, where `ntok_ik` counts the tokens of step k
      without its closing separator and `L_i` the row's valid tokens;
    * `'step'` (`--reward_baseline step`): `b_i = mean_j O_j / K_j` (reward per
      step of the other rows, `K_j` their number of steps) and `r_ik - b_i` at
      every step, so a token's return loses `b_i` per remaining step.
  A row without another valid row in its group (or whose peers have no tokens)
  gets `b_i = 0`; rows with `row_valid` False are left out of every statistic.

  Args:
    step_rewards: [B, S] float32 step rewards (after the min-form transform).
    step_valid: [B, S] bool, the steps that occur.
    step_ntok: [B, S] float32 tokens per step, closer excluded (`'token'`).
    lengths: [B] float32 valid tokens per row (`'token'`).
    group_ids: [B] int group of each row.
    num_groups: static int.
    mode: one of `PURE_BASELINES`.
    row_valid: optional [B] bool (default: rows with at least one valid step).

  Returns:
    [B, S] float32 baselined step rewards; 0 at invalid steps.
  """
  _checks.choice('mode', mode, PURE_BASELINES)
  step_rewards = _checks.as_float('step_rewards', step_rewards)
  step_valid = _checks.check_mask(step_valid, 'step_rewards', step_rewards)
  if row_valid is None:
    row_valid = jnp.any(step_valid, axis=-1)
  r = jnp.where(step_valid, step_rewards, 0.0)
  outcome = jnp.where(row_valid, jnp.sum(r, axis=-1), 0.0)
  k = int(num_groups)

  def others(x):  # sum over the other valid rows of the group
    x = jnp.where(row_valid, x, 0.0)
    return jax.ops.segment_sum(x, group_ids, num_segments=k)[group_ids] - x

  if mode == 'token':
    den = others(jnp.asarray(lengths, jnp.float32))
    b = jnp.where(den > 0, others(outcome) / jnp.where(den > 0, den, 1.0), 0.0)
    out = r - b[:, None] * jnp.asarray(step_ntok, jnp.float32)
  else:
    n_steps = jnp.sum(step_valid, axis=-1, dtype=jnp.float32)
    per_step = outcome / jnp.maximum(n_steps, 1.0)
    n_other = others(jnp.ones_like(outcome))
    b = jnp.where(n_other > 0, others(per_step) / jnp.maximum(n_other, 1.0), 0.0)
    out = r - b[:, None]
  return jnp.where(step_valid & row_valid[:, None], out, 0.0)
