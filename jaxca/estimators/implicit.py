"""Implicit token rewards of a DPO-trained policy ("From r to Q*", Rafailov et al., arXiv
2404.12358).

In the token-level MDP of a language model, a policy pi trained by DPO against pi_ref is the
optimal policy of some reward, and (Sec. 4, Eq. 7-9)

  beta log pi(a_t | s_t) / pi_ref(a_t | s_t) = Q*(s_t, a_t) - V*(s_t),

the optimal advantage of each token. Summed over a response this is DPO's sequence-level
implicit reward, `beta (log pi(y | x) - log pi_ref(y | x))` (Eq. 5 of Rafailov et al., arXiv
2305.18290). The stage gives that dense token credit as an advantage.
"""

import jax.numpy as jnp

from jaxca import credit
from jaxca.credit import _checks
from jaxca.estimators import core


@core.stage()
def implicit_reward(
  beta=0.1, policy_field: str = 'log_probs', ref_field: str = 'ref_log_probs'
) -> core.Stage:
  """Dense implicit token credit of a DPO-trained policy (arXiv 2404.12358, Eq. 9).

    A_t = beta (log pi(a_t | s_t) - log pi_ref(a_t | s_t))     on valid tokens,
    G_t = sum_{k >= t, valid} A_k                               (returns: reward-to-go),

  so `sum_t A_t` over a response (and `G` at its first valid token) is DPO's sequence reward
  beta log pi(y|x) / pi_ref(y|x). `policy_field` names the DPO-trained policy's log-probs of
  the sampled tokens (default `log_probs`, the sampling policy itself; a separate DPO model's
  go in `extras`), `ref_field` the reference's (default `ref_log_probs`, which the learner
  provides). Combine with an outcome estimator, e.g. 'grpo + 0.5*implicit_reward'. Traced:
  `beta`.
  """

  def apply(traj, prev, hp):
    del prev
    lp = _checks.as_float(policy_field, traj.get(policy_field))
    ref = _checks.as_float(ref_field, traj.get(ref_field))
    if lp.shape != traj.rewards.shape or ref.shape != traj.rewards.shape:
      raise ValueError(
        f'implicit_reward: `{policy_field}` and `{ref_field}` must be [B, T] = '
        f'{traj.rewards.shape}; got {lp.shape} and {ref.shape}.'
      )
    adv = jnp.where(traj.mask, hp['beta'] * (lp - ref), 0.0)
    ret = credit.discounted_returns(adv, jnp.ones_like(adv), 0.0, mask=traj.mask)
    return core.Targets(adv, ret)

  return core.Stage('implicit_reward', (policy_field, ref_field), dict(beta=beta), apply)


STAGES = {'implicit_reward': implicit_reward}
