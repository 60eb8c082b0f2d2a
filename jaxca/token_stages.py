"""Estimator stages for token-level credit: GTPO, GRPO-S (entropy) and HICRA (planning tokens).

The kernels are in `jaxca.credit.token_credit`; this module wraps them as `jaxca.estimators`
stages (pass `stages=STAGES` to `estimators.make`, or use `make` below) and computes the
planning sets HICRA reads:

  est = token_stages.make('gtpo')                          # GTPO, joint group pool (default)
  est = token_stages.make('gtpo', pooling='separate')      # the literal separate-pool reading
  est = token_stages.make('grpo_s')                        # GRPO-S
  est = token_stages.make('grpo | hicra', hicra_alpha=0.2) # HICRA, the paper's form
  est = token_stages.make('grpo | hicra_official')         # HICRA, the released code's form

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

Planning sets (host fields or providers of `planning`):
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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxca import estimators
from jaxca import ops
from jaxca.credit import token_credit as tc

GTPO_POOLINGS = tc.GTPO_POOLINGS


def correct_from_rewards(traj) -> jax.Array:
  """[B] bool: the response's outcome (sum of rewards over valid tokens) is > 0.5."""
  return ops.masked_sum(traj.rewards, traj.mask, axis=-1) > 0.5


def _groups(traj):
  ids = traj.group_ids
  if ids is None:
    raise ValueError('token credit stages need `group_ids`.')
  return jnp.asarray(ids, jnp.int32), int(traj.num_groups)


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
    return estimators.Targets(adv, adv)

  hp = dict(alpha1=alpha1, alpha2=alpha2, entropy_eps=entropy_eps, std_eps=std_eps)
  return estimators.Stage('gtpo', ('group_ids', 'entropies'), hp, apply)


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
    return estimators.Targets(adv, adv)

  hp = dict(beta1=beta1, beta2=beta2, entropy_eps=entropy_eps, std_eps=std_eps)
  return estimators.Stage('grpo_s', ('group_ids', 'entropies'), hp, apply)


def hicra(hicra_alpha=0.2):
  """HICRA's paper form as a transform stage; reads the bool extras field `planning`."""

  def apply(traj, prev, hp):
    planning = jnp.asarray(traj.get('planning'), jnp.bool_)
    adv = tc.hicra(prev.advantages, planning, traj.mask, hp['hicra_alpha'])
    return estimators.Targets(adv, prev.returns)

  return estimators.Stage('hicra', ('planning',), dict(hicra_alpha=hicra_alpha), apply, True)


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
    return estimators.Targets(adv, prev.returns)

  hp = dict(hicra_alpha=hicra_alpha, hicra_top_fraction=hicra_top_fraction)
  return estimators.Stage('hicra_official', ('entropies', 'group_ids'), hp, apply, True)


STAGES = {'gtpo': gtpo, 'grpo_s': grpo_s, 'hicra': hicra, 'hicra_official': hicra_official}


def make(spec: str, **kwargs) -> estimators.Estimator:
  """`estimators.make(spec, stages=STAGES, **kwargs)`."""
  return estimators.make(spec, stages=STAGES, **kwargs)


# ----------------------------------------------------------------------------- planning sets


class AttentionMetrics(NamedTuple):
  """Attention statistics of `prompt ++ response` rows (arXiv 2510.13554; our reading).

  Attributes:
    distance: [layers * H] mean backward attention distance per head over response queries.
    global_heads: [layers * H] bool, distance above the median.
    fai_global: [B, L] FAI with the global heads (queries: later response tokens).
    fai_all: [B, L] FAI with all heads.
    waad: [B, L] WAAD with the local heads and window `window`.
  """

  distance: jax.Array
  global_heads: jax.Array
  fai_global: jax.Array
  fai_all: jax.Array
  waad: jax.Array


def attention_metrics(attention, valid, response_mask, window=4.0) -> AttentionMetrics:
  """Head split, FAI and WAAD from `[B, layers, H, L, L]` attention maps.

  Args:
    attention: [B, layers, H, L, L] (or [B, H, L, L]) float32 attention probabilities of
      `prompt ++ response` rows (`PolicyOutput.attention`).
    valid: [B, L] bool, the valid tokens (prompt and response).
    response_mask: [B, L] bool, the valid response tokens (the queries that define the head
      split and FAI; FAI of prompt tokens is also computed, from response queries).
    window: WAAD's W (traceable).

  Returns:
    `AttentionMetrics` (token arrays over all L columns; 0 at invalid tokens).
  """
  distance = tc.mean_attention_distance(attention, response_mask, valid)
  heads = tc.global_heads(distance)
  return AttentionMetrics(
    distance=distance,
    global_heads=heads,
    fai_global=tc.fai(attention, valid, heads, query_mask=response_mask),
    fai_all=tc.fai(attention, valid, None, query_mask=response_mask),
    waad=tc.waad(attention, valid, ~heads, window),
  )


def fai_planning(policy, params, tokens, valid, prompt_len: int, fraction=0.2) -> jax.Array:
  """HICRA-FAI planning set: the top `fraction` of each response's tokens by global-head FAI.

  One extra non-cached forward with `return_attention=True`; the head split is computed on
  this batch (response queries).

  Args:
    policy: a `networks.transformer.Policy`; params: its parameters.
    tokens: [B, L] int32 `prompt ++ response`; valid: [B, L] bool.
    prompt_len: Lp (static); response token t is column Lp + t.
    fraction: traceable scalar.

  Returns:
    bool [B, L - Lp], the planning set S over response positions.
  """
  out = policy.apply(params, tokens, valid, return_attention=True)
  response = valid & (jnp.arange(valid.shape[-1]) >= prompt_len)[None, :]
  m = attention_metrics(jax.lax.stop_gradient(out.attention), valid, response)
  return tc.top_fraction_mask(m.fai_global[:, prompt_len:], response[:, prompt_len:], fraction)


def token_planning_provider(token_id: int):
  """A provider of `planning`: the response tokens equal to `token_id` (e.g. separators)."""

  def provide(ctx):
    return dict(planning=(ctx.responses == token_id) & ctx.mask)

  return provide
