"""The basic stages: GAE, REINFORCE, the group-relative family (GRPO, Dr. GRPO, RLOO), whiten."""

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
  'reinforce': reinforce,
  'grpo': grpo,
  'dr_grpo': dr_grpo,
  'rloo': rloo,
  'whiten': whiten,
}
