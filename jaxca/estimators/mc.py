"""Monte-Carlo value stages: VinePPO and SPO-chain (kernels in `jaxca.credit.mc`).

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

`mc_values` is a host field: `jaxca.lm.providers.HOST_PROVIDERS['mc_values']` fills it between
collect and update from completions sampled at each step boundary.
"""

import jax.numpy as jnp

from jaxca import ops
from jaxca.credit import mc
from jaxca.estimators import core


def _outcome(traj):
  return ops.masked_sum(traj.rewards, traj.mask, axis=-1)


@core.stage()
def vineppo() -> core.Stage:
  """The VinePPO source stage (see the module docstring)."""

  def apply(traj, prev, hp):
    del prev, hp
    r = _outcome(traj)
    adv = mc.vineppo_advantages(traj.step_ids, traj.mc_values, r, traj.mask)
    ret = jnp.where(traj.mask, r[:, None], 0.0)
    return core.Targets(adv, ret)

  return core.Stage('vineppo', ('step_ids', 'mc_values'), {}, apply)


@core.stage()
def spo_chain(prob_threshold=0.9, cut_interval=1.0) -> core.Stage:
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
    return core.Targets(adv, ret)

  hp = dict(prob_threshold=prob_threshold, cut_interval=cut_interval)
  return core.Stage('spo_chain', ('log_probs', 'mc_values'), hp, apply)


@core.stage(transform=True)
def prob_whiten(prob_threshold=0.9, eps=1e-8, unbiased: bool = True) -> core.Stage:
  """Whitening over the tokens with `pi_old < prob_threshold` (traced); 0 elsewhere."""

  def apply(traj, prev, hp):
    m = mc.prob_mask(traj.log_probs, traj.mask, hp['prob_threshold'])
    adv = ops.masked_whiten(prev.advantages, m, unbiased=unbiased, eps=hp['eps'])
    return core.Targets(adv, prev.returns)

  hp = dict(prob_threshold=prob_threshold, eps=eps)
  return core.Stage('prob_whiten', ('log_probs',), hp, apply, transform=True)


STAGES = {'vineppo': vineppo, 'spo_chain': spo_chain, 'prob_whiten': prob_whiten}
