"""Turn-level credit for tool-using agents: matched tool-call rewards and turn advantages.

Layout: B rows (trajectories), U turns per row (`turn_valid [B, U]` marks the turns that
happened), P predicted tool calls and G reference calls per row (`pred_valid [..., P]`,
`ref_valid [..., G]`). A call is a tool name id and A integer argument slots (-1: the
parameter is absent), so `names [..., P]`, `args [..., P, A]`.

MatchTIR (arXiv 2601.10712; official code github.com/quchangle1/MatchTIR,
`Code/verl/utils/reward_score/tool.py` and `Code/verl/trainer/ppo/core_algos.py`):
  * `call_similarity` -- the official `tool_similarity`: 0 if the names differ, else
    (1 + Jaccard(parameter names) + #equal values of the reference's parameters) /
    (2 + #reference parameters).
  * hard assignment -- `greedy_assignment` is what the official `hungarian_assignment`
    computes (pairs by descending score, ties to the larger (i, j), each side used once,
    only scores > 0); `optimal_assignment` is the maximum-weight (Kuhn-Munkres) matching
    the paper names, exact in jit by enumerating permutations (P, G <= 7), pairs with
    score 0 left unmatched as in the official rule. The two differ only when greedy is
    sub-optimal. Matched calls get their similarity, unmatched ones `unmatched_penalty`
    (`assign_rewards_hungarian`'s default -0.5; its caller `compute_process_KM` passes 0).
  * soft assignment -- `sinkhorn_plan`: entropic OT with uniform marginals 1/P, 1/G and
    cost -S (`ot.sinkhorn(mu, nu, -S, reg=0.1)` in the official code), here in the log
    domain for a fixed number of iterations; a call's reward is `sum_j T_ij S_ij` (no
    penalty; these rewards are at most 1/P). With no reference call the official code
    fails; here every call gets 0.
  * `turn_rewards_from_calls` -- a turn's reward is the mean of its calls' rewards
    (`compute_process_KM`'s `process_reward[i] /= count_per_turn[i]`).
  * `dual_level_advantages` -- the official `compute_grpo_outcome_advantage`: the GRPO
    advantage of the trajectory score, plus the turn-level discounted return
    (`lam` = 0.9 hard-coded there: `gamma` here) normalised over the (prompt, turn index)
    group, averaged: A = (A_traj + A_turn) / 2 at every token of the turn. Groups of one
    get mean 0 and std 1 as in the official code (so the raw value / (1 + eps)), not 0
    as in `credit.group_relative`.

MARS (arXiv 2510.15414; official code github.com/thu-nics/MARS, `roll/utils/functionals.py`
with `use_turn_scores`, `adv_estimator: reinforce`, `reward_normalization.method: mean`,
`separate_norm_for_selfplay`, `advantage_norm: mean`): `mars_advantages` -- turn rewards
centred (or standardised) per agent over the batch (`reward_normalize_by_player`), the
discounted sum of the normalised turn rewards from each turn on (`compute_reinforce_return`),
then per-agent normalisation over the *distinct* advantage values
(`normalize_unique_values_by_player`). Differences: agents are `agent_ids [B]` in
`[0, num_agents)` (the official code splits two players by a `_p0` / `_p1` suffix); the
distinct values are those of the valid turns (the official token tensor also holds the 0
of padding and of tokens after the last turn end); the official `whiten_rewards` (token
whitening before the return) is left out, and its final `whiten_advantages` is jaxca's
`whiten` transform.

`turn_gae`: GAE over turns (a critic value at each turn start, the lambda-return over the
turns, Schulman et al. arXiv 1506.02438 applied to turns as in multi-turn agent RL).

All functions are pure and jit/vmap-safe; shapes are static.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import ops
from jaxca.credit import _checks
from jaxca.credit.gae import gae
from jaxca.credit.returns import discounted_returns

ASSIGNMENTS = ('greedy', 'km', 'ot')
NORMS = ('none', 'mean', 'mean_std')
MAX_EXACT = 7  # optimal_assignment enumerates max(P, G)! permutations


def call_similarity(pred_names, pred_args, ref_names, ref_args, pred_valid=None, ref_valid=None):
  """S [..., P, G] float32, MatchTIR's `tool_similarity` of every (predicted, reference) pair.

  Args:
    pred_names: int [..., P] tool name ids; pred_args: int [..., P, A] (-1 = absent).
    ref_names: int [..., G]; ref_args: int [..., G, A].
    pred_valid, ref_valid: optional bool [..., P] / [..., G]; invalid pairs get 0.
  """
  pn, rn = jnp.asarray(pred_names), jnp.asarray(ref_names)
  pa, ra = jnp.asarray(pred_args), jnp.asarray(ref_args)
  if pa.shape[-1] != ra.shape[-1] or pa.shape[:-1] != pn.shape or ra.shape[:-1] != rn.shape:
    raise ValueError(
      f'`pred_args` / `ref_args` must be [..., P, A] / [..., G, A] with the names` shapes; '
      f'got {pa.shape}, {ra.shape} for names {pn.shape}, {rn.shape}.'
    )
  p_has = (pa >= 0)[..., :, None, :]  # [..., P, 1, A]
  r_has = (ra >= 0)[..., None, :, :]  # [..., 1, G, A]
  inter = jnp.sum(p_has & r_has, -1)
  union = jnp.sum(p_has | r_has, -1)
  jaccard = jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)  # [] == [] scores 1
  equal = jnp.sum(r_has & p_has & (pa[..., :, None, :] == ra[..., None, :, :]), -1)
  n_ref = jnp.sum(r_has, -1)
  same = pn[..., :, None] == rn[..., None, :]
  s = jnp.where(same, (1.0 + jaccard + equal) / (2.0 + n_ref), 0.0).astype(jnp.float32)
  return s * _pair_valid(s, pred_valid, ref_valid)


def _pair_valid(s, pred_valid, ref_valid):
  ok = jnp.ones(s.shape, jnp.bool_)
  if pred_valid is not None:
    ok = ok & jnp.asarray(pred_valid, jnp.bool_)[..., :, None]
  if ref_valid is not None:
    ok = ok & jnp.asarray(ref_valid, jnp.bool_)[..., None, :]
  return ok


def _greedy_one(s):
  p, g = s.shape
  flat = s.reshape(-1)

  def body(_, carry):
    assign, row_free, col_free = carry
    ok = row_free[:, None] & col_free[None, :] & (s > 0)
    cand = jnp.where(ok.reshape(-1), flat, -jnp.inf)
    k = p * g - 1 - jnp.argmax(cand[::-1])  # ties: the largest (i, j), as the reverse sort
    i, j = k // g, k % g
    take = jnp.isfinite(cand[k])
    assign = jnp.where(take, assign.at[i].set(j), assign)
    row_free = jnp.where(take, row_free.at[i].set(False), row_free)
    col_free = jnp.where(take, col_free.at[j].set(False), col_free)
    return assign, row_free, col_free

  init = (jnp.full((p,), -1, jnp.int32), jnp.ones((p,), bool), jnp.ones((g,), bool))
  return jax.lax.fori_loop(0, min(p, g), body, init)[0]


def greedy_assignment(sim, pred_valid=None, ref_valid=None) -> jax.Array:
  """[..., P] int32 reference index of each predicted call (-1: unmatched), the official
  `hungarian_assignment` (a greedy matching by descending similarity; see the module doc)."""
  s = _masked_sim(sim, pred_valid, ref_valid)
  if s.shape[-1] == 0 or s.shape[-2] == 0:
    return jnp.full(s.shape[:-1], -1, jnp.int32)
  return jnp.vectorize(_greedy_one, signature='(p,g)->(p)')(s)


def _permutations(n):
  return np.asarray(list(itertools.permutations(range(n))), np.int32)


def _optimal_one(s):
  p, g = s.shape
  n = max(p, g)
  full = jnp.zeros((n, n), jnp.float32).at[:p, :g].set(s)
  perms = jnp.asarray(_permutations(n))  # [n!, n]: row i -> column perm[i]
  weight = jnp.sum(full[jnp.arange(n)[None, :], perms], axis=-1)
  best = perms[jnp.argmax(weight)][:p]
  got = full[jnp.arange(p), best]
  return jnp.where((best < g) & (got > 0), best, -1).astype(jnp.int32)


def optimal_assignment(sim, pred_valid=None, ref_valid=None) -> jax.Array:
  """[..., P] int32: a maximum-weight matching (Kuhn-Munkres' optimum), exact in jit.

  Enumerates the permutations of max(P, G) <= `MAX_EXACT` (static); pairs of similarity
  <= 0 are left unmatched (-1). Ties between optimal matchings go to the first
  permutation in lexicographic order.
  """
  s = _masked_sim(sim, pred_valid, ref_valid)
  p, g = s.shape[-2:]
  if max(p, g) > MAX_EXACT:
    raise ValueError(f'optimal_assignment: max(P, G) must be <= {MAX_EXACT}; got P={p}, G={g}.')
  if p == 0 or g == 0:
    return jnp.full(s.shape[:-1], -1, jnp.int32)
  return jnp.vectorize(_optimal_one, signature='(p,g)->(p)')(s)


def _masked_sim(sim, pred_valid, ref_valid):
  s = _checks.as_float('sim', sim)
  if s.ndim < 2:
    raise ValueError(f'`sim` must be [..., P, G]; got shape {s.shape}.')
  return jnp.where(_pair_valid(s, pred_valid, ref_valid), s, 0.0)


def sinkhorn_plan(sim, pred_valid=None, ref_valid=None, reg=0.1, num_iters: int = 500):
  """T [..., P, G]: entropic OT plan, marginals 1/P_valid and 1/G_valid, cost -S.

  Log-domain Sinkhorn for `num_iters` (static) iterations of both scalings; invalid rows
  and columns carry no mass (T = 0 there). `reg` is traceable.
  """
  s = _checks.as_float('sim', sim)
  ok = _pair_valid(s, pred_valid, ref_valid)
  rows, cols = jnp.any(ok, -1), jnp.any(ok, -2)
  log_a = jnp.where(rows, -jnp.log(jnp.maximum(jnp.sum(rows, -1, keepdims=True), 1)), -jnp.inf)
  log_b = jnp.where(cols, -jnp.log(jnp.maximum(jnp.sum(cols, -1, keepdims=True), 1)), -jnp.inf)
  log_k = jnp.where(ok, s / reg, -jnp.inf)

  def lse(x, axis):
    m = jnp.max(x, axis=axis, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return jnp.squeeze(m, axis) + jnp.log(jnp.sum(jnp.exp(x - m), axis=axis))

  def body(_, fg):
    f, g = fg
    f = jnp.where(rows, log_a - lse(log_k + g[..., None, :], -1), 0.0)
    g = jnp.where(cols, log_b - lse(log_k + f[..., :, None], -2), 0.0)
    return f, g

  zeros = (jnp.zeros(s.shape[:-1]), jnp.zeros(s.shape[:-2] + s.shape[-1:]))
  f, g = jax.lax.fori_loop(0, num_iters, body, zeros)
  return jnp.where(ok, jnp.exp(log_k + f[..., :, None] + g[..., None, :]), 0.0)


def matched_call_rewards(
  sim,
  pred_valid=None,
  ref_valid=None,
  *,
  assignment: str = 'km',
  unmatched_penalty=-0.5,
  reg=0.1,
  num_iters: int = 500,
) -> jax.Array:
  """[..., P] float32 reward of each predicted call (0 at invalid calls).

  `assignment` (static): 'km' (optimal), 'greedy' (the official hard rule) -- similarity of
  the matched reference, `unmatched_penalty` (traceable) otherwise; 'ot' -- `sum_j T_ij
  S_ij` of the Sinkhorn plan (`reg`, `num_iters`).
  """
  _checks.choice('assignment', assignment, ASSIGNMENTS)
  s = _masked_sim(sim, pred_valid, ref_valid)
  pv = jnp.ones(s.shape[:-1], bool) if pred_valid is None else jnp.asarray(pred_valid, bool)
  if assignment == 'ot':
    out = jnp.sum(sinkhorn_plan(s, pred_valid, ref_valid, reg, num_iters) * s, -1)
  else:
    fn = optimal_assignment if assignment == 'km' else greedy_assignment
    a = fn(s, pred_valid, ref_valid)
    if s.shape[-1] == 0:
      got = jnp.zeros(a.shape, jnp.float32)
    else:
      got = jnp.take_along_axis(s, jnp.maximum(a, 0)[..., None], -1)[..., 0]
    out = jnp.where(a >= 0, got, jnp.asarray(unmatched_penalty, jnp.float32))
  return jnp.where(pv, out, 0.0).astype(jnp.float32)


def turn_rewards_from_calls(call_rewards, call_turns, num_turns: int) -> jax.Array:
  """[..., U] float32: the mean reward of each turn's calls (0 for a turn without calls).

  Args:
    call_rewards: [..., P] float32; call_turns: [..., P] int turn of each call (-1: none).
    num_turns: static U.
  """
  return ops.to_steps(_checks.as_float('call_rewards', call_rewards), call_turns, num_turns, 'mean')


def _official_group_norm(x, ids, num, valid, eps):
  """(x - mean) / (std + eps) over groups (unbiased std); a group of one: mean 0, std 1."""
  w = valid.astype(jnp.float32)
  n = jax.ops.segment_sum(w, ids, num)
  mean = jax.ops.segment_sum(w * x, ids, num) / jnp.maximum(n, 1)
  dev = jnp.where(valid, x - mean[ids], 0.0)
  var = jax.ops.segment_sum(dev * dev, ids, num) / jnp.maximum(n - 1, 1)
  single = n[ids] < 2
  mu = jnp.where(single, 0.0, mean[ids])
  sd = jnp.where(single, 1.0, jnp.sqrt(var)[ids])
  return jnp.where(valid, (x - mu) / (sd + eps), 0.0)


def dual_level_advantages(
  scores, turn_rewards, turn_valid, group_ids, num_groups: int, gamma=0.9, eps=1e-6
) -> jax.Array:
  """MatchTIR's dual-level advantage [B, U] (the official `compute_grpo_outcome_advantage`).

  Args:
    scores: [B] float32 trajectory score (the official sum of the row's token rewards).
    turn_rewards: [B, U] float32; turn_valid: [B, U] bool (turn u is the u-th turn).
    group_ids: [B] int in [0, num_groups) (the prompt); num_groups: static.
    gamma: the turn discount (`lam = 0.9` in the official code); eps: traceable.

  Returns:
    (A_traj + A_turn) / 2 at valid turns, 0 elsewhere (see the module docstring).
  """
  scores = _checks.as_float('scores', scores)
  r = _checks.as_float('turn_rewards', turn_rewards)
  valid = jnp.asarray(turn_valid, bool)
  _checks.same_shape('turn_rewards', r, turn_valid=valid)
  b, u = r.shape
  gid = jnp.asarray(group_ids, jnp.int32)
  a_traj = _official_group_norm(scores, gid, num_groups, jnp.ones((b,), bool), eps)
  disc = jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), r.shape)
  ret = discounted_returns(jnp.where(valid, r, 0.0), disc, 0.0, mask=valid)
  keys = (gid[:, None] * u + jnp.arange(u)[None, :]).reshape(-1)
  a_turn = _official_group_norm(ret.reshape(-1), keys, num_groups * u, valid.reshape(-1), eps)
  return jnp.where(valid, (a_traj[:, None] + a_turn.reshape(b, u)) / 2.0, 0.0)


def _agent_stats(x, valid, agents, num_agents):
  w = valid.astype(jnp.float32)
  n = jax.ops.segment_sum(w, agents, num_agents)
  mean = jax.ops.segment_sum(w * x, agents, num_agents) / jnp.maximum(n, 1)
  dev = jnp.where(valid, x - mean[agents], 0.0)
  var = jax.ops.segment_sum(dev * dev, agents, num_agents) / jnp.maximum(n - 1, 1)
  return n, mean, jnp.sqrt(var)


def _norm(x, valid, agents, num_agents, mode, unique):
  """Per-agent centring ('mean') or standardising ('mean_std') of the valid entries [N]."""
  if mode == 'none':
    return jnp.where(valid, x, 0.0)
  if unique:  # the distinct valid values of each agent (sorted by (agent, value))
    key_agent = jnp.where(valid, agents, num_agents)
    order = jnp.lexsort((x, key_agent))
    xs, ag, vs = x[order], key_agent[order], valid[order]
    first = jnp.concatenate([jnp.ones((1,), bool), (ag[1:] != ag[:-1]) | (xs[1:] != xs[:-1])])
    n, mean, std = _agent_stats(xs, vs & first, jnp.minimum(ag, num_agents - 1), num_agents)
  else:
    n, mean, std = _agent_stats(x, valid, agents, num_agents)
  centred = x - mean[agents]
  if mode == 'mean':
    out = centred
  else:
    out = jnp.where(std[agents] > 1e-6, centred / (std[agents] + 1e-6), 0.0)
  if unique:  # a single distinct value (or none) normalises to 0
    out = jnp.where(n[agents] > 1, out, 0.0)
  return jnp.where(valid, out, 0.0)


def mars_advantages(
  turn_rewards,
  turn_valid,
  agent_ids,
  num_agents: int,
  gamma=1.0,
  *,
  reward_norm: str = 'mean',
  adv_norm: str = 'mean',
) -> jax.Array:
  """MARS's turn-level advantage with agent-specific normalisation, [B, U] (module docstring).

  Args:
    turn_rewards: [B, U] float32; turn_valid: [B, U] bool.
    agent_ids: [B] int in [0, num_agents); num_agents: static.
    gamma: turn discount of the return (traceable; 1 in the official configs).
    reward_norm: static, per-agent normalisation of the turn rewards over the batch's valid
      turns ('none' | 'mean' | 'mean_std', the official `score_normalize`).
    adv_norm: static, per-agent normalisation of the returns over their distinct values
      ('none' | 'mean' | 'mean_std', the official `normalize_unique_values`).
  """
  _checks.choice('reward_norm', reward_norm, NORMS)
  _checks.choice('adv_norm', adv_norm, NORMS)
  r = _checks.as_float('turn_rewards', turn_rewards)
  valid = jnp.asarray(turn_valid, bool)
  _checks.same_shape('turn_rewards', r, turn_valid=valid)
  b, u = r.shape
  agents = jnp.repeat(jnp.asarray(agent_ids, jnp.int32), u)
  flat_v = valid.reshape(-1)
  rn = _norm(r.reshape(-1), flat_v, agents, num_agents, reward_norm, False).reshape(b, u)
  disc = jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), r.shape)
  ret = discounted_returns(rn, disc, 0.0, mask=valid)
  return _norm(ret.reshape(-1), flat_v, agents, num_agents, adv_norm, True).reshape(b, u)


def turn_gae(turn_rewards, turn_values, turn_valid, gamma=1.0, lambda_=1.0, bootstrap_value=0.0):
  """GAE over turns: (advantages, returns) [B, U], 0 at invalid turns.

  delta_u = r_u + gamma V_{u+1} - V_u (V after the last valid turn: `bootstrap_value`),
  A_u = delta_u + gamma lambda A_{u+1}; returns = A + V. `credit.gae` on the turn axis.
  """
  r = _checks.as_float('turn_rewards', turn_rewards)
  v = _checks.as_float('turn_values', turn_values)
  valid = jnp.asarray(turn_valid, bool)
  _checks.same_shape('turn_rewards', r, turn_values=v, turn_valid=valid)
  disc = jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), r.shape)
  boot = jnp.broadcast_to(jnp.asarray(bootstrap_value, jnp.float32), r.shape[:-1])
  adv, ret = gae(jnp.where(valid, r, 0.0), jnp.where(valid, v, 0.0), disc, boot, lambda_, valid)
  return adv, ret
