"""GiGPO's two-level group-relative advantages (arXiv 2505.10978, Eqs. 3-8) and turn-index grouping.

Layout: B episodes (rows) of at most S steps (turns); `steps [B, S]` bool marks
the steps that happened. Episodes of one task share an episode group id
(`group_ids [B]`, in `[0, num_groups)`).

  F(x; G) = x - mean_G                       std_norm = 0  ("mean_norm")
          = (x - mean_G) / (std_G + eps)     std_norm = 1  ("mean_std_norm", unbiased std)

* Episode level (Eq. 3): A^E = F(R; rows of the same task), R the episode return.
  The statistics are over unique trajectories (the paper's form,
  `per_trajectory=1`) or over all step rows of the group, each trajectory weighted
  by its number of steps (`per_trajectory=0`, the `compute_mean_std_cross_steps`
  default of the verl-agent code).
* Step level (Eqs. 5-7): R_t = sum_{k>=t} gamma^(k-t) r_k within the episode;
  A^S = F(R_t; steps of the same task with the same anchor key). A singleton
  step group gives 0.
* GiGPO (Eq. 8): A = A^E + omega * A^S (the estimator's weighted sum).

Anchor keys (`anchor_keys`) are the task id plus any of: the anchor state
(GiGPO), the turn index (with the state: fewer recurrences; alone: the
per-turn-index grouping of MT-GRPO, arXiv 2505.11821), an action-history hash
(a prefix tree: the negative control). Which columns enter is set by traced 0/1
flags, so one compiled function covers every variant.

Difference from verl-agent: there a singleton *episode* group gets mean 0 and
std 1 (A^E = R); here every group with fewer than 2 valid members gives 0
(`credit.group_relative`), so the two agree whenever G >= 2.
"""

import jax
import jax.numpy as jnp

from jaxca.credit.group import group_relative
from jaxca.credit.returns import discounted_returns

_ABSENT = -2  # key column value of a component that is switched off


def group_ids_from_keys(keys: jax.Array) -> jax.Array:
  """Dense group ids of integer keys: equal keys <-> equal ids.

  Args:
    keys: int `[N]` or `[N, K]` (rows compared as tuples).

  Returns:
    int32 `[N]` ids in `[0, N)` (the rank of the key among the distinct keys);
    use `num_groups=N` with `credit.group_relative`. Computed by
    `jnp.unique(size=N)`, so shapes are static and it is jit/vmap-safe.
  """
  keys = jnp.asarray(keys)
  if not jnp.issubdtype(keys.dtype, jnp.integer) or keys.ndim not in (1, 2):
    raise ValueError(f'`keys` must be an int [N] or [N, K] array; got {keys.dtype}{keys.shape}.')
  n = keys.shape[0]
  axis = 0 if keys.ndim == 2 else None
  _, inverse = jnp.unique(keys, axis=axis, size=n, return_inverse=True, fill_value=keys[0])
  return inverse.reshape(n).astype(jnp.int32)


def normalize(scores, group_ids, num_groups: int, valid, std_norm, eps=1e-6) -> jax.Array:
  """F(scores; group): `mean_norm` when `std_norm` is 0, `mean_std_norm` otherwise (traceable)."""
  centred = group_relative(scores, 'dr_grpo', group_ids, num_groups, valid=valid)
  scaled = group_relative(scores, 'grpo', group_ids, num_groups, eps=eps, valid=valid)
  return jnp.where(jnp.asarray(std_norm) != 0, scaled, centred)


def episode_advantages(
  returns, group_ids, num_groups: int, steps, std_norm, per_trajectory, eps=1e-6
) -> jax.Array:
  """A^E [B] (Eq. 3): returns [B] float32, group_ids [B] int, steps [B, S] bool.

  `per_trajectory` (traceable 0/1): statistics over unique trajectories (1) or
  over all step rows (0). Rows without a step get 0.
  """
  returns = jnp.asarray(returns, jnp.float32)
  b, s = steps.shape
  row_valid = jnp.any(steps, axis=-1)
  per_traj = normalize(returns, group_ids, num_groups, row_valid, std_norm, eps)
  flat = normalize(
    jnp.repeat(returns, s),
    jnp.repeat(group_ids, s),
    num_groups,
    steps.reshape(b * s),
    std_norm,
    eps,
  ).reshape(b, s)
  per_step = jnp.sum(jnp.where(steps, flat, 0.0), -1) / jnp.maximum(jnp.sum(steps, -1), 1)
  return jnp.where(jnp.asarray(per_trajectory) != 0, per_traj, per_step)


def anchor_keys(group_ids, anchors, history=None, *, use_state=1.0, use_turn=0.0, use_history=0.0):
  """[B, S, 4] int32 step-group keys: (task, state | -2, turn | -2, history | -2).

  Args:
    group_ids: [B] int, the task (episode group) of each row.
    anchors: [B, S] int anchor state id at the start of each step.
    history: optional [B, S] int history hash (e.g. `multiturn.history_ids`).
    use_state, use_turn, use_history: traceable 0/1 flags for the columns.
  """
  b, s = anchors.shape
  turn = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
  hist = jnp.zeros((b, s), jnp.int32) if history is None else jnp.asarray(history, jnp.int32)
  on = lambda flag, x: jnp.where(jnp.asarray(flag) != 0, x, _ABSENT)  # noqa: E731
  return jnp.stack(
    [
      jnp.broadcast_to(jnp.asarray(group_ids, jnp.int32)[:, None], (b, s)),
      on(use_state, jnp.asarray(anchors, jnp.int32)),
      on(use_turn, turn),
      on(use_history, hist),
    ],
    axis=-1,
  )


def step_group_ids(keys, steps) -> jax.Array:
  """[B, S] int32 ids in [0, B*S) of the step groups; steps that did not happen share one id."""
  b, s, k = keys.shape
  keys = jnp.where(steps[..., None], keys, -1)  # column 0 (the task) is >= 0 for real steps
  return group_ids_from_keys(keys.reshape(b * s, k)).reshape(b, s)


def step_advantages(step_rewards, steps, keys, gamma, std_norm, eps=1e-6) -> jax.Array:
  """A^S [B, S] (Eqs. 5-7): discounted step returns, normalised within step groups.

  Args:
    step_rewards: [B, S] float32 reward of each step.
    steps: [B, S] bool, the steps that happened (a prefix of each row).
    keys: [B, S, K] int step-group keys (e.g. `anchor_keys`).
    gamma: discount (traceable).
    std_norm: traceable 0/1 (see `normalize`).
  """
  b, s = steps.shape
  r = jnp.where(steps, jnp.asarray(step_rewards, jnp.float32), 0.0)
  disc = jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), r.shape)
  ret = discounted_returns(r, disc, 0.0, mask=steps)
  ids = step_group_ids(keys, steps)
  out = normalize(
    ret.reshape(b * s), ids.reshape(b * s), b * s, steps.reshape(b * s), std_norm, eps
  )
  return out.reshape(b, s)


def group_sizes(ids, valid) -> jax.Array:
  """[N] float32: the number of valid entries sharing each entry's id (0 where invalid)."""
  ids = ids.reshape(-1)
  valid = valid.reshape(-1)
  n = ids.shape[0]
  count = jax.ops.segment_sum(valid.astype(jnp.float32), ids, num_segments=n)
  return jnp.where(valid, count[ids], 0.0)


SIZE_BINS = ((1, 1), (2, 4), (5, 8), (9, 16), (17, None))
SIZE_BIN_LABELS = ('1', '2-4', '5-8', '9-16', '>=17')


def size_histogram(ids, valid):
  """Step-group-size histograms over `SIZE_BINS`.

  Returns:
    (group-weighted [5] (fraction of groups, as verl-agent's summarize_group_size),
     row-weighted [5] (fraction of valid steps)) float32.
  """
  sizes = group_sizes(ids, valid)
  valid = valid.reshape(-1)
  inv = jnp.where(valid, 1.0 / jnp.maximum(sizes, 1.0), 0.0)  # each group's rows sum to 1

  def bins(weights):
    out = []
    for lo, hi in SIZE_BINS:
      inside = (sizes >= lo) & ((sizes <= hi) if hi is not None else True) & valid
      out.append(jnp.sum(jnp.where(inside, weights, 0.0)))
    out = jnp.stack(out)
    return out / jnp.maximum(jnp.sum(out), 1e-12)

  return bins(inv), bins(valid.astype(jnp.float32))
