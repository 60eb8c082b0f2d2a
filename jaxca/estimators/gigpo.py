"""GiGPO's stages (arXiv 2505.10978) and MT-GRPO's turn-index groups (arXiv 2505.11821).

GiGPO is `'gigpo_episode + omega*gigpo_step'`; with omega = 0 it is GRPO (with
`per_trajectory=1` exactly the `'grpo'` / `'dr_grpo'` stages).
"""

import jax.numpy as jnp

from jaxca import credit
from jaxca import ops
from jaxca.estimators import core


@core.stage()
def gigpo_episode(eps=1e-6, std_norm=1.0, per_trajectory=0.0) -> core.Stage:
  """GiGPO's episode level (arXiv 2505.10978 Eq. 3), `credit.gigpo.episode_advantages`.

  Requires group_ids, step_ids, step_rewards. Traced `std_norm` (0: mean_norm, 1:
  mean_std_norm) and `per_trajectory` (1: statistics over unique trajectories, the paper's
  form; 0: over all step rows, the verl-agent default), `eps`.
  """

  def apply(traj, prev, hp):
    del prev
    steps, _, _ = core.step_layout(traj)
    ret = ops.masked_sum(traj.rewards, traj.mask, axis=-1)
    a = credit.gigpo.episode_advantages(
      ret, traj.group_ids, traj.num_groups, steps, hp['std_norm'], hp['per_trajectory'], hp['eps']
    )
    adv = jnp.where(traj.mask, a[:, None], 0.0)
    return core.Targets(adv, adv)

  hp = dict(eps=eps, std_norm=std_norm, per_trajectory=per_trajectory)
  return core.Stage('gigpo_episode', ('group_ids', 'step_ids', 'step_rewards'), hp, apply)


def _step_groups(name, state_default, turn_default, doc):
  @core.stage()
  def build(
    gamma=0.95,
    eps=1e-6,
    std_norm=1.0,
    key_state=state_default,
    key_turn=turn_default,
    key_history=0.0,
    history: bool = False,
  ) -> core.Stage:
    requires = ('group_ids', 'step_ids', 'step_rewards', 'anchor_ids')
    requires += ('history_ids',) if history else ()

    def apply(traj, prev, hp):
      del prev
      steps, step_ids, _ = core.step_layout(traj)
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
      return core.Targets(adv, adv)

    hp = dict(gamma=gamma, eps=eps, std_norm=std_norm, key_state=key_state, key_turn=key_turn)
    hp['key_history'] = key_history
    return core.Stage(name, requires, hp, apply)

  build.__name__ = build.__qualname__ = name
  build.__doc__ = doc
  return build


_STEP_DOC = """{title}

Requires group_ids, step_ids, step_rewards, anchor_ids (and history_ids with `history=True`):
`credit.gigpo.step_advantages`, discounted step returns (`gamma`) normalised within
(task, anchor) groups; traced key flags `key_state`, `key_turn`, `key_history` choose the
anchor key (default here: {default}). Traced: `gamma`, `eps`, `std_norm` and the key flags.
"""
gigpo_step = _step_groups(
  'gigpo_step',
  1.0,
  0.0,
  _STEP_DOC.format(
    title="GiGPO's step level (arXiv 2505.10978 Eqs. 5-7).", default='the anchor state'
  ),
)
turn_step = _step_groups(
  'turn_step',
  0.0,
  1.0,
  _STEP_DOC.format(
    title='Turn-index groups (MT-GRPO, arXiv 2505.11821): the step stage grouping by turn.',
    default='the turn index',
  ),
)

STAGES = {'gigpo_episode': gigpo_episode, 'gigpo_step': gigpo_step, 'turn_step': turn_step}
