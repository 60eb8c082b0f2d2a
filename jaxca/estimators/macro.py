"""MA-RLHF macro-action PPO as an estimator stage (Chai et al., arXiv 2410.02743)."""

import jax.numpy as jnp

from jaxca.credit import _checks
from jaxca.credit import macro as macro_lib
from jaxca.estimators import core

TERMINATIONS = ('steps', 'ngram', 'perplexity')


@core.stage()
def macro_gae(
  gamma=1.0,
  lambda_=0.95,
  termination: str = 'ngram',
  ngram: int = 5,
  value_at: str = 'start',
  reward_agg: str = 'sum',
) -> core.Stage:
  """GAE over MA-RLHF macro actions (arXiv 2410.02743, Sec. 3), broadcast to their tokens.

  Requires `values`. The macros come from `termination` (Sec. 3.2; `jaxca.credit.macro`):
  'ngram' (a macro every `ngram` valid tokens; the paper's best fixed n is 5), 'steps'
  (`traj.step_ids`: the parsing-based rule, macros closed at step separators, as the
  learner's step provider builds them) or 'perplexity' (a macro starts where the next
  token's reference perplexity rises; requires `ref_log_probs`). Then
  `credit.macro.macro_gae`: value at each macro's start (`value_at='mean'`: the official
  code's mean), rewards summed per macro (`reward_agg='mean'`: the official code), GAE with
  gamma per macro, the macro's advantage and return broadcast to its tokens. Traced:
  `gamma`, `lambda_`.
  """
  _checks.choice('termination', termination, TERMINATIONS)
  _checks.choice('value_at', value_at, macro_lib.VALUE_AT)
  _checks.choice('reward_agg', reward_agg, macro_lib.REWARD_AGG)
  if isinstance(ngram, bool) or not isinstance(ngram, int) or ngram < 1:
    raise ValueError(f'macro_gae: `ngram` must be a positive int; got {ngram!r}.')
  extra = dict(steps=('step_ids',), ngram=(), perplexity=('ref_log_probs',))[termination]

  def apply(traj, prev, hp):
    del prev
    if termination == 'ngram':
      sid = macro_lib.ngram_step_ids(traj.mask, ngram)
    elif termination == 'steps':
      sid = jnp.where(traj.mask, jnp.asarray(traj.step_ids), -1)
    else:
      sid = macro_lib.perplexity_step_ids(traj.get('ref_log_probs'), traj.mask)
    adv, ret = macro_lib.macro_gae(
      traj.rewards,
      _checks.as_float('values', traj.values),
      sid,
      hp['gamma'],
      hp['lambda_'],
      traj.mask,
      value_at=value_at,
      reward_agg=reward_agg,
    )
    return core.Targets(adv, ret)

  return core.Stage('macro_gae', ('values',) + extra, dict(gamma=gamma, lambda_=lambda_), apply)


STAGES = {'macro_gae': macro_gae}
