"""Advantage estimators: pure functions of a `Trajectory`, composed from named stages.

  est = estimators.make('grpo')                        # or from_config(cfg.credit)
  est.requires                                         # ('rewards', 'mask', 'group_ids')
  targets = est(traj)                                  # Targets(advantages, returns)
  targets = est(traj, hparams)                         # hparams: a pytree of arrays (vmappable)

`traj` is a `jaxca.types.Trajectory` (B rows, T tokens, S steps; see its module
for every field). Outputs are `Targets(advantages, returns)`, both [B, T]
float32 and 0 where `traj.mask` is False; `returns` are value targets.

A spec string composes stages: `'a + w*b | post1 | post2'`. Source stages
(`a`, `b`) each compute targets from the trajectory; the advantages are summed
with weights (`w` defaults to 1; the weights are traceable hyper-parameters, so
`omega` of 'episode-level + omega * step-level' can be swept under `vmap`), the
returns are those of the first term. Transform stages after `|` map targets to
targets in order (e.g. `whiten`, the one place where advantages are normalised).

Source stages (`SOURCES`):
  * `'gae'` (requires values): `credit.gae` with `traj.discounts` (default:
    `gamma` everywhere) and `traj.bootstrap_value` (default 0: no bootstrap
    after the last valid token, as in verl); masked tokens are transparent.
  * `'reinforce'`: discounted returns over valid tokens (REINFORCE; REINFORCE++
    with `| whiten`), used as advantages and returns.
  * `'grpo'`, `'dr_grpo'`, `'rloo'` (require group_ids): the score of a row is
    the sum of its rewards over valid tokens; `credit.group_relative` over the
    groups; rows without a valid token are left out of the group statistics.
    The row advantage is broadcast to its valid tokens.
  * `'min_form'` (PURE, arXiv 2504.15275; requires step_ids, step_rewards and,
    for a baseline, group_ids): the step rewards are transformed
    (`transform='softmin'`: `credit.min_form_rewards` at `temperature`, PURE's
    approximate min-form; `'sum'`: unchanged, PURE's "gamma-decay" sum-form),
    a baseline is subtracted (`baseline='token'` | `'step'`: PURE's two RLOO
    baselines, `credit.pure_baseline`; `'outcome'`: the other rows' mean
    transformed outcome subtracted once from every token's return, a jaxca
    variant that is not in PURE's code; `'none'`), the step rewards are placed
    on each step's closing token and summed backwards (discount `gamma`; PURE
    asserts 1). With `mask_separators=True` (PURE's default) the advantage at
    every step closer (separators, EOS or the last token) is 0. `returns` are
    the returns of the transformed rewards before any baseline.
  * `'pure'` (PURE's whole reward pipeline, arXiv 2504.15275 Sec. 3 and its
    code's `process_experiences`; requires step_ids, step_rewards, group_ids,
    and `vr_reference` [B] (extras) unless `verifiable=False`, log_probs and
    `ref_log_probs` (extras) unless `kl_in_reward=False`). Every choice is a
    traced hyper-parameter, so one compile serves every arm: the PRM scores
    (times `prm_coef`; 0 gives a verifiable-reward-only learner) are
    transformed (`transform_id` 0 'sum': unchanged, PURE's sum-form
    "gamma-decay"; 1 'softmin': `credit.min_form_rewards` at `temperature`;
    2 'strict_min': the step rewards whose suffix sums are the paper's
    `credit.min_form_returns`), baselined (`baseline_id` 0 'none', 1 'token',
    2 'step': `credit.pure_baseline`; 3 'seq': only the RLOO of the outcome
    `O_i - mean_{j!=i} O_j` on the last step), placed on the step closers;
    the verifiable reward `v = solved - 1` (solved = the row's sum of
    `rewards`, the verifier's outcome) on rows whose prompt has a reference
    (`vr_reference` > 0, or every row with `vr_all` = 1; 0 elsewhere), RLOO'd
    within groups, is added times `vr_coef` on the last valid token; the k1
    KL to the reference policy is subtracted per token times `kl_coef`; the
    advantage is the reverse cumulative sum (gamma = 1) and, with
    `mask_separators` (PURE's default), 0 at every step closer (separators,
    EOS, the last token). Follow with `whiten(skip_zeros=True)`. The string
    options `transform` / `baseline` set the default ids.

  * `'gigpo_episode'` (GiGPO, arXiv 2505.10978 Eq. 3; requires group_ids,
    step_ids, step_rewards): `credit.gigpo.episode_advantages` of the episode
    return; traced `std_norm` (0: mean_norm, 1: mean_std_norm) and
    `per_trajectory` (1: statistics over unique trajectories, the paper's form;
    0: over all step rows, the verl-agent default).
  * `'gigpo_step'` (Eqs. 5-7; also requires anchor_ids, and history_ids with
    `history=True`): `credit.gigpo.step_advantages`, discounted step returns
    (`gamma`) normalised within (task, anchor) groups; traced key flags
    `key_state`, `key_turn`, `key_history` choose the anchor key (default: the
    anchor state). `'turn_step'` is the same stage grouping by turn index
    (MT-GRPO, arXiv 2505.11821; `key_state=0, key_turn=1`). GiGPO is
    `'gigpo_episode + omega*gigpo_step'`; with omega = 0 it is GRPO (with
    `per_trajectory=1` exactly the `'grpo'` / `'dr_grpo'` stages).

Transform stages (`TRANSFORMS`):
  * `'whiten'`: `ops.masked_whiten` of the advantages over the valid tokens of
    the batch (verl/tunix defaults: unbiased variance, `eps` 1e-8);
    `skip_zeros=True` leaves tokens whose advantage is exactly 0 out of the
    statistics and at 0 (PURE's `normalize`, which treats them as separators).

Keyword hyper-parameters of `make` go to every stage that takes them (e.g.
`gamma` to 'gae' and 'reinforce'); a name no stage knows raises ValueError.
Floats become traceable hyper-parameters (`est.hparams`); strings and bools are
static options. New stages come in per call: `make(spec, stages={name: builder})`,
with `builder(**options) -> Stage` (no global registry to mutate).

`est(rewards, mask, values=..., group_size=..., reward_mask=...)`, the call form
before `Trajectory`, still works (see `legacy_trajectory`).
"""

import dataclasses
import inspect
import re
from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from jaxca import kl
from jaxca import ops
from jaxca import types
from jaxca.credit import _checks
from jaxca.types import Trajectory


class Targets(NamedTuple):
  """Estimator output.

  Attributes:
    advantages: [B, T] float32; 0 where the mask is False.
    returns: [B, T] float32 value targets; 0 where the mask is False.
  """

  advantages: jax.Array
  returns: jax.Array


class Stage(NamedTuple):
  """One named piece of an estimator.

  Attributes:
    name: the registry name.
    requires: Trajectory fields the stage reads.
    hparams: dict of float32 scalars, the traceable hyper-parameters.
    apply: `apply(traj, prev, hparams) -> Targets`; `prev` is None for a source
      stage and the incoming targets for a transform stage.
    transform: whether the stage maps targets to targets.
  """

  name: str
  requires: tuple
  hparams: dict
  apply: Callable[..., Targets]
  transform: bool = False


def _unique(names):
  out = []
  for n in names:
    if n not in out:
      out.append(n)
  return tuple(out)


@dataclasses.dataclass(frozen=True, eq=False)
class Estimator:
  """Weighted source stages, then transform stages (see the module docstring).

  Callable (and `jax.jit`-able directly); compared and hashed by identity.

  Attributes:
    name: the spec string it was built from.
    terms: source `Stage`s, summed with weights.
    post: transform `Stage`s, applied in order.
    hparams: default hyper-parameters, `dict(weights=[n_terms] float32,
      terms=(dict, ...), post=(dict, ...))`; pass a pytree of this structure
      (arrays, possibly batched under `vmap`) as the second call argument.
  """

  name: str
  terms: tuple
  post: tuple
  hparams: dict

  @property
  def requires(self) -> tuple:
    """Trajectory fields the estimator reads (`rewards` and `mask` always)."""
    names = ['rewards', 'mask']
    for stage in self.terms + self.post:
      names.extend(stage.requires)
    return _unique(names)

  def __call__(self, traj, mask=None, *, hparams=None, **legacy) -> Targets:
    """Computes the targets of `traj` (a `Trajectory`).

    Args:
      traj: the trajectory. (Legacy form: `rewards` [B, T], with `mask` and the
        keywords of `legacy_trajectory`.)
      mask: legacy form only.
      hparams: optional hyper-parameter pytree (structure of `self.hparams`);
        default `self.hparams`. May also be passed positionally after `traj`.
      **legacy: legacy form only (values, group_size, group_ids, num_groups,
        bootstrap_value, reward_mask).

    Raises:
      ValueError: `traj` lacks required fields (one message lists them all).
    """
    if isinstance(traj, Trajectory):
      if legacy:
        raise TypeError(f'Unexpected keywords {sorted(legacy)} with a Trajectory.')
      if mask is not None:
        if hparams is not None:
          raise TypeError('hparams given twice.')
        hparams = mask
    else:
      traj = legacy_trajectory(traj, mask, **legacy)
    hp = self.hparams if hparams is None else hparams
    types.check_requires(traj, self.requires, f'Estimator {self.name!r}')
    traj = _check_trajectory(traj)
    weights = jnp.asarray(hp['weights'], jnp.float32)
    out = None
    for i, stage in enumerate(self.terms):
      t = stage.apply(traj, None, hp['terms'][i])
      if out is None:
        adv = t.advantages if len(self.terms) == 1 else weights[i] * t.advantages
        out = Targets(adv, t.returns)
      else:
        out = Targets(out.advantages + weights[i] * t.advantages, out.returns)
    for i, stage in enumerate(self.post):
      out = stage.apply(traj, out, hp['post'][i])
    m = traj.mask
    return Targets(jnp.where(m, out.advantages, 0.0), jnp.where(m, out.returns, 0.0))


def _check_trajectory(traj: Trajectory) -> Trajectory:
  rewards = _checks.as_float('rewards', traj.rewards)
  if rewards.ndim != 2:
    raise ValueError(f'`rewards` must be [B, T]; got shape {rewards.shape}.')
  mask = _checks.check_mask(traj.mask, 'rewards', rewards)
  b, t = rewards.shape
  for name in types.TOKEN_FIELDS[2:]:
    x = getattr(traj, name)
    if x is not None and tuple(np.shape(x)) != (b, t):
      raise ValueError(f'`{name}` must be [B, T] = {(b, t)}; got {tuple(np.shape(x))}.')
  for name in types.ROW_FIELDS:
    x = getattr(traj, name)
    if x is not None and tuple(np.shape(x)) != (b,):
      raise ValueError(f'`{name}` must be [B] = {(b,)}; got {tuple(np.shape(x))}.')
  s = traj.num_steps
  for name in types.STEP_FIELDS:
    x = getattr(traj, name)
    if x is not None and tuple(np.shape(x)) != (b, s):
      raise ValueError(f'`{name}` must be [B, S] = {(b, s)}; got {tuple(np.shape(x))}.')
  if traj.step_ids is not None and not jnp.issubdtype(
    jnp.asarray(traj.step_ids).dtype, jnp.integer
  ):
    raise TypeError('`step_ids` must be an integer array.')
  return traj.replace(rewards=rewards, mask=mask)


# ----------------------------------------------------------------------------- source stages


def _discounts(traj, gamma):
  if traj.discounts is not None:
    return _checks.as_float('discounts', traj.discounts)
  return jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), traj.rewards.shape)


def _gae(gamma=1.0, lambda_=1.0) -> Stage:
  def apply(traj, prev, hp):
    del prev
    values = _checks.as_float('values', traj.values)
    boot = traj.bootstrap_value
    if boot is None:
      boot = jnp.zeros(traj.rewards.shape[:-1], jnp.float32)
    adv, ret = credit.gae(
      traj.rewards, values, _discounts(traj, hp['gamma']), boot, hp['lambda_'], mask=traj.mask
    )
    return Targets(adv, ret)

  return Stage('gae', ('values',), dict(gamma=gamma, lambda_=lambda_), apply)


def _reinforce(gamma=1.0) -> Stage:
  def apply(traj, prev, hp):
    del prev
    ret = credit.discounted_returns(
      traj.rewards, _discounts(traj, hp['gamma']), 0.0, mask=traj.mask
    )
    return Targets(ret, ret)

  return Stage('reinforce', (), dict(gamma=gamma), apply)


def row_group_relative(scores, valid, traj: Trajectory, mode: str, eps) -> jax.Array:
  """`credit.group_relative` of per-row `scores` [B] over `traj`'s groups.

  Uses the [P, G] reshape when `traj.groups_contiguous`, else segment sums over
  `traj.group_ids`.
  """
  if traj.groups_contiguous:
    b, k = scores.shape[0], traj.num_groups
    if b % k:
      raise ValueError(f'groups_contiguous needs B={b} divisible by num_groups={k}.')
    g = b // k
    adv = credit.group_relative(scores.reshape(k, g), mode, eps=eps, valid=valid.reshape(k, g))
    return adv.reshape(b)
  return credit.group_relative(
    scores, mode, group_ids=traj.group_ids, num_groups=traj.num_groups, eps=eps, valid=valid
  )


def _group(mode):
  def build(eps=1e-6) -> Stage:
    def apply(traj, prev, hp):
      del prev
      scores = ops.masked_sum(traj.rewards, traj.mask, axis=-1)
      valid = jnp.any(traj.mask, axis=-1)
      a = row_group_relative(scores, valid, traj, mode, hp['eps'])
      adv = jnp.where(traj.mask, a[:, None], 0.0)
      return Targets(adv, adv)

    return Stage(mode, ('group_ids',), dict(eps=eps), apply)

  return build


MIN_FORM_TRANSFORMS = ('softmin', 'sum')
MIN_FORM_BASELINES = ('token', 'step', 'outcome', 'none')


def _min_form(
  temperature=0.1,
  gamma=1.0,
  transform: str = 'softmin',
  baseline: str = 'token',
  mask_separators: bool = True,
) -> Stage:
  _checks.choice('transform', transform, MIN_FORM_TRANSFORMS)
  _checks.choice('baseline', baseline, MIN_FORM_BASELINES)
  requires = ('step_ids', 'step_rewards') + (('group_ids',) if baseline != 'none' else ())

  def apply(traj, prev, hp):
    del prev
    mask = traj.mask
    s = traj.num_steps
    step_ids = jnp.where(mask, traj.step_ids, -1)
    count = ops.to_steps(jnp.ones_like(traj.rewards), step_ids, s, 'count')
    valid = count > 0
    pr = jnp.where(valid, _checks.as_float('step_rewards', traj.step_rewards), 0.0)
    if transform == 'softmin':
      shaped = credit.min_form_rewards(pr, hp['temperature'], mask=valid)
    else:
      shaped = pr
    closers = ops.step_closers(step_ids, s)
    discounts = _discounts(traj, hp['gamma'])

    def token_returns(step_r):
      r = jnp.where(closers, ops.to_tokens(step_r, step_ids), 0.0)
      return credit.discounted_returns(r, discounts, 0.0, mask=mask)

    ret = token_returns(shaped)
    row_valid = jnp.any(mask, axis=-1)
    if baseline in ('token', 'step'):
      ids = traj.group_ids
      if traj.groups_contiguous:
        ids = jnp.arange(mask.shape[0], dtype=jnp.int32) // (mask.shape[0] // traj.num_groups)
      based = credit.pure_baseline(
        shaped,
        valid,
        count - 1.0,
        ops.masked_count(mask, axis=-1),
        ids,
        traj.num_groups,
        baseline,
        row_valid=row_valid,
      )
      adv = token_returns(based)
    elif baseline == 'outcome':
      outcome = jnp.sum(shaped, axis=-1)
      rloo = row_group_relative(outcome, row_valid, traj, 'rloo', 0.0)
      adv = ret - jnp.where(row_valid, outcome - rloo, 0.0)[:, None]  # s - rloo(s) = mean of others
    else:
      adv = ret
    if mask_separators:
      adv = jnp.where(closers, 0.0, adv)
    return Targets(adv, ret)

  return Stage('min_form', requires, dict(temperature=temperature, gamma=gamma), apply)


# ----------------------------------------------------------------------------- GiGPO / turn-level


def _steps_of(traj):
  """[B, S] bool: the steps that have at least one valid token."""
  step_ids = jnp.where(traj.mask, traj.step_ids, -1)
  count = ops.to_steps(jnp.ones_like(traj.rewards), step_ids, traj.num_steps, 'count')
  return count > 0, step_ids


def _gigpo_episode(eps=1e-6, std_norm=1.0, per_trajectory=0.0) -> Stage:
  """GiGPO's episode level (arXiv 2505.10978 Eq. 3), `credit.gigpo.episode_advantages`."""

  def apply(traj, prev, hp):
    del prev
    steps, _ = _steps_of(traj)
    ret = ops.masked_sum(traj.rewards, traj.mask, axis=-1)
    a = credit.gigpo.episode_advantages(
      ret, traj.group_ids, traj.num_groups, steps, hp['std_norm'], hp['per_trajectory'], hp['eps']
    )
    adv = jnp.where(traj.mask, a[:, None], 0.0)
    return Targets(adv, adv)

  hp = dict(eps=eps, std_norm=std_norm, per_trajectory=per_trajectory)
  return Stage('gigpo_episode', ('group_ids', 'step_ids', 'step_rewards'), hp, apply)


def _step_groups(name, state_default, turn_default):
  def build(
    gamma=0.95,
    eps=1e-6,
    std_norm=1.0,
    key_state=state_default,
    key_turn=turn_default,
    key_history=0.0,
    history: bool = False,
  ) -> Stage:
    requires = ('group_ids', 'step_ids', 'step_rewards', 'anchor_ids')
    requires += ('history_ids',) if history else ()

    def apply(traj, prev, hp):
      del prev
      steps, step_ids = _steps_of(traj)
      keys = credit.gigpo.anchor_keys(
        traj.group_ids,
        traj.anchor_ids,
        traj.get('history_ids') if history else None,
        use_state=hp['key_state'],
        use_turn=hp['key_turn'],
        use_history=hp['key_history'],
      )
      a = credit.gigpo.step_advantages(
        traj.step_rewards, steps, keys, hp['gamma'], hp['std_norm'], hp['eps']
      )
      adv = jnp.where(traj.mask, ops.to_tokens(a, step_ids), 0.0)
      return Targets(adv, adv)

    hp = dict(gamma=gamma, eps=eps, std_norm=std_norm, key_state=key_state, key_turn=key_turn)
    hp['key_history'] = key_history
    return Stage(name, requires, hp, apply)

  return build


# ----------------------------------------------------------------------------- PURE (full pipeline)

PURE_TRANSFORMS = ('sum', 'softmin', 'strict_min')  # transform_id 0, 1, 2
PURE_BASELINES = ('none', 'token', 'step', 'seq')  # baseline_id 0, 1, 2, 3


def _select(index, options):
  """options[round(index)] for a traced scalar index (every option is computed)."""
  i = jnp.round(jnp.asarray(index, jnp.float32))
  out = options[-1]
  for j in range(len(options) - 2, -1, -1):
    out = jnp.where(i == j, options[j], out)
  return out


def _pure(
  temperature=0.1,
  transform: str = 'softmin',
  baseline: str = 'token',
  prm_coef=1.0,
  vr_coef=0.0,
  vr_all=0.0,
  kl_coef=1e-3,
  mask_separators: bool = True,
  verifiable: bool = True,
  kl_in_reward: bool = True,
) -> Stage:
  _checks.choice('transform', transform, PURE_TRANSFORMS)
  _checks.choice('baseline', baseline, PURE_BASELINES)
  requires = ('step_ids', 'step_rewards', 'group_ids')
  requires += ('vr_reference',) if verifiable else ()
  requires += ('log_probs', 'ref_log_probs') if kl_in_reward else ()

  def apply(traj, prev, hp):
    del prev
    mask = traj.mask
    s = traj.num_steps
    step_ids = jnp.where(mask, traj.step_ids, -1)
    count = ops.to_steps(jnp.ones_like(traj.rewards), step_ids, s, 'count')
    valid = count > 0
    row_valid = jnp.any(mask, axis=-1)
    pr = hp['prm_coef'] * jnp.where(valid, _checks.as_float('step_rewards', traj.step_rewards), 0.0)
    strict = credit.min_form_returns(pr, mask=valid)  # steps 0..K-1 occur (contiguous)
    strict = jnp.where(valid, strict - jnp.pad(strict[:, 1:], ((0, 0), (0, 1))), 0.0)
    soft = credit.min_form_rewards(pr, hp['temperature'], mask=valid)
    shaped = _select(hp['transform_id'], [pr, soft, strict])
    ids = traj.group_ids
    if traj.groups_contiguous:
      ids = jnp.arange(mask.shape[0], dtype=jnp.int32) // (mask.shape[0] // traj.num_groups)
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
      last_step, row_group_relative(outcome, row_valid, traj, 'rloo', 0.0)[:, None], 0
    )
    based = _select(hp['baseline_id'], [shaped, by_mode['token'], by_mode['step'], seq])
    closers = ops.step_closers(step_ids, s)
    r = jnp.where(closers, ops.to_tokens(based, step_ids), 0.0)
    if verifiable:
      solved = ops.masked_sum(traj.rewards, mask, axis=-1)
      has_ref = (jnp.asarray(traj.get('vr_reference')) > 0) | (hp['vr_all'] > 0.5)
      v = jnp.where(has_ref, solved - 1.0, 0.0)
      v_hat = row_group_relative(v, row_valid, traj, 'rloo', 0.0)
      last_tok = ops.step_closers(jnp.where(mask, 0, -1), 1)
      r = r + hp['vr_coef'] * jnp.where(last_tok, v_hat[:, None], 0.0)
    if kl_in_reward:
      r = kl.penalize_rewards(
        r, traj.log_probs, traj.get('ref_log_probs'), mask, hp['kl_coef'], estimator='k1'
      )
    ones = jnp.ones_like(r)
    adv = credit.discounted_returns(r, ones, 0.0, mask=mask)
    ret = credit.discounted_returns(
      jnp.where(closers, ops.to_tokens(shaped, step_ids), 0.0), ones, 0.0, mask=mask
    )
    if mask_separators:
      adv = jnp.where(closers, 0.0, adv)
    return Targets(adv, ret)

  hparams = dict(
    temperature=temperature,
    transform_id=float(PURE_TRANSFORMS.index(transform)),
    baseline_id=float(PURE_BASELINES.index(baseline)),
    prm_coef=prm_coef,
    vr_coef=vr_coef,
    vr_all=vr_all,
    kl_coef=kl_coef,
  )
  return Stage('pure', requires, hparams, apply)


# ----------------------------------------------------------------------------- transforms


def _whiten(eps=1e-8, unbiased: bool = True, shift_mean: bool = True, skip_zeros: bool = False):
  def apply(traj, prev, hp):
    m = traj.mask
    if skip_zeros:
      m = m & (prev.advantages != 0.0)
    adv = ops.masked_whiten(
      prev.advantages, m, shift_mean=shift_mean, unbiased=unbiased, eps=hp['eps']
    )
    return Targets(adv, prev.returns)

  return Stage('whiten', (), dict(eps=eps), apply, transform=True)


SOURCES: dict[str, Callable[..., Stage]] = {
  'gae': _gae,
  'reinforce': _reinforce,
  'grpo': _group('grpo'),
  'dr_grpo': _group('dr_grpo'),
  'rloo': _group('rloo'),
  'min_form': _min_form,
  # GiGPO (arXiv 2505.10978): 'gigpo_episode + omega*gigpo_step'; MT-GRPO turn-index groups.
  'gigpo_episode': _gigpo_episode,
  'gigpo_step': _step_groups('gigpo_step', 1.0, 0.0),
  'turn_step': _step_groups('turn_step', 0.0, 1.0),
  'pure': _pure,
}
TRANSFORMS: dict[str, Callable[..., Stage]] = {'whiten': _whiten}
ESTIMATORS = ('gae', 'grpo', 'dr_grpo', 'rloo', 'min_form', 'reinforce', 'pure')


def _accepts(builder) -> set:
  return set(inspect.signature(builder).parameters)


def _parse(spec: str):
  """'a + 0.5*b | whiten' -> ([(1.0, 'a'), (0.5, 'b')], ['whiten'])."""
  parts = [p.strip() for p in spec.split('|')]
  terms = []
  for term in parts[0].split('+'):
    term = term.strip()
    m = re.fullmatch(r'(?:([0-9.eE+-]+)\s*\*\s*)?([A-Za-z_][A-Za-z0-9_]*)', term)
    if not m:
      raise ValueError(f'Cannot parse estimator term {term!r} in {spec!r} (want [w*]name).')
    terms.append((float(m.group(1)) if m.group(1) else 1.0, m.group(2)))
  return terms, parts[1:]


def _build(builder, kwargs) -> Stage:
  keys = _accepts(builder)
  stage = builder(**{k: v for k, v in kwargs.items() if k in keys})
  hp = {k: np.float32(v) for k, v in stage.hparams.items()}
  return stage._replace(hparams=hp)


def make(spec: str, *, whiten: bool = False, stages: Optional[dict] = None, **kwargs) -> Estimator:
  """Builds an estimator from a name or a spec string (see the module docstring).

  Args:
    spec: e.g. 'grpo', 'gae | whiten', 'grpo + 0.5*rloo'.
    whiten: append a `whiten` stage (shorthand for `spec + ' | whiten'`).
    stages: extra source stages for this call, {name: builder(**options) -> Stage}
      (a builder whose Stage has `transform=True` is a transform stage).
    **kwargs: stage options, given to every stage that takes them: `gamma`,
      `lambda_` (gae), `eps` (group stages; whiten's `eps` is set by
      `whiten_eps`), `temperature`, `transform`, `baseline`,
      `mask_separators` (min_form), `unbiased`, `shift_mean`, `skip_zeros`
      (whiten), and those of registered stages.

  Raises:
    ValueError: unknown stage names or options (the message lists the choices).
  """
  if whiten:
    spec = f'{spec} | whiten'
  terms, post = _parse(spec)
  sources, transforms = dict(SOURCES), dict(TRANSFORMS)
  for name, builder in (stages or {}).items():
    if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', name) or name in sources or name in transforms:
      raise ValueError(f'Extra stage names must be new identifiers; got {name!r}.')
    is_transform = name in post
    (transforms if is_transform else sources)[name] = builder
  known_opts = set()
  for builder in list(sources.values()) + list(transforms.values()):
    known_opts |= _accepts(builder)
  known_opts.add('whiten_eps')
  unknown = sorted(set(kwargs) - known_opts)
  if unknown:
    raise ValueError(f'Unknown estimator option(s) {unknown}; known: {sorted(known_opts)}.')
  for _, name in terms:
    _checks.choice('estimator', name, tuple(sources))
  for name in post:
    _checks.choice('estimator transform', name, tuple(transforms))
  src = tuple(_build(sources[name], kwargs) for _, name in terms)
  tr_kwargs = {k: v for k, v in kwargs.items() if k != 'eps'}
  if 'whiten_eps' in kwargs:
    tr_kwargs['eps'] = kwargs['whiten_eps']
  tr = tuple(_build(transforms[name], tr_kwargs) for name in post)
  hparams = dict(
    weights=np.asarray([w for w, _ in terms], np.float32),
    terms=tuple(s.hparams for s in src),
    post=tuple(s.hparams for s in tr),
  )
  return Estimator(spec, src, tr, hparams)


def from_config(cfg: Any, stages: Optional[dict] = None) -> Estimator:
  """Builds an estimator from a ConfigDict / mapping: `estimator` (the spec) plus options.

  Every other key is an option of `make` (e.g. gamma, lambda_, eps, temperature,
  whiten, baseline); None values are skipped. `stages` as in `make`.
  """
  items = cfg.items() if hasattr(cfg, 'items') else vars(cfg).items()
  kwargs = {k: v for k, v in items if k != 'estimator' and v is not None}
  spec = cfg['estimator'] if hasattr(cfg, '__getitem__') else cfg.estimator
  return make(spec, stages=stages, **kwargs)


# ----------------------------------------------------------------------------- legacy call form


def steps_from_reward_mask(rewards, mask, reward_mask):
  """Step layout from bool step-closing positions: (step_ids [B, T], step_rewards [B, T]).

  Token t belongs to step j = the number of closers strictly before it; tokens
  after the last closer (and masked tokens) belong to no step (-1). Step j's
  reward is the reward at its closer. S = T.
  """
  closer = jnp.asarray(reward_mask) & mask
  before = jnp.cumsum(closer, axis=-1, dtype=jnp.int32) - closer
  total = jnp.sum(closer, axis=-1, keepdims=True, dtype=jnp.int32)
  step_ids = jnp.where(mask & (before < total), before, -1)
  t = rewards.shape[-1]
  step_rewards = ops.to_steps(jnp.where(closer, rewards, 0.0), step_ids, t, 'sum')
  return step_ids, step_rewards


def legacy_trajectory(
  rewards,
  mask,
  *,
  values=None,
  group_size: Optional[int] = None,
  group_ids=None,
  num_groups: Optional[int] = None,
  bootstrap_value=None,
  reward_mask=None,
) -> Trajectory:
  """The `Trajectory` of the call form before it existed (`est(rewards, mask, ...)`).

  `group_size` G means contiguous groups (rows p*G .. p*G+G-1); `reward_mask`
  [B, T] bool marks step-closing tokens (default: the last valid token of each
  row), see `steps_from_reward_mask`.
  """
  rewards = _checks.as_float('rewards', rewards)
  if rewards.ndim != 2:
    raise ValueError(f'`rewards` must be [B, T]; got shape {rewards.shape}.')
  mask = _checks.check_mask(mask, 'rewards', rewards)
  b = rewards.shape[0]
  contiguous = False
  if group_size is not None:
    if group_ids is not None:
      raise ValueError('Pass either `group_size` or `group_ids`, not both.')
    if not isinstance(group_size, (int, np.integer)) or group_size < 1 or b % group_size:
      raise ValueError(
        f'`group_size` must be a positive int dividing the batch size {b}; got {group_size!r}.'
      )
    num_groups = b // int(group_size)
    group_ids = jnp.arange(b, dtype=jnp.int32) // int(group_size)
    contiguous = True
  if reward_mask is None:
    reward_mask = ops.step_closers(jnp.where(mask, 0, -1), 1)  # the last valid token
  else:
    reward_mask = jnp.asarray(reward_mask)
    if reward_mask.dtype != jnp.bool_:
      raise TypeError(f'`reward_mask` must be a bool array; got dtype {reward_mask.dtype}.')
    _checks.same_shape('rewards', rewards, reward_mask=reward_mask)
  step_ids, step_rewards = steps_from_reward_mask(rewards, mask, reward_mask)
  return Trajectory(
    rewards=rewards,
    mask=mask,
    values=values,
    bootstrap_value=bootstrap_value,
    group_ids=group_ids,
    num_groups=num_groups,
    groups_contiguous=contiguous,
    step_ids=step_ids,
    step_rewards=step_rewards,
  )
