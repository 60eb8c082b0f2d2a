"""Estimator stages and providers for Monte-Carlo step values: VinePPO and SPO-chain.

The kernels are in `jaxca.credit.mc`; this module wraps them as `jaxca.estimators` stages
(pass `stages=STAGES` to `estimators.make`, or use `make` below) and provides the fields
they read:

  est = mc_stages.make('vineppo | whiten')                           # VinePPO
  est = mc_stages.make('spo_chain | prob_whiten', prob_threshold=0.9, cut_interval=1)

Source stages:
  * `'vineppo'` (requires step_ids, mc_values): `credit.mc.vineppo_advantages` with the
    row's outcome R (the sum of its rewards over valid tokens); `returns` are R on every
    valid token (the Monte-Carlo return, gamma = 1). Kazemnejad et al. (2024),
    arXiv 2410.01679, Eq. 5.
  * `'spo_chain'` (requires log_probs, mc_values): `credit.mc.spo_chain_advantages` with
    traced `prob_threshold` and `cut_interval`; `mc_values[:, k]` is the value of the state
    before the k-th cut (`credit.mc.spo_segments`). Guo et al. (2025), arXiv 2505.23564,
    Sec. 3.

Transform stage:
  * `'prob_whiten'` (requires log_probs): `ops.masked_whiten` over the valid tokens with
    `pi_old < prob_threshold` only (`credit.mc.prob_mask`); the other tokens get 0. SPO
    whitens and trains on these tokens only (arXiv 2505.23564, Sec. 3.3).

Providers (`jaxca.lm` providers take a `RolloutContext`):
  * `loss_mask_provider(threshold)`: `loss_mask = prob_mask(log_probs, mask, threshold)`;
    the learner ANDs `loss_mask` into the loss mask (`lm.LEARNER_FIELDS`).
  * `mc_values` comes from the host between the two phases of an iteration
    (`lm.make_rl_phases(host_fields=('mc_values',))`), computed by
    `prefixes.mc_step_values` from completions sampled by `mc_complete_and_score`.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from jaxca import estimators
from jaxca import ops
from jaxca import sampling
from jaxca.credit import mc


def _outcome(traj):
  return ops.masked_sum(traj.rewards, traj.mask, axis=-1)


def vineppo() -> estimators.Stage:
  """The VinePPO source stage (see the module docstring)."""

  def apply(traj, prev, hp):
    del prev, hp
    r = _outcome(traj)
    adv = mc.vineppo_advantages(traj.step_ids, traj.mc_values, r, traj.mask)
    ret = jnp.where(traj.mask, r[:, None], 0.0)
    return estimators.Targets(adv, ret)

  return estimators.Stage('vineppo', ('step_ids', 'mc_values'), {}, apply)


def spo_chain(prob_threshold=0.9, cut_interval=1.0) -> estimators.Stage:
  """The SPO-chain source stage; `prob_threshold` and `cut_interval` are traced."""

  def apply(traj, prev, hp):
    del prev
    r = _outcome(traj)
    adv = mc.spo_chain_advantages(
      traj.log_probs,
      traj.mc_values,
      r,
      traj.mask,
      hp['prob_threshold'],
      hp['cut_interval'],
    )
    ret = jnp.where(traj.mask, r[:, None], 0.0)
    return estimators.Targets(adv, ret)

  hp = dict(prob_threshold=prob_threshold, cut_interval=cut_interval)
  return estimators.Stage('spo_chain', ('log_probs', 'mc_values'), hp, apply)


def prob_whiten(prob_threshold=0.9, eps=1e-8, unbiased: bool = True) -> estimators.Stage:
  """Whitening over the tokens with `pi_old < prob_threshold` (traced); 0 elsewhere."""

  def apply(traj, prev, hp):
    m = mc.prob_mask(traj.log_probs, traj.mask, hp['prob_threshold'])
    adv = ops.masked_whiten(prev.advantages, m, unbiased=unbiased, eps=hp['eps'])
    return estimators.Targets(adv, prev.returns)

  hp = dict(prob_threshold=prob_threshold, eps=eps)
  return estimators.Stage('prob_whiten', ('log_probs',), hp, apply, transform=True)


STAGES = {'vineppo': vineppo, 'spo_chain': spo_chain, 'prob_whiten': prob_whiten}


def make(spec: str, **kwargs) -> estimators.Estimator:
  """`estimators.make(spec, stages=STAGES, **kwargs)`."""
  return estimators.make(spec, stages=STAGES, **kwargs)


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
