"""The basic stages: GAE and VAPO's decoupled GAE, REINFORCE, the group-relative family (GRPO,
Dr. GRPO, RLOO), whiten."""

import jax.numpy as jnp

from jaxca import credit
from jaxca import ops
from jaxca.credit import _checks
from jaxca.estimators import core


@core.stage()
def gae(gamma=1.0, lambda_=1.0) -> core.Stage:
  """Generalised advantage estimation (Schulman et al., arXiv 1506.02438, Eq. 16).

  Requires `values`. `credit.gae` with `traj.discounts` (default: `gamma` everywhere) and
  `traj.bootstrap_value` (default 0: no bootstrap after the last valid token, as in verl);
  masked tokens are transparent. Returns are `A + V` (the lambda-returns). Traced: `gamma`,
  `lambda_`.
  """

  def apply(traj, prev, hp):
    del prev
    values = _checks.as_float('values', traj.values)
    boot = traj.bootstrap_value
    if boot is None:
      boot = jnp.zeros(traj.rewards.shape[:-1], jnp.float32)
    adv, ret = credit.gae(
      traj.rewards, values, core.discounts(traj, hp['gamma']), boot, hp['lambda_'], mask=traj.mask
    )
    return core.Targets(adv, ret)

  return core.Stage('gae', ('values',), dict(gamma=gamma, lambda_=lambda_), apply)


@core.stage()
def vapo_gae(gamma=1.0, lambda_value=1.0, lambda_policy=0.95, alpha=0.05) -> core.Stage:
  """VAPO's decoupled, length-adaptive GAE (Yue et al., arXiv 2504.05118, Sec. 3.2, Eq. 7).

  Requires `values`. Two `credit.gae` passes over the same rewards and values: the value
  targets are the lambda-returns with `lambda_value` (VAPO: 1.0, unbiased Monte-Carlo
  returns for the critic), the advantages use a policy lambda that adapts to the response
  length l (the row's number of valid tokens),

    lambda_policy(l) = clip(1 - 1 / max(alpha * l, 1), 0, 1)          (alpha > 0, VAPO: 0.05)

  and the fixed `lambda_policy` when `alpha` is 0 (decoupled GAE only). Discounts and the
  bootstrap as in `gae`. NeMo-RL's `GeneralizedAdvantageEstimator` (`gae_lambda_value`,
  `gae_lambda_policy`, `length_adaptive_alpha`) computes the same. Traced: all four.
  """

  def apply(traj, prev, hp):
    del prev
    values = _checks.as_float('values', traj.values)
    boot = traj.bootstrap_value
    if boot is None:
      boot = jnp.zeros(traj.rewards.shape[:-1], jnp.float32)
    d = core.discounts(traj, hp['gamma'])
    length = jnp.sum(traj.mask, axis=-1, dtype=jnp.float32)
    adaptive = jnp.clip(1.0 - 1.0 / jnp.maximum(hp['alpha'] * length, 1.0), 0.0, 1.0)
    lam = jnp.where(hp['alpha'] > 0, adaptive, hp['lambda_policy'])
    lam = jnp.broadcast_to(lam[:, None], traj.rewards.shape)
    adv, _ = credit.gae(traj.rewards, values, d, boot, lam, mask=traj.mask)
    _, ret = credit.gae(traj.rewards, values, d, boot, hp['lambda_value'], mask=traj.mask)
    return core.Targets(adv, ret)

  hp = dict(gamma=gamma, lambda_value=lambda_value, lambda_policy=lambda_policy, alpha=alpha)
  return core.Stage('vapo_gae', ('values',), hp, apply)


@core.stage()
def reinforce(gamma=1.0) -> core.Stage:
  """REINFORCE (Williams, 1992): discounted returns G_t over valid tokens, used as advantages
  and returns (REINFORCE++ with `| whiten`, arXiv 2501.03262). Traced: `gamma`."""

  def apply(traj, prev, hp):
    del prev
    ret = credit.discounted_returns(
      traj.rewards, core.discounts(traj, hp['gamma']), 0.0, mask=traj.mask
    )
    return core.Targets(ret, ret)

  return core.Stage('reinforce', (), dict(gamma=gamma), apply)


def _group(mode, doc):
  @core.stage()
  def build(eps=1e-6) -> core.Stage:
    def apply(traj, prev, hp):
      del prev
      scores = ops.masked_sum(traj.rewards, traj.mask, axis=-1)
      valid = jnp.any(traj.mask, axis=-1)
      a = core.row_group_relative(scores, valid, traj, mode, hp['eps'])
      adv = jnp.where(traj.mask, a[:, None], 0.0)
      return core.Targets(adv, adv)

    return core.Stage(mode, ('group_ids',), dict(eps=eps), apply)

  build.__name__ = build.__qualname__ = mode
  build.__doc__ = doc
  return build


_GROUP_DOC = """{title}

Requires `group_ids`. The score of a row is the sum of its rewards over valid tokens;
`credit.group_relative(mode='{mode}')` over the groups ({formula}); rows without a valid token
are left out of the group statistics. The row advantage is broadcast to its valid tokens and
is also the `returns`. Traced: `eps`.
"""
grpo = _group(
  'grpo',
  _GROUP_DOC.format(
    title='GRPO (Shao et al., arXiv 2402.03300, Sec. 4.1.2).',
    mode='grpo',
    formula='(r - mean) / (std + eps)',
  ),
)
dr_grpo = _group(
  'dr_grpo',
  _GROUP_DOC.format(
    title='Dr. GRPO (Liu et al., arXiv 2503.20783, Eq. 3).', mode='dr_grpo', formula='r - mean'
  ),
)
rloo = _group(
  'rloo',
  _GROUP_DOC.format(
    title='RLOO (Ahmadian et al., arXiv 2402.14740, Eq. 5).',
    mode='rloo',
    formula='r minus the mean of the other rows',
  ),
)


@core.stage(transform=True)
def whiten(eps=1e-8, unbiased: bool = True, shift_mean: bool = True, skip_zeros: bool = False):
  """Transform: `ops.masked_whiten` of the advantages over the valid tokens of the batch.

  verl/tunix defaults: unbiased variance, `eps` 1e-8 (traced; set through `whiten_eps` in
  `make`, since `eps` goes to source stages). `skip_zeros=True` leaves tokens whose advantage
  is exactly 0 out of the statistics and at 0 (PURE's `normalize`, which treats them as
  separators).
  """

  def apply(traj, prev, hp):
    m = traj.mask
    if skip_zeros:
      m = m & (prev.advantages != 0.0)
    adv = ops.masked_whiten(
      prev.advantages, m, shift_mean=shift_mean, unbiased=unbiased, eps=hp['eps']
    )
    return core.Targets(adv, prev.returns)

  return core.Stage('whiten', (), dict(eps=eps), apply, transform=True)


STAGES = {
  'gae': gae,
  'vapo_gae': vapo_gae,
  'reinforce': reinforce,
  'grpo': grpo,
  'dr_grpo': dr_grpo,
  'rloo': rloo,
  'whiten': whiten,
}
