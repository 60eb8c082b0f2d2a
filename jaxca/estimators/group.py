"""Group stages beyond GRPO / Dr. GRPO / RLOO: GDPO, MaxRL and the named GRPO variants.

Every stage here scores a row by the sum of its rewards over valid tokens (GDPO: one score
per reward component), compares the rows of each group (`traj.group_ids`), broadcasts the row
advantage to the row's valid tokens and returns it as both `advantages` and `returns`. Rows
without a valid token are left out of every group statistic and get 0.

  * `gdpo`: group reward-decoupled normalisation (arXiv 2601.05242);
  * `maxrl`: `(r - mean) / mean` within a group, binary rewards (MaxRL);
  * `grpo_verl`, `grpo_trl`, `grpo_nemo`: GRPO exactly as verl, TRL and NeMo-RL define it by
    default, so that a comparison names the variant it used (README, conventions section);
  * `shuffled_reward`: the noise floor of a reproduction, GRPO on another prompt's outcomes.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import ops
from jaxca.credit import _checks
from jaxca.estimators import core


def _scores(traj):
  """(scores [B]: sum of rewards over valid tokens, valid [B]: rows with a valid token)."""
  return ops.masked_sum(traj.rewards, traj.mask, axis=-1), jnp.any(traj.mask, axis=-1)


def _segment(x, traj):
  """Per-row sum of `x` [B] over the row's group."""
  ids = jnp.asarray(traj.group_ids)
  return jax.ops.segment_sum(x, ids, num_segments=int(traj.num_groups))[ids]


def _broadcast(a, traj):
  adv = jnp.where(traj.mask, a[:, None], 0.0)
  return core.Targets(adv, adv)


@core.stage()
def gdpo(eps=1e-6, component_weights: Optional[tuple] = None) -> core.Stage:
  """GDPO: normalise each reward component within its group, then combine (arXiv 2601.05242).

  Requires `group_ids` and `reward_components` [B, C] (one outcome score per component and
  row). With `credit.group_relative(mode='grpo')` of component c over the groups,

    A_i = sum_c w_c (r_ic - mean_g(r_c)) / (std_g(r_c) + eps),

  unbiased std, `w_c` = `component_weights` (static tuple of C floats; None: all 1). A group
  with fewer than 2 valid rows, or a component equal across its group, contributes 0. verl
  (`adv_estimator='gdpo'`, `compute_gdpo_outcome_advantage`) then whitens the sum over the
  batch's valid tokens: that is `'gdpo | whiten'` here. TRL (`multi_objective_aggregation=
  'normalize_then_sum'`) and NeMo-RL (`GDPOAdvantageEstimator`) normalise the sum over rows
  instead (README, conventions). Traced: `eps`.
  """

  def apply(traj, prev, hp):
    del prev
    comps = _checks.as_float('reward_components', traj.get('reward_components'))
    b, c = comps.shape
    w = np.ones(c, np.float32) if component_weights is None else np.asarray(component_weights)
    if w.shape != (c,):
      raise ValueError(
        f'gdpo: `component_weights` needs one weight per reward component (C={c}); '
        f'got {tuple(component_weights)}.'
      )
    valid = jnp.any(traj.mask, axis=-1)
    a = jnp.zeros((b,), jnp.float32)
    for k in range(c):
      a = a + float(w[k]) * core.row_group_relative(comps[:, k], valid, traj, 'grpo', hp['eps'])
    return _broadcast(a, traj)

  return core.Stage('gdpo', ('group_ids', 'reward_components'), dict(eps=eps), apply)


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


@core.stage()
def maxrl(eps=1e-6) -> core.Stage:
  """MaxRL: the group advantage normalised by the group's mean reward (the pass rate).

    A_i = (r_i - mean_g) / (mean_g + eps)   if the group has >= 2 valid rows and mean_g > 0,
    A_i = 0                                 otherwise (singleton and all-zero groups).

  With binary rewards, mean_g is the empirical pass rate p, and the gradient is an unbiased
  estimate of grad log p (maximum likelihood of success, rather than of p). Requires
  `group_ids`. Only binary row scores (0 or 1) are accepted: concrete inputs with another
  score raise ValueError; under `jit` such a group gives NaN. SkyRL's
  `compute_maxrl_advantage` (module skyrl_train.utils.ppo_utils) gives a singleton group its raw
  score r instead of 0 (README, conventions). Traced: `eps`.
  """

  def apply(traj, prev, hp):
    del prev
    scores, valid = _scores(traj)
    binary = (scores == 0.0) | (scores == 1.0) | ~valid
    if _concrete(scores) and _concrete(valid) and not bool(np.all(np.asarray(binary))):
      bad = np.unique(np.asarray(scores)[~np.asarray(binary)])[:3].tolist()
      raise ValueError(f'maxrl: row rewards must be binary (0 or 1); got {bad}.')
    v = valid.astype(jnp.float32)
    n = _segment(v, traj)
    mean = _segment(jnp.where(valid, scores, 0.0), traj) / jnp.maximum(n, 1.0)
    ok = valid & (n >= 2) & (mean > 0)
    a = jnp.where(ok, (scores - mean) / (jnp.where(ok, mean, 1.0) + hp['eps']), 0.0)
    bad_group = _segment((~binary).astype(jnp.float32), traj) > 0
    a = jnp.where(bad_group & valid, jnp.nan, a)
    return _broadcast(a, traj)

  return core.Stage('maxrl', ('group_ids',), dict(eps=eps), apply)


@core.stage()
def grpo_verl(eps=1e-6) -> core.Stage:
  """GRPO as verl's default (`adv_estimator='grpo'`, `compute_grpo_outcome_advantage`).

    A_i = (r_i - mean_g) / (std_g + eps)   (unbiased std), groups of >= 2 valid rows;
    A_i = r_i / (1 + eps)                  a group of one valid row (verl: mean 0, std 1).

  jaxca's `grpo` gives the singleton 0 instead. Rows with no valid token are left out (verl
  counts them as score 0). Requires `group_ids`. Traced: `eps`.
  """

  def apply(traj, prev, hp):
    del prev
    scores, valid = _scores(traj)
    a = core.row_group_relative(scores, valid, traj, 'grpo', hp['eps'])
    n = _segment(valid.astype(jnp.float32), traj)
    a = jnp.where(valid & (n == 1), scores / (1.0 + hp['eps']), a)
    return _broadcast(a, traj)

  return core.Stage('grpo_verl', ('group_ids',), dict(eps=eps), apply)


@core.stage()
def grpo_trl(eps=1e-4) -> core.Stage:
  """GRPO as TRL's `GRPOTrainer` default (`scale_rewards='group'`, one reward function).

    A_i = (r_i - mean_g) / (std_g + 1e-4)   (unbiased std); a singleton group gives 0.

  This is jaxca's `grpo` with TRL's `eps` 1e-4 (jaxca: 1e-6); with several reward
  functions TRL first sums them with `reward_weights` (put that sum in `rewards`). Requires
  `group_ids`. Traced: `eps`.
  """

  def apply(traj, prev, hp):
    del prev
    scores, valid = _scores(traj)
    return _broadcast(core.row_group_relative(scores, valid, traj, 'grpo', hp['eps']), traj)

  return core.Stage('grpo_trl', ('group_ids',), dict(eps=eps), apply)


@core.stage()
def grpo_nemo(eps=1e-6) -> core.Stage:
  """GRPO as NeMo-RL's default (`GRPOAdvantageEstimator`, `use_leave_one_out_baseline=True`,
  `normalize_rewards=True`; baseline from `calculate_baseline_and_std_per_prompt`).

  With O_i the other valid rows of row i's group (m = |O_i|):

    b_i = mean_{j in O_i} r_j,   s_i = unbiased std of {r_j : j in O_i} (0 when m < 2),
    A_i = (r_i - b_i) / (s_i + eps)  if s_i > 0,   else r_i - b_i  (no division at std 0);

  a group with fewer than 2 valid rows gives 0. The leave-one-out statistics are computed on
  a [B, B] same-group matrix (two-pass deviations; s_i is exactly 0 when the others are all
  equal). Requires `group_ids`. Traced: `eps`.
  """

  def apply(traj, prev, hp):
    del prev
    scores, valid = _scores(traj)
    ids = jnp.asarray(traj.group_ids)
    b = scores.shape[0]
    others = (ids[:, None] == ids[None, :]) & valid[None, :] & ~jnp.eye(b, dtype=bool)
    m = jnp.sum(others, axis=1).astype(jnp.float32)
    base = jnp.sum(jnp.where(others, scores[None, :], 0.0), axis=1) / jnp.maximum(m, 1.0)
    dev = jnp.where(others, scores[None, :] - base[:, None], 0.0)
    hi = jnp.max(jnp.where(others, scores[None, :], -jnp.inf), axis=1)
    lo = jnp.min(jnp.where(others, scores[None, :], jnp.inf), axis=1)
    spread = (m >= 2) & (hi > lo)
    var = jnp.sum(jnp.square(dev), axis=1) / jnp.maximum(m - 1.0, 1.0)
    std = jnp.where(spread, jnp.sqrt(jnp.where(spread, var, 1.0)), 0.0)
    a = scores - base
    a = jnp.where(std > 0, a / (std + hp['eps']), a)
    a = jnp.where(valid & (m >= 1), a, 0.0)
    return _broadcast(a, traj)

  return core.Stage('grpo_nemo', ('group_ids',), dict(eps=eps), apply)


@core.stage()
def shuffled_reward(eps=1e-6) -> core.Stage:
  """The noise floor: GRPO (`(s - mean) / (std + eps)` within groups) on scores that belong
  to another prompt's responses.

  Row i of group k is scored with the outcome of row i of group k - 1 (mod K), so each
  advantage is independent of the response it weights while the advantage distribution
  (group means, spreads, the share of constant groups) stays that of real rollouts. A
  learner that gains from this estimator gains from something other than credit: the
  entropy bonus, the KL, or drift. Requires `group_ids` in the sampler's contiguous layout
  (`groups_contiguous`) and at least two groups. Traced: `eps`.
  """

  def apply(traj, prev, hp):
    del prev
    if not traj.groups_contiguous:
      raise ValueError('shuffled_reward needs contiguous groups (groups_contiguous=True).')
    k = int(traj.num_groups)
    if k < 2:
      raise ValueError(f'shuffled_reward needs at least 2 groups; got num_groups={k}.')
    scores, valid = _scores(traj)
    g = scores.shape[0] // k
    a = core.row_group_relative(jnp.roll(scores, g), valid, traj, 'grpo', hp['eps'])
    return _broadcast(a, traj)

  return core.Stage('shuffled_reward', ('group_ids',), dict(eps=eps), apply)


STAGES = {
  'shuffled_reward': shuffled_reward,
  'gdpo': gdpo,
  'maxrl': maxrl,
  'grpo_verl': grpo_verl,
  'grpo_trl': grpo_trl,
  'grpo_nemo': grpo_nemo,
}
