"""Estimator stages for token-level credit: GTPO, GRPO-S (entropy) and HICRA (planning tokens).

The kernels are in `jaxca.credit.token_credit`; these are their `jaxca.estimators` stages:

  est = estimators.make('gtpo')                          # GTPO, joint group pool (default)
  est = estimators.make('gtpo', pooling='separate')      # the literal separate-pool reading
  est = estimators.make('grpo_s')                        # GRPO-S
  est = estimators.make('grpo | hicra', hicra_alpha=0.2) # HICRA, the paper's form
  est = estimators.make('grpo | hicra_official')         # HICRA, the released code's form

A response is correct when its outcome (the sum of its rewards over valid tokens) is > 0.5
(binary verifiers: 1 correct, 0 wrong). Advantages are also the `returns` (no value target),
as for the `'grpo'` stage.

Source stages:
  * `'gtpo'` (requires group_ids, entropies): `credit.token_credit.gtpo_advantages`, arXiv
    2508.04349 Eq. 3, 5 and 6; traced `alpha1`, `alpha2`, `entropy_eps`, `std_eps`; static
    `pooling` in `GTPO_POOLINGS` (`'joint'`, our reading, is the default; `'separate'` is the
    literal transcription, under which `alpha1` cancels and the outcome sign is lost).
  * `'grpo_s'` (requires group_ids, entropies): `credit.token_credit.grpo_s_advantages`
    (same paper, sequence level); traced `beta1`, `beta2`, `entropy_eps`, `std_eps`; static
    `pooling`.

Transform stages (after a group-relative source such as `'grpo'`):
  * `'hicra'` (requires `planning`, a bool [B, T] extras field: the planning set S):
    `credit.token_credit.hicra`, `A + alpha |A| 1[t in S]` (arXiv 2509.03646); traced
    `hicra_alpha`. With an empty S it returns its input unchanged (so `'grpo | hicra'` is
    GRPO).
  * `'hicra_official'` (requires entropies, group_ids): `credit.token_credit.hicra_official`,
    `A *= 1 + alpha` on the top-`hicra_top_fraction` entropy tokens of positive-advantage
    responses longer than their group's mean (the later-released code); traced `hicra_alpha`,
    `hicra_top_fraction`.

The planning set S is a field filled by a provider (`jaxca.lm.providers`):
  * `attention_metrics`: per-head mean attention distance over response queries, the global /
    local head split (`credit.token_credit.global_heads`), FAI with the global heads and with
    all heads, and WAAD with the local heads, from one non-cached forward with
    `return_attention=True` (arXiv 2510.13554; our operationalisation);
  * `fai_planning`: S = the top fraction (default 20%) of each response's tokens by FAI with
    the global heads of the batch (HICRA-FAI);
  * `token_planning_provider(token_id)`: S = the response tokens equal to `token_id` (e.g. the
    step separator: HICRA-sep).

Alignment: response token t sits at column `Lp + t` of `prompt ++ response` (its FAI and
WAAD are read there), while its entropy comes from the logits at column `Lp + t - 1` (the
distribution it was drawn from; `lm`'s `entropies` provider).
"""

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca.credit import token_credit as tc
from jaxca.estimators import core

GTPO_POOLINGS = tc.GTPO_POOLINGS


def correct_from_rewards(traj) -> jax.Array:
  """[B] bool: the response's outcome (sum of rewards over valid tokens) is > 0.5."""
  return ops.masked_sum(traj.rewards, traj.mask, axis=-1) > 0.5


def _groups(traj):
  ids = traj.group_ids
  if ids is None:
    raise ValueError('token credit stages need `group_ids`.')
  return jnp.asarray(ids, jnp.int32), int(traj.num_groups)


@core.stage()
def gtpo(alpha1=1.0, alpha2=0.1, entropy_eps=1e-6, std_eps=1e-6, pooling: str = 'joint'):
  """The GTPO source stage (see the module docstring)."""
  if pooling not in GTPO_POOLINGS:
    raise ValueError(f'`pooling` must be one of {GTPO_POOLINGS}; got {pooling!r}.')

  def apply(traj, prev, hp):
    del prev
    ids, k = _groups(traj)
    adv = tc.gtpo_advantages(
      traj.entropies,
      correct_from_rewards(traj),
      traj.mask,
      ids,
      k,
      alpha1=hp['alpha1'],
      alpha2=hp['alpha2'],
      pooling=pooling,
      eps=hp['entropy_eps'],
      std_eps=hp['std_eps'],
    )
    return core.Targets(adv, adv)

  hp = dict(alpha1=alpha1, alpha2=alpha2, entropy_eps=entropy_eps, std_eps=std_eps)
  return core.Stage('gtpo', ('group_ids', 'entropies'), hp, apply)


@core.stage()
def grpo_s(beta1=1.0, beta2=0.1, entropy_eps=1e-6, std_eps=1e-6, pooling: str = 'joint'):
  """The GRPO-S source stage (see the module docstring)."""
  if pooling not in GTPO_POOLINGS:
    raise ValueError(f'`pooling` must be one of {GTPO_POOLINGS}; got {pooling!r}.')

  def apply(traj, prev, hp):
    del prev
    ids, k = _groups(traj)
    adv = tc.grpo_s_advantages(
      traj.entropies,
      correct_from_rewards(traj),
      traj.mask,
      ids,
      k,
      beta1=hp['beta1'],
      beta2=hp['beta2'],
      pooling=pooling,
      eps=hp['entropy_eps'],
      std_eps=hp['std_eps'],
    )
    return core.Targets(adv, adv)

  hp = dict(beta1=beta1, beta2=beta2, entropy_eps=entropy_eps, std_eps=std_eps)
  return core.Stage('grpo_s', ('group_ids', 'entropies'), hp, apply)


@core.stage(transform=True)
def hicra(hicra_alpha=0.2):
  """HICRA's paper form as a transform stage; reads the bool extras field `planning`."""

  def apply(traj, prev, hp):
    planning = jnp.asarray(traj.get('planning'), jnp.bool_)
    adv = tc.hicra(prev.advantages, planning, traj.mask, hp['hicra_alpha'])
    return core.Targets(adv, prev.returns)

  return core.Stage('hicra', ('planning',), dict(hicra_alpha=hicra_alpha), apply, True)


@core.stage(transform=True)
def hicra_official(hicra_alpha=0.2, hicra_top_fraction=0.3):
  """HICRA's released-code form as a transform stage (top-entropy tokens, A > 0, long)."""

  def apply(traj, prev, hp):
    ids, k = _groups(traj)
    adv = tc.hicra_official(
      prev.advantages,
      traj.entropies,
      traj.mask,
      ids,
      k,
      alpha=hp['hicra_alpha'],
      top_fraction=hp['hicra_top_fraction'],
    )
    return core.Targets(adv, prev.returns)

  hp = dict(hicra_alpha=hicra_alpha, hicra_top_fraction=hicra_top_fraction)
  return core.Stage('hicra_official', ('entropies', 'group_ids'), hp, apply, True)


STAGES = {'gtpo': gtpo, 'grpo_s': grpo_s, 'hicra': hicra, 'hicra_official': hicra_official}
