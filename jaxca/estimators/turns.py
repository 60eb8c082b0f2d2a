"""Turn-level stages for multi-turn / tool-using agents (`credit.turns`).

  * `matchtir`: MatchTIR's dual-level advantage (arXiv 2601.10712): the GRPO advantage of
    the row's score (the sum of its token rewards) and the group-normalised turn-level
    discounted return of `turn_rewards` (e.g. matched tool-call rewards), averaged.
  * `mars`: MARS's turn-level advantage with agent-specific normalisation (arXiv 2510.15414).
  * `turn_gae`: GAE over turns, the critic's value at each turn's first valid token.

Each broadcasts its per-turn advantage to the turn's tokens (`turn_ids`); tokens in no turn
(tool results, padding) get 0, so they are transparent to credit and out of the loss.
"""

import jax.numpy as jnp

from jaxca import credit
from jaxca import ops
from jaxca.credit import _checks
from jaxca.estimators import core


def _to_tokens(traj, turn_ids, per_turn):
  return jnp.where(traj.mask, ops.to_tokens(per_turn, turn_ids), 0.0)


@core.stage()
def matchtir(gamma=0.9, eps=1e-6) -> core.Stage:
  """MatchTIR's dual-level advantage, `credit.turns.dual_level_advantages`.

  Requires group_ids, turn_ids, turn_rewards. The trajectory score is the row's sum of
  `rewards` (the official code sums the token-level process rewards, whose last turn holds
  the answer score); turn u's group is (prompt, u). Traced: `gamma` (the official
  `lam = 0.9`), `eps`.
  """

  def apply(traj, prev, hp):
    del prev
    valid, turn_ids = core.turn_layout(traj)
    a = credit.turns.dual_level_advantages(
      core.outcome(traj),
      traj.turn_rewards,
      valid,
      traj.group_ids,
      traj.num_groups,
      hp['gamma'],
      hp['eps'],
    )
    adv = _to_tokens(traj, turn_ids, a)
    return core.Targets(adv, adv)

  requires = ('group_ids', 'turn_ids', 'turn_rewards')
  return core.Stage('matchtir', requires, dict(gamma=gamma, eps=eps), apply)


@core.stage()
def mars(gamma=1.0, reward_norm: str = 'mean', adv_norm: str = 'mean') -> core.Stage:
  """MARS's turn-level advantage with agent-specific normalisation, `credit.turns.mars_advantages`.

  Requires turn_ids, turn_rewards, agent_ids (ids in [0, B)). Static `reward_norm`,
  `adv_norm` ('none' | 'mean' | 'mean_std'; the official configs use 'mean' for both and
  then whiten the advantages: `'mars | whiten'`). Traced: `gamma`.
  """
  _checks.choice('reward_norm', reward_norm, credit.turns.NORMS)
  _checks.choice('adv_norm', adv_norm, credit.turns.NORMS)

  def apply(traj, prev, hp):
    del prev
    valid, turn_ids = core.turn_layout(traj)
    b = traj.rewards.shape[0]
    a = credit.turns.mars_advantages(
      traj.turn_rewards,
      valid,
      traj.agent_ids,
      b,
      hp['gamma'],
      reward_norm=reward_norm,
      adv_norm=adv_norm,
    )
    adv = _to_tokens(traj, turn_ids, a)
    return core.Targets(adv, adv)

  return core.Stage('mars', ('turn_ids', 'turn_rewards', 'agent_ids'), dict(gamma=gamma), apply)


@core.stage()
def turn_gae(gamma=1.0, lambda_=1.0) -> core.Stage:
  """GAE over turns, `credit.turns.turn_gae`: V of a turn = `values` at its first valid token.

  Requires values, turn_ids, turn_rewards (and reads `bootstrap_value` when present). The
  returns (value targets) are the turn's lambda-return at every token of the turn. Traced:
  `gamma`, `lambda_` (per turn, not per token).
  """

  def apply(traj, prev, hp):
    del prev
    valid, turn_ids = core.turn_layout(traj)
    t = traj.rewards.shape[-1]
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.float32), traj.rewards.shape)
    start = ops.to_steps(pos, turn_ids, traj.num_turns, 'min').astype(jnp.int32)
    v = jnp.take_along_axis(traj.values, start, axis=-1)
    boot = 0.0 if traj.bootstrap_value is None else traj.bootstrap_value
    a, ret = credit.turns.turn_gae(traj.turn_rewards, v, valid, hp['gamma'], hp['lambda_'], boot)
    return core.Targets(_to_tokens(traj, turn_ids, a), _to_tokens(traj, turn_ids, ret))

  hp = dict(gamma=gamma, lambda_=lambda_)
  return core.Stage('turn_gae', ('values', 'turn_ids', 'turn_rewards'), hp, apply)


STAGES = {'matchtir': matchtir, 'mars': mars, 'turn_gae': turn_gae}
