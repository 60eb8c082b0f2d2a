"""Providers: the functions that fill the Trajectory fields an estimator `requires`.

In jit (`PROVIDERS[field](ctx) -> dict of fields`, `ctx` a `RolloutContext`): values, log-probs,
entropies, groups, steps, step rewards, anchors, reference log-probs; per-run extras such as
SPO's `loss_mask_provider` and HICRA-sep's `token_planning_provider`.

The pieces of the host-side fields: Monte-Carlo step values (VinePPO, arXiv 2410.01679;
SPO, arXiv 2505.23564) complete every step prefix with `mc_complete_and_score`; HICRA-FAI's
planning set (arXiv 2509.03646, 2510.13554) is `fai_planning`, one extra forward with
attention maps.

Alignment: response token t sits at column `Lp + t` of `prompt ++ response` (its FAI and
WAAD are read there), while its entropy comes from the logits at column `Lp + t - 1` (the
distribution it was drawn from; the `entropies` provider).
"""

from typing import Callable
from typing import Dict
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca import sampling
from jaxca import types
from jaxca.credit import mc
from jaxca.credit import token_credit as tc
from jaxca.objectives import losses


class RolloutContext:
  """What a provider may read, computed lazily and at most once per rollout.

  Attributes:
    task: the task; `batch`: per-row arrays (repeated G times);
    responses [B, N] int32, mask [B, N] bool, rewards [B, N] float32;
    log_probs [B, N] float32 (old policy, 0 where masked); ref_log_probs [B, N]
    float32 (reference policy; None unless the rollout uses it); values [B, N] or
    None (value head); response_logits [B, N, V] float32 (divided by the
    temperature); group_size G (rows p*G .. p*G+G-1 answer prompt p); key (a PRNG
    key of this rollout, independent of the sampling key, e.g. for a noisy reward
    model); steps (`Task.parse_steps`, lazily); extras (the collect's own arrays,
    `rollout.RolloutData.extras`); hparams (the estimator's traced hyper-parameters of this
    update, or None for its defaults).
  """

  def __init__(self, **kwargs):
    self.__dict__.update(kwargs)
    self._steps = None

  @property
  def steps(self):
    if self._steps is None:
      self._steps = self.task.parse_steps(self.responses, self.mask)
    return self._steps


def _provide_values(ctx):
  if ctx.values is None:
    raise ValueError('The estimator requires `values`: use a policy with a value head.')
  return dict(values=jnp.where(ctx.mask, ctx.values, 0.0))


def _provide_groups(ctx):
  b = ctx.mask.shape[0]
  g = ctx.group_size
  return dict(
    group_ids=jnp.arange(b, dtype=jnp.int32) // g, num_groups=b // g, groups_contiguous=True
  )


def _provide_step_rewards(ctx):
  step_ids = ctx.steps.step_ids
  return dict(step_rewards=ops.to_steps(ctx.rewards, step_ids, step_ids.shape[-1], mask=ctx.mask))


def _provide_ref_log_probs(ctx):
  if ctx.ref_log_probs is None:
    raise ValueError('The estimator requires `ref_log_probs`: the rollout must use the reference.')
  return dict(ref_log_probs=ctx.ref_log_probs)


def _provide_anchors(ctx):
  anchors = ctx.task.anchors(ctx.responses, ctx.mask, ctx.batch, ctx.steps)
  if anchors is None:
    raise ValueError('The estimator requires `anchor_ids`, which this task does not define.')
  return dict(anchor_ids=anchors)


# Trajectory field -> provider(ctx) -> dict of Trajectory fields. `rewards` and `mask`
# are always filled. Pass `providers={name: fn}` to the learner to add or override one.
PROVIDERS: Dict[str, Callable] = {
  'values': _provide_values,
  'bootstrap_value': lambda ctx: dict(bootstrap_value=jnp.zeros(ctx.mask.shape[:1], jnp.float32)),
  'log_probs': lambda ctx: dict(log_probs=ctx.log_probs),
  'entropies': lambda ctx: dict(
    entropies=jnp.where(ctx.mask, losses.entropy_from_logits(ctx.response_logits), 0.0)
  ),
  'group_ids': _provide_groups,
  'step_ids': lambda ctx: dict(step_ids=ctx.steps.step_ids),
  'step_rewards': _provide_step_rewards,
  'anchor_ids': _provide_anchors,
  'ref_log_probs': _provide_ref_log_probs,  # goes to `Trajectory.extras`
}


def check_providers(estimator, providers=None, *, value_head: Optional[bool] = None) -> dict:
  """The providers for `estimator.requires`; one ValueError lists every field nobody provides."""
  table = dict(PROVIDERS, **(providers or {}))
  need = [f for f in estimator.requires if f not in ('rewards', 'mask')]
  lacking = [f for f in need if f not in table]
  if lacking:
    raise ValueError(
      f'Estimator {estimator.name!r} requires Trajectory field(s) {lacking} that no provider '
      f'fills; pass providers={{name: fn(ctx) -> dict}} (built-in: {sorted(PROVIDERS)}).'
    )
  if value_head is False and 'values' in need and 'values' not in (providers or {}):
    raise ValueError(
      f'Estimator {estimator.name!r} requires `values`: use a policy with a value head.'
    )
  return {f: table[f] for f in need}


def build_trajectory(ctx: RolloutContext, fields: dict) -> types.Trajectory:
  """Calls each provider of `fields` (name -> provider) on `ctx`; returns the Trajectory."""
  kwargs = {}
  for provide in fields.values():
    kwargs.update(provide(ctx))
  return types.Trajectory(rewards=ctx.rewards, mask=ctx.mask).replace(**kwargs)


# ----------------------------------------------------------------------------- Monte-Carlo values


def loss_mask_provider(threshold: float = 0.9):
  """A provider of `loss_mask`: the valid tokens with `pi_old < threshold` (SPO)."""

  def provide(ctx):
    return dict(loss_mask=mc.prob_mask(ctx.log_probs, ctx.mask, threshold))

  return provide


def mc_complete_and_score(
  policy,
  task,
  params,
  key: jax.Array,
  prefixes: jax.Array,
  prefix_mask: jax.Array,
  rows: dict,
  *,
  num_samples: int,
  max_new_tokens: int,
  temperature=1.0,
  response_len: Optional[int] = None,
):
  """Completes U prefixes `num_samples` times each and scores the completed responses.

  The prefixes are `prompt ++ response-so-far` rows (`credit.mc.step_prefixes`) whose
  prompt occupies the first `task.prompt_len` columns; a completed row is the state's
  response tokens followed by the completion, compacted (`sampling.compact`) to
  `response_len` tokens (default `task.response_len`: what the policy could have
  generated) and scored with `task.outcome` against `rows` (the task's per-row batch
  arrays of each prefix, [U, ...]).

  Args:
    policy, task, params: the policy and the task.
    key: PRNG key of the completions.
    prefixes: [U, L] int32; prefix_mask: [U, L] bool.
    rows: dict of [U, ...] arrays (the batch row each prefix came from).
    num_samples: n completions per prefix (static).
    max_new_tokens: completion length (static).
    temperature: sampling temperature (traceable).
    response_len: width of the scored response (static).

  Returns:
    (rewards [U * n] float32, finished [U * n] bool: the completed response has an EOS
    within `response_len` tokens, generated [U * n] int32 tokens generated per completion).
  """
  voc = task.vocab
  samples = sampling.sample_from_prefixes(
    policy,
    params,
    key,
    prefixes,
    prefix_mask,
    num_samples=num_samples,
    max_new_tokens=max_new_tokens,
    temperature=temperature,
    eos_id=voc.eos_id,
    pad_id=voc.pad_id,
  )
  lp = task.prompt_len
  width = task.response_len if response_len is None else int(response_len)
  resp, rmask = sampling.compact(samples.tokens[:, lp:], samples.valid[:, lp:], width, voc.pad_id)
  rep = {k: jnp.repeat(v, num_samples, axis=0) for k, v in rows.items()}
  rewards = task.outcome(resp, rmask, rep).astype(jnp.float32)
  # Finished: the completed response ends (EOS) within `response_len` tokens (a prefix that
  # already holds EOS is finished whatever is sampled after it).
  finished = jnp.any((resp == voc.eos_id) & rmask, axis=-1)
  return rewards, finished, samples.lengths


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
