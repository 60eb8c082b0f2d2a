"""Advantage estimators: token-level rollout arrays in, advantages and value targets out.

An `Estimator` is selected by name (`make(name, ...)` or `from_config(cfg)`) and
called on a language-model rollout:

  targets = estimator(rewards, mask, values=..., group_size=...)

Inputs (B rows = responses, T tokens):
  * `rewards` [B, T] float32, token-level: the outcome score at the last valid
    token and zeros elsewhere; process rewards may sit at step-boundary tokens.
  * `mask` [B, T] bool: response mask, True on generated tokens.

Outputs: `Targets(advantages, returns)`, both [B, T] float32 and 0 where `mask`
is False. `returns` are the value targets (= advantages for critic-free
estimators). With `whiten=True` the advantages (not the returns) are whitened
over all valid tokens of the batch with `ops.masked_whiten` (verl style).

Estimators (`ESTIMATORS`):
  * `'gae'` (needs values): `credit.gae` with `discounts = gamma` and
    `bootstrap_value = 0` unless given -- verl semantics: no bootstrap after the
    last valid token; masked tokens are transparent.
  * `'grpo'`, `'dr_grpo'`, `'rloo'` (need groups): score = sum of the rewards
    over valid tokens; `credit.group_relative` over groups given either as
    contiguous blocks of `group_size` rows (row = p * G + g) or as
    `group_ids`/`num_groups`; rows without any valid token are excluded from
    the group statistics. The scalar advantage is broadcast to the valid tokens.
  * `'min_form'` (PURE): `reward_mask` marks the step-boundary tokens carrying
    process rewards (default: the last valid token of each row).
    `credit.min_form_rewards(rewards, temperature)` over those positions, then
    the reverse cumulative sum over valid tokens (discount `gamma`, PURE uses
    1) gives the returns, used as advantages (PURE's implemented variant,
    SPECS §2.1: a token in step j gets `sum_{k >= j} w_k r_k`, ~ the minimum up to
    the arg-min step and ~0 after it). If groups are given, an RLOO baseline
    is subtracted from every valid token: the mean over the *other* valid
    rows of the group of their outcome `O = sum_k w_k r_k` (PURE's outcome/step
    style baseline; its `token` baseline and verl's `T_pad` variant are not
    reproduced). `returns` = the advantages before this baseline.
  * `'reinforce'`: plain discounted returns over valid tokens as advantages and
    returns (REINFORCE / REINFORCE++ with `whiten=True`).
"""

from typing import Any
from typing import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from jaxca import ops
from jaxca.credit import _checks


class Targets(NamedTuple):
  """Estimator output.

  Attributes:
    advantages: [B, T] float32; 0 where the mask is False.
    returns: [B, T] float32 value targets; 0 where the mask is False.
  """

  advantages: jax.Array
  returns: jax.Array


class Estimator(NamedTuple):
  """A named advantage estimator.

  Attributes:
    name: one of `ESTIMATORS`.
    needs_values: whether `values` must be passed.
    needs_groups: whether `group_size` or `group_ids`/`num_groups` must be passed.
    fn: `fn(rewards, mask, *, values, group_size, group_ids, num_groups,
      bootstrap_value, reward_mask) -> Targets`.
  """

  name: str
  needs_values: bool
  needs_groups: bool
  fn: Callable[..., Targets]

  def __call__(
    self,
    rewards: jax.Array,
    mask: jax.Array,
    *,
    values: jax.Array | None = None,
    group_size: int | None = None,
    group_ids: jax.Array | None = None,
    num_groups: int | None = None,
    bootstrap_value: jax.Array | None = None,
    reward_mask: jax.Array | None = None,
  ) -> Targets:
    """Computes targets.

    Args:
      rewards: [B, T] float32 token-level rewards.
      mask: [B, T] bool response mask.
      values: [B, T] float32 critic values V(s_t) (required by `'gae'`).
      group_size: static int G with B = P * G, rows p*G .. p*G+G-1 form group p.
      group_ids: int [B] group of each row (alternative to `group_size`).
      num_groups: static int, number of groups (with `group_ids`).
      bootstrap_value: [B] float32 value after the last token (`'gae'`; default 0).
      reward_mask: [B, T] bool step-boundary tokens (`'min_form'`).

    Returns:
      `Targets` with [B, T] float32 advantages and returns.
    """
    rewards = _checks.as_float('rewards', rewards)
    if rewards.ndim != 2:
      raise ValueError(f'`rewards` must be [B, T]; got shape {rewards.shape}.')
    mask = _checks.check_mask(mask, 'rewards', rewards)
    if self.needs_values and values is None:
      raise ValueError(f'Estimator {self.name!r} needs `values` (critic values [B, T]).')
    if self.needs_groups and group_size is None and group_ids is None:
      raise ValueError(
        f'Estimator {self.name!r} needs groups: pass `group_size` (contiguous groups) '
        'or `group_ids` and `num_groups`.'
      )
    if group_size is not None and group_ids is not None:
      raise ValueError('Pass either `group_size` or `group_ids`, not both.')
    return self.fn(
      rewards,
      mask,
      values=values,
      group_size=group_size,
      group_ids=group_ids,
      num_groups=num_groups,
      bootstrap_value=bootstrap_value,
      reward_mask=reward_mask,
    )


def _group_baseline(scores, valid, mode, eps, group_size, group_ids, num_groups):
  """Group-relative advantages of per-row `scores` [B] (contiguous or by ids)."""
  if group_ids is not None:
    if num_groups is None:
      raise ValueError('`num_groups` (static int) is required with `group_ids`.')
    return credit.group_relative(
      scores, mode, group_ids=group_ids, num_groups=num_groups, eps=eps, valid=valid
    )
  b = scores.shape[0]
  if not isinstance(group_size, (int, np.integer)) or group_size < 1 or b % group_size:
    raise ValueError(
      f'`group_size` must be a positive int dividing the batch size {b}; got {group_size!r}.'
    )
  adv = credit.group_relative(
    scores.reshape(-1, group_size), mode, eps=eps, valid=valid.reshape(-1, group_size)
  )
  return adv.reshape(b)


def _last_valid(mask):
  """[B, T] bool, True at the last valid token of each row."""
  t = mask.shape[-1]
  idx = jnp.broadcast_to(jnp.arange(t), mask.shape)
  last = jnp.max(jnp.where(mask, idx, -1), axis=-1, keepdims=True)
  return idx == last


def _finish(adv, ret, mask, whiten):
  if whiten:
    adv = ops.masked_whiten(adv, mask)
  return Targets(jnp.where(mask, adv, 0.0), jnp.where(mask, ret, 0.0))


def make(
  name: str,
  *,
  gamma=1.0,
  lambda_=1.0,
  eps=1e-6,
  temperature=0.1,
  whiten: bool = False,
) -> Estimator:
  """Builds the estimator `name` (one of `ESTIMATORS`).

  Args:
    name: estimator name.
    gamma: discount per token (`'gae'`, `'reinforce'`, `'min_form'`).
    lambda_: GAE lambda (`'gae'`).
    eps: std offset of `'grpo'`.
    temperature: soft-min temperature of `'min_form'` (PURE default 0.1).
    whiten: whiten advantages over the valid tokens of the batch.

  Returns:
    An `Estimator`.

  Raises:
    ValueError: unknown `name` (the message lists `ESTIMATORS`).
  """
  _checks.choice('estimator', name, ESTIMATORS)

  def gae_fn(rewards, mask, *, values, bootstrap_value, **unused):
    del unused
    values = _checks.as_float('values', values)
    _checks.same_shape('rewards', rewards, values=values)
    if bootstrap_value is None:
      bootstrap_value = jnp.zeros(rewards.shape[:-1], jnp.float32)
    discounts = jnp.full(rewards.shape, gamma, jnp.float32)
    adv, ret = credit.gae(rewards, values, discounts, bootstrap_value, lambda_, mask=mask)
    return _finish(adv, ret, mask, whiten)

  def group_fn(rewards, mask, *, group_size, group_ids, num_groups, **unused):
    del unused
    scores = ops.masked_sum(rewards, mask, axis=-1)
    valid = jnp.any(mask, axis=-1)
    a = _group_baseline(scores, valid, name, eps, group_size, group_ids, num_groups)
    adv = jnp.where(mask, a[:, None], 0.0)
    return _finish(adv, adv, mask, whiten)

  def reinforce_fn(rewards, mask, **unused):
    del unused
    discounts = jnp.full(rewards.shape, gamma, jnp.float32)
    ret = credit.discounted_returns(rewards, discounts, 0.0, mask=mask)
    return _finish(ret, ret, mask, whiten)

  def min_form_fn(rewards, mask, *, group_size, group_ids, num_groups, reward_mask, **unused):
    del unused
    if reward_mask is None:
      reward_mask = _last_valid(mask)
    reward_mask = jnp.asarray(reward_mask)
    if reward_mask.dtype != jnp.bool_:
      raise TypeError(f'`reward_mask` must be a bool array; got dtype {reward_mask.dtype}.')
    _checks.same_shape('rewards', rewards, reward_mask=reward_mask)
    steps = reward_mask & mask
    shaped = credit.min_form_rewards(rewards, temperature, mask=steps)
    discounts = jnp.full(rewards.shape, gamma, jnp.float32)
    ret = credit.discounted_returns(shaped, discounts, 0.0, mask=mask)
    adv = ret
    if group_size is not None or group_ids is not None:
      outcome = jnp.sum(shaped, axis=-1)
      valid = jnp.any(mask, axis=-1)
      # s - mean_{others}(s)  =>  baseline = s - rloo(s).
      rloo = _group_baseline(outcome, valid, 'rloo', eps, group_size, group_ids, num_groups)
      adv = ret - jnp.where(valid, outcome - rloo, 0.0)[:, None]
    return _finish(adv, ret, mask, whiten)

  table: dict[str, tuple[bool, bool, Callable[..., Targets]]] = {
    'gae': (True, False, gae_fn),
    'grpo': (False, True, group_fn),
    'dr_grpo': (False, True, group_fn),
    'rloo': (False, True, group_fn),
    'min_form': (False, False, min_form_fn),
    'reinforce': (False, False, reinforce_fn),
  }
  needs_values, needs_groups, fn = table[name]
  return Estimator(name, needs_values, needs_groups, fn)


ESTIMATORS = ('gae', 'grpo', 'dr_grpo', 'rloo', 'min_form', 'reinforce')


def from_config(cfg: Any) -> Estimator:
  """Builds an estimator from a ConfigDict with `.estimator` and optional
  `.gamma`, `.lambda_`, `.eps`, `.temperature`, `.whiten`."""
  kwargs = {}
  for key in ('gamma', 'lambda_', 'eps', 'temperature', 'whiten'):
    if key in cfg:
      kwargs[key] = cfg[key]
  return make(cfg.estimator, **kwargs)
