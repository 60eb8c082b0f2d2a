"""PURE's stages (arXiv 2504.15275): `min_form` and the whole reward pipeline `pure`."""

import jax
import jax.numpy as jnp

from jaxca import credit
from jaxca import ops
from jaxca.credit import _checks
from jaxca.estimators import core

MIN_FORM_TRANSFORMS = ('softmin', 'sum')
MIN_FORM_BASELINES = ('token', 'step', 'outcome', 'none')
PURE_TRANSFORMS = ('sum', 'softmin', 'strict_min')  # transform_id 0, 1, 2
PURE_BASELINES = ('none', 'token', 'step', 'seq')  # baseline_id 0, 1, 2, 3


def _group_index(traj):
  """[B] int32 group of each row (contiguous groups made explicit)."""
  if traj.groups_contiguous:
    b = traj.mask.shape[0]
    return jnp.arange(b, dtype=jnp.int32) // (b // traj.num_groups)
  return traj.group_ids


def _closer_rewards(step_values, step_ids, closers):
  """[B, T]: each step's value on its closing token, 0 elsewhere."""
  return jnp.where(closers, ops.to_tokens(step_values, step_ids), 0.0)


@core.stage()
def min_form(
  temperature=0.1,
  gamma=1.0,
  transform: str = 'softmin',
  baseline: str = 'token',
  mask_separators: bool = True,
) -> core.Stage:
  """PURE's min-form credit as a stage (arXiv 2504.15275, Eq. 4-6).

  Requires step_ids, step_rewards and, for a baseline, group_ids. The step rewards are
  transformed (`transform='softmin'`: `credit.min_form_rewards` at `temperature`, PURE's
  approximate min-form; `'sum'`: unchanged, PURE's "gamma-decay" sum-form), a baseline is
  subtracted (`baseline='token'` | `'step'`: PURE's two RLOO baselines,
  `credit.pure_baseline`; `'outcome'`: the other rows' mean transformed outcome subtracted
  once from every token's return, a jaxca variant that is not in PURE's code; `'none'`), the
  step rewards are placed on each step's closing token and summed backwards (discount
  `gamma`; PURE asserts 1). With `mask_separators=True` (PURE's default) the advantage at
  every step closer (separators, EOS or the last token) is 0. `returns` are the returns of
  the transformed rewards before any baseline. Traced: `temperature`, `gamma`.
  """
  _checks.choice('transform', transform, MIN_FORM_TRANSFORMS)
  _checks.choice('baseline', baseline, MIN_FORM_BASELINES)
  requires = ('step_ids', 'step_rewards') + (('group_ids',) if baseline != 'none' else ())

  def apply(traj, prev, hp):
    del prev
    mask = traj.mask
    s = traj.num_steps
    valid, step_ids, count = core.step_layout(traj)
    pr = jnp.where(valid, _checks.as_float('step_rewards', traj.step_rewards), 0.0)
    if transform == 'softmin':
      shaped = credit.min_form_rewards(pr, hp['temperature'], mask=valid)
    else:
      shaped = pr
    closers = ops.step_closers(step_ids, s)
    discounts = core.discounts(traj, hp['gamma'])

    def token_returns(step_r):
      return credit.discounted_returns(
        _closer_rewards(step_r, step_ids, closers), discounts, 0.0, mask=mask
      )

    ret = token_returns(shaped)
    row_valid = jnp.any(mask, axis=-1)
    if baseline in ('token', 'step'):
      based = credit.pure_baseline(
        shaped,
        valid,
        count - 1.0,
        ops.masked_count(mask, axis=-1),
        _group_index(traj),
        traj.num_groups,
        baseline,
        row_valid=row_valid,
      )
      adv = token_returns(based)
    elif baseline == 'outcome':
      outcome = jnp.sum(shaped, axis=-1)
      rloo = core.row_group_relative(outcome, row_valid, traj, 'rloo', 0.0)
      adv = ret - jnp.where(row_valid, outcome - rloo, 0.0)[:, None]  # s - rloo(s) = mean of others
    else:
      adv = ret
    if mask_separators:
      adv = jnp.where(closers, 0.0, adv)
    return core.Targets(adv, ret)

  return core.Stage('min_form', requires, dict(temperature=temperature, gamma=gamma), apply)


def _select(index, options):
  """options[round(index)] for a traced scalar index (every option is computed)."""
  i = jnp.round(jnp.asarray(index, jnp.float32))
  out = options[-1]
  for j in range(len(options) - 2, -1, -1):
    out = jnp.where(i == j, options[j], out)
  return out


def _k1_in_reward(rewards, log_probs, ref_log_probs, mask, coef):
  """`r_t - coef * (log pi - log pi_ref)` where valid (k1 KL in the reward, gradient stopped)."""
  log_probs = jnp.where(mask, log_probs, 0.0)
  ref = jax.lax.stop_gradient(jnp.where(mask, ref_log_probs, 0.0))
  k = jax.lax.stop_gradient(jnp.where(mask, log_probs - ref, 0.0))
  return jnp.where(mask, rewards - coef * k, rewards)


@core.stage()
def pure(
  temperature=0.1,
  transform: str = 'softmin',
  baseline: str = 'token',
  prm_coef=1.0,
  vr_coef=0.0,
  vr_all=0.0,
  kl_coef=1e-3,
  mask_separators=1.0,
  shuffle_vr=0.0,
  verifiable: bool = True,
  kl_in_reward: bool = True,
) -> core.Stage:
  """PURE's whole reward pipeline (arXiv 2504.15275 Sec. 3; its code's `process_experiences`).

  Requires step_ids, step_rewards, group_ids, and `vr_reference` [B] (extras) unless
  `verifiable=False`, log_probs and `ref_log_probs` (extras) unless `kl_in_reward=False`.
  Every choice is a traced hyper-parameter, so one compile serves every arm: the PRM scores
  (times `prm_coef`; 0 gives a verifiable-reward-only learner) are transformed
  (`transform_id` 0 'sum': unchanged, PURE's sum-form "gamma-decay"; 1 'softmin':
  `credit.min_form_rewards` at `temperature`; 2 'strict_min': the step rewards whose suffix
  sums are the paper's `credit.min_form_returns`), baselined (`baseline_id` 0 'none',
  1 'token', 2 'step': `credit.pure_baseline`; 3 'seq': only the RLOO of the outcome
  `O_i - mean_{j!=i} O_j` on the last step), placed on the step closers; the verifiable
  reward `v = solved - 1` (solved = the row's sum of `rewards`, the verifier's outcome) on
  rows whose prompt has a reference (`vr_reference` > 0, or every row with `vr_all` = 1;
  0 elsewhere), RLOO'd within groups, is added times `vr_coef` on the last valid token; the
  k1 KL to the reference policy is subtracted per token times `kl_coef`; the advantage is
  the reverse cumulative sum (gamma = 1) and, with `mask_separators` > 0.5 (PURE's default,
  `nomask_separator_adv=False`), 0 at every step closer (separators, EOS, the last token).
  With `shuffle_vr` > 0.5 the verifiable reward of row i of group k is the outcome of row i of
  group k - 1 (mod the groups; the sampler's contiguous layout), another prompt's outcome: the
  noise floor of a VR learner (as `shuffled_reward` is GRPO's). Follow with
  `whiten(skip_zeros=True)`. The string options `transform` / `baseline` set the default ids;
  `mask_separators` (a bool or 0/1) and `shuffle_vr` are traced like the rest.
  """
  _checks.choice('transform', transform, PURE_TRANSFORMS)
  _checks.choice('baseline', baseline, PURE_BASELINES)
  requires = ('step_ids', 'step_rewards', 'group_ids')
  requires += ('vr_reference',) if verifiable else ()
  requires += ('log_probs', 'ref_log_probs') if kl_in_reward else ()

  def apply(traj, prev, hp):
    del prev
    mask = traj.mask
    s = traj.num_steps
    valid, step_ids, count = core.step_layout(traj)
    row_valid = jnp.any(mask, axis=-1)
    pr = hp['prm_coef'] * jnp.where(valid, _checks.as_float('step_rewards', traj.step_rewards), 0.0)
    strict = credit.min_form_returns(pr, mask=valid)  # steps 0..K-1 occur (contiguous)
    strict = jnp.where(valid, strict - jnp.pad(strict[:, 1:], ((0, 0), (0, 1))), 0.0)
    soft = credit.min_form_rewards(pr, hp['temperature'], mask=valid)
    shaped = _select(hp['transform_id'], [pr, soft, strict])
    ids = _group_index(traj)
    lengths = ops.masked_count(mask, axis=-1)
    by_mode = {
      mode: credit.pure_baseline(
        shaped, valid, count - 1.0, lengths, ids, traj.num_groups, mode, row_valid=row_valid
      )
      for mode in ('token', 'step')
    }
    outcome = jnp.sum(shaped, axis=-1)
    last_step = valid & (jnp.arange(s)[None, :] == jnp.sum(valid, axis=-1, keepdims=True) - 1)
    seq = jnp.where(
      last_step, core.row_group_relative(outcome, row_valid, traj, 'rloo', 0.0)[:, None], 0
    )
    based = _select(hp['baseline_id'], [shaped, by_mode['token'], by_mode['step'], seq])
    closers = ops.step_closers(step_ids, s)
    r = _closer_rewards(based, step_ids, closers)
    if verifiable:
      solved = ops.masked_sum(traj.rewards, mask, axis=-1)
      rolled = jnp.roll(solved, mask.shape[0] // int(traj.num_groups))  # row i of group k - 1
      solved = jnp.where(hp['shuffle_vr'] > 0.5, rolled, solved)
      has_ref = (jnp.asarray(traj.get('vr_reference')) > 0) | (hp['vr_all'] > 0.5)
      v = jnp.where(has_ref, solved - 1.0, 0.0)
      v_hat = core.row_group_relative(v, row_valid, traj, 'rloo', 0.0)
      last_tok = ops.step_closers(jnp.where(mask, 0, -1), 1)
      r = r + hp['vr_coef'] * jnp.where(last_tok, v_hat[:, None], 0.0)
    if kl_in_reward:
      r = _k1_in_reward(r, traj.log_probs, traj.get('ref_log_probs'), mask, hp['kl_coef'])
    ones = jnp.ones_like(r)
    adv = credit.discounted_returns(r, ones, 0.0, mask=mask)
    ret = credit.discounted_returns(
      _closer_rewards(shaped, step_ids, closers), ones, 0.0, mask=mask
    )
    adv = jnp.where(closers & (hp['mask_separators'] > 0.5), 0.0, adv)
    return core.Targets(adv, ret)

  hparams = dict(
    temperature=temperature,
    transform_id=float(PURE_TRANSFORMS.index(transform)),
    baseline_id=float(PURE_BASELINES.index(baseline)),
    prm_coef=prm_coef,
    vr_coef=vr_coef,
    vr_all=vr_all,
    kl_coef=kl_coef,
    mask_separators=float(mask_separators),
    shuffle_vr=shuffle_vr,
  )
  return core.Stage('pure', requires, hparams, apply)


STAGES = {'min_form': min_form, 'pure': pure}
