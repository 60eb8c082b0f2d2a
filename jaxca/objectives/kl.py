"""KL estimators between the policy and a reference policy, in the loss or in the reward.

Per-token Monte-Carlo estimators of KL(pi || pi_ref) from tokens sampled from pi, with
`d = log pi(a) - log pi_ref(a)` (Schulman, "Approximating KL divergence", 2020,
http://joschu.net/blog/kl-approx.html):

  name   value                    notes                                  verl / TRL name
  'k1'   d                        unbiased, can be negative              'kl' / PPO 'k1'
  'k2'   d^2 / 2                  biased; its gradient is the KL's       'mse'
  'k3'   exp(-d) + d - 1          unbiased and >= 0 (`kl_k3`)        'low_var_kl' / GRPO
  'abs'  |d|                                                             'abs'

k3 is clamped as in verl's `kl_penalty_forward` (verl/trainer/ppo/core_algos.py): d to
[-20, 20], then the value to [-10, 10] (gradient 0 where the value clamp is active, except in
'k3+'); `k3_bound=None` turns the value clamp off.

A trailing '+' ('k1+', 'k3+', 'abs+') keeps the estimator's value but takes the gradient of k2
(straight-through), as verl's `kl_penalty` does for names ending in '+': the expected gradient of
k1 and k3 is not the gradient of the KL, k2's is. verl's alias names are accepted.

Two ways to use them:
  * in the loss (GRPO, verl `use_kl_loss`): `penalty(...)` aggregated like the policy loss and
    added with a coefficient; the gradient flows through `log_probs`;
  * in the reward (PPO-RLHF, verl `use_kl_in_reward`): `penalize_rewards(...)` subtracts
    `coef * k` per token (gradient stopped) before the advantage estimator runs.

The coefficient is fixed or adaptive (Ziegler et al. 2019, arXiv 1909.08593; verl
`AdaptiveKLController`):
  e = clip(KL / target - 1, -0.2, 0.2),   beta <- beta * (1 + e * n_steps / horizon).
verl's defaults: kl_coef 0.001, target_kl 0.1, horizon 10000; reward penalty 'kl' (k1), loss
penalty 'low_var_kl' (k3), loss coefficient 0.001. TRL's GRPO `beta` defaults to 0 (off).
"""

from typing import Callable
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp

from jaxca.objectives import aggregation

ESTIMATORS = ('k1', 'k2', 'k3', 'abs')
_ALIASES = {'kl': 'k1', 'mse': 'k2', 'low_var_kl': 'k3'}


def check_estimator(name: str) -> str:
  """Canonical name ('k1', 'k2', 'k3', 'abs', optionally with a '+'); raises if unknown."""
  straight_through = name.endswith('+')
  base = name[:-1] if straight_through else name
  base = _ALIASES.get(base, base)
  if base not in ESTIMATORS:
    raise ValueError(
      f'Unknown KL estimator {name!r}; choose from {list(ESTIMATORS)} (or verl names '
      f'{list(_ALIASES)}), optionally with a trailing "+".'
    )
  return base + ('+' if straight_through and base != 'k2' else '')


def estimate(
  log_probs: jax.Array,
  ref_log_probs: jax.Array,
  mask: jax.Array,
  estimator: str = 'k3',
  *,
  k3_bound: Optional[float] = 10.0,
) -> jax.Array:
  """Per-token estimate of KL(pi || pi_ref) for tokens sampled from pi; 0 where masked.

  Args:
    log_probs: [..., T] float32; log pi(a_t), differentiated.
    ref_log_probs: [..., T] float32; log pi_ref(a_t) (gradient stopped).
    mask: [..., T] bool; True where the policy acted.
    estimator: 'k1' | 'k2' | 'k3' | 'abs', optionally '+' (see the module docstring).
    k3_bound: k3's value clamp, [-k3_bound, k3_bound] (verl's 10); None: no clamp.

  Returns:
    [..., T] float32 per-token estimates.
  """
  if not (log_probs.shape == ref_log_probs.shape == mask.shape):
    raise ValueError(
      f'kl.estimate: `log_probs` {log_probs.shape}, `ref_log_probs` {ref_log_probs.shape} and '
      f'`mask` {mask.shape} must share a shape.'
    )
  name = check_estimator(estimator)
  base = name.rstrip('+')
  log_probs = jnp.where(mask, log_probs, 0.0)
  ref = jax.lax.stop_gradient(jnp.where(mask, ref_log_probs, 0.0))
  d = log_probs - ref
  if base == 'k1':
    k = d
  elif base == 'k2':
    k = 0.5 * jnp.square(d)
  elif base == 'abs':
    k = jnp.abs(d)
  else:
    k = kl_k3(log_probs, ref, mask, bound=k3_bound)
  if name.endswith('+'):
    k2 = 0.5 * jnp.square(d)
    k = k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(k)
  return jnp.where(mask, k, 0.0)


def penalty(
  log_probs: jax.Array,
  ref_log_probs: jax.Array,
  mask: jax.Array,
  *,
  estimator: str = 'k3',
  agg_mode: str = 'token_mean',
  norm_length=None,
) -> jax.Array:
  """KL term for the loss: `aggregation.aggregate(estimate(...), mask, agg_mode)` (scalar).

  Multiply by the (fixed or adaptive) coefficient and add it to the policy loss. verl:
  `kl_loss_type='low_var_kl'`, `kl_loss_coef=0.001`, aggregated like the policy loss.
  """
  k = estimate(log_probs, ref_log_probs, mask, estimator)
  return aggregation.aggregate(k, mask, agg_mode, norm_length)


def penalize_rewards(
  rewards: jax.Array,
  log_probs: jax.Array,
  ref_log_probs: jax.Array,
  mask: jax.Array,
  coef,
  *,
  estimator: str = 'k1',
) -> jax.Array:
  """Token rewards with the KL in the reward: `r_t - coef * k_t` where valid, `r_t` elsewhere.

  verl's `compute_rewards` / `apply_kl_penalty` with `kl_penalty='kl'` (k1) by default, using
  the sampling policy's log-probs. The penalty is a constant for the learner (gradient stopped).

  Args:
    rewards: [..., T] float32 token rewards (e.g. the score at the last token, 0 elsewhere).
    log_probs: [..., T] float32; log-probs of the sampling policy.
    ref_log_probs: [..., T] float32; log-probs of the reference policy.
    mask: [..., T] bool.
    coef: scalar (traceable), the KL coefficient beta.
    estimator: see the module docstring.
  """
  k = jax.lax.stop_gradient(estimate(log_probs, ref_log_probs, mask, estimator))
  return jnp.where(mask, rewards - coef * k, rewards)


class ControllerState(NamedTuple):
  coef: jax.Array  # [] float32, the current KL coefficient beta


class Controller(NamedTuple):
  """A KL coefficient schedule: `init() -> state`, `update(state, kl, n_steps) -> state`."""

  init: Callable[[], ControllerState]
  update: Callable[..., ControllerState]


def fixed_controller(coef: float) -> Controller:
  """A constant coefficient (verl `FixedKLController`)."""

  def init():
    return ControllerState(coef=jnp.asarray(coef, jnp.float32))

  def update(state, current_kl, n_steps=1):
    del current_kl, n_steps
    return state

  return Controller(init, update)


def adaptive_controller(init_coef: float, target: float, horizon: float) -> Controller:
  """The proportional KL controller of Ziegler et al. (2019), arXiv 1909.08593.

    e = clip(KL / target - 1, -0.2, 0.2),   beta <- beta * (1 + e * n_steps / horizon)

  `current_kl` is the measured KL (e.g. the mean per-token k1 or k3 of the batch, as verl
  passes); `n_steps` the number of samples (verl: the batch size) since the last update.
  Pure and traceable: keep the state in the train state, or update it on the host.
  """
  if target <= 0 or horizon <= 0:
    raise ValueError(f'adaptive KL controller: need target, horizon > 0; got {target}, {horizon}.')

  def init():
    return ControllerState(coef=jnp.asarray(init_coef, jnp.float32))

  def update(state, current_kl, n_steps=1):
    err = jnp.clip(jnp.asarray(current_kl, jnp.float32) / target - 1.0, -0.2, 0.2)
    return ControllerState(coef=state.coef * (1.0 + err * n_steps / horizon))

  return Controller(init, update)


def make_controller(
  kind: str = 'fixed',
  coef: float = 0.001,
  target: Optional[float] = None,
  horizon: Optional[float] = None,
) -> Controller:
  """'fixed' or 'adaptive' (verl `get_kl_controller`; `algorithm.kl_ctrl.type`)."""
  if kind == 'fixed':
    return fixed_controller(coef)
  if kind == 'adaptive':
    if target is None or horizon is None:
      raise ValueError('the adaptive KL controller needs `target` and `horizon`.')
    return adaptive_controller(coef, target, horizon)
  raise ValueError(f"Unknown KL controller {kind!r}; choose 'fixed' or 'adaptive'.")


def kl_k3(
  log_probs: jax.Array,
  ref_log_probs: jax.Array,
  mask: jax.Array,
  *,
  bound: Optional[float] = 10.0,
) -> jax.Array:
  """Per-token k3 estimator of KL(pi || pi_ref): exp(d) - d - 1 with d = ref - log_probs.

  Unbiased and non-negative (Schulman, "Approximating KL divergence"); verl's
  `low_var_kl`, TRL's GRPO KL. 0 at masked entries. As verl's `kl_penalty_forward`
  (verl/trainer/ppo/core_algos.py) we clamp d to [-20, 20] and then the k3 value itself to
  [-bound, bound] = [-10, 10], so one token far from the reference cannot dominate a batch
  (unclamped, a log-ratio of 25 gives 4.85e8). The gradient is 0 where either clamp is
  active (as `torch.clamp`'s); the straight-through 'k3+' of `estimate` keeps k2's gradient
  there. `bound=None` skips the value clamp (verl's rollout-rejection k3 is unclamped).
  """
  d = jnp.where(mask, jnp.clip(ref_log_probs - log_probs, -20.0, 20.0), 0.0)
  k = jnp.expm1(d) - d
  if bound is not None:
    k = jnp.clip(k, -bound, bound)
  return jnp.where(mask, k, 0.0)
