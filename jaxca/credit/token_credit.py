"""Token-level credit: entropy (GTPO, GRPO-S), planning tokens (HICRA), attention (FAI, WAAD).

Layout (as `group_relative`). Per-token arrays are `[..., G, T]` with each group of G
responses on the second-to-last axis (reshape `[B, T]` to `[P, G, T]` first), per-response
arrays `[..., G]`; or, with integer `group_ids [N]` and a static `num_groups`, per-token arrays
are `[N, T]` and per-response arrays `[N]`, in any order. `mask` (bool, the shape of the
per-token arrays) is True at response tokens; outputs are 0 where it is False. Masked tokens
and responses without a valid token take no part in any statistic.

Kernels:
  * `gtpo_rewards`, `gtpo_advantages`: GTPO token rewards shaped by entropy, arXiv
    2508.04349 Eq. 3 and 5, normalised as Eq. 6 in two poolings (`GTPO_POOLINGS`);
  * `grpo_s_rewards`, `grpo_s_advantages`: GRPO-S, the sequence-level version (same paper);
  * `hicra`, `hicra_official`: HICRA's amplification of planning tokens, arXiv 2509.03646, in
    the paper's form and in the form of the later-released code;
  * `top_fraction_mask`: the top fraction of a response's tokens by a score (planning sets);
  * `mean_attention_distance`, `global_heads`, `fai`, `waad`: the attention metrics of arXiv
    2510.13554 (Future Attention Influence, Windowed Average Attention Distance) from
    attention maps `[B, H, T, T]` (or `[B, layers, H, T, T]`).

The constants (alpha1 = 1, alpha2 = 0.1, beta1 = 1, beta2 = 0.1, HICRA's alpha = 0.2, the top
30%, the window W and the head split) are unverified against the papers' final versions; the
attention metrics and the head split are our operationalisation.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxca.credit import _checks
from jaxca.credit.group import group_relative

GTPO_POOLINGS = ('joint', 'separate')


# ----------------------------------------------------------------------------- grouping helpers


class _Groups:
  """Group sums broadcast back to members, for the contiguous or the `group_ids` layout."""

  def __init__(self, group_ids, num_groups, per_response_shape):
    self.ids = None
    if group_ids is None:
      if num_groups is not None:
        raise ValueError('`num_groups` is only used together with `group_ids`.')
      if len(per_response_shape) < 1:
        raise ValueError('Per-response arrays need a group axis [..., G]; got a scalar.')
      return
    if len(per_response_shape) != 1:
      raise ValueError(
        f'With `group_ids`, per-response arrays must be rank 1 [N] (per-token arrays [N, T]); '
        f'got per-response shape {per_response_shape}.'
      )
    if not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool):
      raise TypeError(
        f'`num_groups` must be a static Python int when `group_ids` is given; got {num_groups!r}.'
      )
    ids = jnp.asarray(group_ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise TypeError(f'`group_ids` must be an integer array; got dtype {ids.dtype}.')
    if tuple(ids.shape) != tuple(per_response_shape):
      raise ValueError(
        f'`group_ids` must have shape {tuple(per_response_shape)} (one id per response); '
        f'got {tuple(ids.shape)}.'
      )
    self.ids, self.k = ids, int(num_groups)

  def sum_responses(self, x):
    """x: [..., G] (or [N]) -> the sum over each response's group, same shape."""
    if self.ids is None:
      return jnp.broadcast_to(jnp.sum(x, axis=-1, keepdims=True), x.shape)
    return jax.ops.segment_sum(x, self.ids, num_segments=self.k)[self.ids]

  def sum_tokens(self, x):
    """x: [..., G, T] (or [N, T]) -> the sum over the group at the same position t."""
    if self.ids is None:
      return jnp.broadcast_to(jnp.sum(x, axis=-2, keepdims=True), x.shape)
    return jax.ops.segment_sum(x, self.ids, num_segments=self.k)[self.ids]

  def zscore_tokens(self, x, valid, eps):
    """GRPO z-score of x [..., G, T] over all valid tokens of each group (one pool a group)."""
    if self.ids is None:
      shape = x.shape
      flat = lambda a: a.reshape(shape[:-2] + (shape[-2] * shape[-1],))
      return group_relative(flat(x), 'grpo', eps=eps, valid=flat(valid)).reshape(shape)
    ids = jnp.broadcast_to(self.ids[:, None], x.shape).ravel()
    out = group_relative(
      x.ravel(), 'grpo', group_ids=ids, num_groups=self.k, eps=eps, valid=valid.ravel()
    )
    return out.reshape(x.shape)

  def zscore_responses(self, x, valid, eps):
    """GRPO z-score of x [..., G] (or [N]) over the valid responses of each group."""
    if self.ids is None:
      return group_relative(x, 'grpo', eps=eps, valid=valid)
    return group_relative(x, 'grpo', group_ids=self.ids, num_groups=self.k, eps=eps, valid=valid)


def _token_inputs(entropies, correct, mask):
  entropies = _checks.as_float('entropies', entropies)
  if entropies.ndim < 2:
    raise ValueError(
      f'`entropies` must be [..., G, T] (or [N, T] with group_ids); got shape {entropies.shape}.'
    )
  mask = _checks.check_mask(mask, 'entropies', entropies)
  correct = jnp.asarray(correct)
  if correct.dtype != jnp.bool_:
    raise TypeError(
      f'`correct` must be a bool array (True for a correct response); got dtype {correct.dtype}.'
    )
  _checks.batch_shape('correct', correct, 'entropies', entropies)
  return entropies, correct, mask


def _scalar(name, x):
  if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
    x = float(x)
  arr = _checks.as_float(name, x)
  if arr.ndim != 0:
    raise ValueError(f'`{name}` must be a scalar; got shape {arr.shape}.')
  return arr


def _shares(values, members, group_sum):
  """values / (sum of values over the members of the group); 0 outside `members`."""
  v = jnp.where(members, values, 0.0)
  total = group_sum(v)
  return jnp.where(members, v / jnp.where(total > 0, total, 1.0), 0.0)


# ----------------------------------------------------------------------------- GTPO and GRPO-S


def gtpo_rewards(
  entropies: jax.Array,
  correct: jax.Array,
  mask: jax.Array,
  group_ids: jax.Array | None = None,
  num_groups: int | None = None,
  alpha1=1.0,
  alpha2=0.1,
  eps=1e-6,
) -> jax.Array:
  """GTPO token rewards shaped by the rollout policy's entropy (arXiv 2508.04349, Eq. 3 and 5).

  For response i of a group and position t, with `O+_t` (`O-_t`) the correct (wrong)
  responses whose token t is valid, `d_t = |O+_t|` and `h_t = |O-_t|`:

    r~_{i,t} =  alpha1 + alpha2 * d_t * (H_{i,t} + eps) / sum_{k in O+_t} (H_{k,t} + eps)
               for i in O+_t (Eq. 3: high-entropy, "forking", tokens of correct answers gain);
    r~_{j,t} = -alpha1 - alpha2 * h_t * (H_{j,t} + eps)^-1 / sum_{k in O-_t} (H_{k,t} + eps)^-1
               for j in O-_t (Eq. 5: confident tokens of wrong answers lose most).

  The outcome enters as r_i = 1 (correct) and -1 (wrong), as in the paper's binary setting.
  Because the shares sum to 1 over each pool, the entropy bonus averages to `alpha2` per
  position, so with `alpha1 + alpha2 = 1` the mean reward of `O+_t` is exactly 1 and of `O-_t`
  exactly -1 (the conservation property the paper states). `eps` is added to every entropy
  (the paper adds it only inside H^-1; our choice): it keeps the shares defined when all
  entropies at a position are 0 (they become uniform, and conservation still holds).

  Args:
    entropies: [..., G, T] (or [N, T] with `group_ids`) float32 token entropies H >= 0 of the
      rollout (old) policy; treated as constants.
    correct: [..., G] (or [N]) bool outcome of each response.
    mask: bool, the shape of `entropies`; True at response tokens.
    group_ids: optional int [N]; the group of each response, in `[0, num_groups)`.
    num_groups: static Python int, required with `group_ids`.
    alpha1: weight of the outcome (traceable scalar; default 1, unverified).
    alpha2: weight of the entropy bonus (traceable scalar; default 0.1, unverified).
    eps: added to every entropy (traceable scalar).

  Returns:
    float32 rewards r~ with the shape of `entropies`; 0 where `mask` is False. A position held
    by a single response of a pool gives that response the full bonus `alpha2`.
  """
  entropies, correct, mask = _token_inputs(entropies, correct, mask)
  groups = _Groups(group_ids, num_groups, correct.shape)
  alpha1, alpha2, eps = (
    _scalar(n, x) for n, x in (('alpha1', alpha1), ('alpha2', alpha2), ('eps', eps))
  )
  pos = mask & correct[..., None]
  neg = mask & ~correct[..., None]
  h = jnp.where(mask, entropies, 0.0) + eps
  d_t = groups.sum_tokens(pos.astype(jnp.float32))
  h_t = groups.sum_tokens(neg.astype(jnp.float32))
  share_pos = _shares(h, pos, groups.sum_tokens)
  share_neg = _shares(1.0 / h, neg, groups.sum_tokens)
  r_pos = alpha1 + alpha2 * share_pos * d_t
  r_neg = -alpha1 - alpha2 * share_neg * h_t
  return jnp.where(pos, r_pos, jnp.where(neg, r_neg, 0.0))


def _pooled(groups, pooling, values, valid, good, zscore, eps):
  _checks.choice('pooling', pooling, GTPO_POOLINGS)
  if pooling == 'joint':
    return zscore(values, valid, eps)
  return zscore(values, valid & good, eps) + zscore(values, valid & ~good, eps)


def gtpo_advantages(
  entropies: jax.Array,
  correct: jax.Array,
  mask: jax.Array,
  group_ids: jax.Array | None = None,
  num_groups: int | None = None,
  alpha1=1.0,
  alpha2=0.1,
  pooling: str = 'joint',
  eps=1e-6,
  std_eps=1e-6,
) -> jax.Array:
  """GTPO token advantages: `gtpo_rewards` z-scored per group (arXiv 2508.04349, Eq. 6).

  `A_{i,t} = (r~_{i,t} - mean(R~)) / (std(R~) + std_eps)`, with mean and unbiased std over a
  pool of tokens (as `group_relative`'s `'grpo'` mode):
    * `'joint'` (default; our reading): one pool per group, all valid tokens of all its
      responses; correct responses keep positive and wrong ones negative advantages;
    * `'separate'` (the literal transcription of Eq. 6): two pools per group, the valid
      tokens of its correct and of its wrong responses. Within a pool every reward is
      `+-alpha1` plus the bonus, so the z-score removes `alpha1` and with it the outcome sign:
      the advantages do not depend on `alpha1` at all, and only the entropy bonus is left.

  Edge cases: a pool with fewer than 2 valid tokens, or with all rewards equal, gives 0
  (never NaN); an all-correct or all-wrong group still gets non-zero advantages from the
  entropy bonus (unlike GRPO).

  Args:
    entropies, correct, mask, group_ids, num_groups, alpha1, alpha2, eps: as `gtpo_rewards`.
    pooling: one of `GTPO_POOLINGS`.
    std_eps: added to the pool's std (traceable scalar).

  Returns:
    float32 advantages with the shape of `entropies`; 0 where `mask` is False.
  """
  rewards = gtpo_rewards(entropies, correct, mask, group_ids, num_groups, alpha1, alpha2, eps)
  correct = jnp.asarray(correct)
  mask = jnp.asarray(mask)
  groups = _Groups(group_ids, num_groups, correct.shape)
  return _pooled(groups, pooling, rewards, mask, correct[..., None], groups.zscore_tokens, std_eps)


def _mean_entropy(entropies, mask):
  n = jnp.sum(mask, axis=-1, dtype=jnp.float32)
  total = jnp.sum(jnp.where(mask, entropies, 0.0), axis=-1)
  return total / jnp.maximum(n, 1.0), n > 0


def grpo_s_rewards(
  entropies: jax.Array,
  correct: jax.Array,
  mask: jax.Array,
  group_ids: jax.Array | None = None,
  num_groups: int | None = None,
  beta1=1.0,
  beta2=0.1,
  eps=1e-6,
) -> jax.Array:
  """GRPO-S sequence rewards shaped by mean entropy (arXiv 2508.04349, sequence-level GTPO).

  With `Hbar_i` the mean entropy over the valid tokens of response i, and `O+` (`O-`) the
  correct (wrong) responses of the group that have at least one valid token:

    r_i =  beta1 + beta2 * |O+| * (Hbar_i + eps) / sum_{k in O+} (Hbar_k + eps)          (i in O+)
    r_j = -beta1 - beta2 * |O-| * (Hbar_j + eps)^-1 / sum_{k in O-} (Hbar_k + eps)^-1    (j in O-)

  Args:
    entropies: [..., G, T] (or [N, T]) float32 token entropies of the rollout policy.
    correct: [..., G] (or [N]) bool.
    mask: bool, the shape of `entropies`.
    group_ids, num_groups: the `group_ids` layout (see the module docstring).
    beta1, beta2: weights of outcome and entropy bonus (traceable scalars; defaults 1 and 0.1,
      unverified).
    eps: added to every mean entropy (traceable scalar).

  Returns:
    float32 `[..., G]` (or `[N]`) rewards; 0 for a response without valid tokens.
  """
  entropies, correct, mask = _token_inputs(entropies, correct, mask)
  groups = _Groups(group_ids, num_groups, correct.shape)
  beta1, beta2, eps = (_scalar(n, x) for n, x in (('beta1', beta1), ('beta2', beta2), ('eps', eps)))
  hbar, member = _mean_entropy(entropies, mask)
  pos, neg = member & correct, member & ~correct
  h = hbar + eps
  n_pos = groups.sum_responses(pos.astype(jnp.float32))
  n_neg = groups.sum_responses(neg.astype(jnp.float32))
  r_pos = beta1 + beta2 * n_pos * _shares(h, pos, groups.sum_responses)
  r_neg = -beta1 - beta2 * n_neg * _shares(1.0 / h, neg, groups.sum_responses)
  return jnp.where(pos, r_pos, jnp.where(neg, r_neg, 0.0))


def grpo_s_advantages(
  entropies: jax.Array,
  correct: jax.Array,
  mask: jax.Array,
  group_ids: jax.Array | None = None,
  num_groups: int | None = None,
  beta1=1.0,
  beta2=0.1,
  pooling: str = 'joint',
  eps=1e-6,
  std_eps=1e-6,
) -> jax.Array:
  """GRPO-S advantages: `grpo_s_rewards` z-scored per group, broadcast to the tokens.

  Pooling as `gtpo_advantages`, over responses instead of tokens: `'joint'` (default) z-scores
  over the group's responses, `'separate'` over its correct and its wrong responses apart (and
  loses the outcome sign). A pool with fewer than 2 responses gives 0.

  Returns:
    float32 with the shape of `entropies`: the response's advantage at each valid token, 0
    where `mask` is False.
  """
  rewards = grpo_s_rewards(entropies, correct, mask, group_ids, num_groups, beta1, beta2, eps)
  correct = jnp.asarray(correct)
  mask = jnp.asarray(mask)
  groups = _Groups(group_ids, num_groups, correct.shape)
  member = jnp.any(mask, axis=-1)
  adv = _pooled(groups, pooling, rewards, member, correct, groups.zscore_responses, std_eps)
  return jnp.where(mask, adv[..., None], 0.0)


# ----------------------------------------------------------------------------- HICRA


def top_fraction_mask(scores: jax.Array, mask: jax.Array, fraction) -> jax.Array:
  """The `k = ceil(fraction * n)` highest-scoring valid tokens of each row (n valid tokens).

  Ties are broken by position (earlier first); `ceil` is taken with a 1e-3 tolerance so that
  float rounding of `fraction * n` cannot add a token. `fraction = 0` selects nothing.

  Args:
    scores: [..., T] float32.
    mask: bool [..., T]; only valid tokens are ranked and selected.
    fraction: traceable scalar in [0, 1].

  Returns:
    bool [..., T].
  """
  _checks.at_least_1d('scores', scores)
  scores = _checks.as_float('scores', scores)
  mask = _checks.check_mask(mask, 'scores', scores)
  fraction = _scalar('fraction', fraction)
  n = jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.float32)
  k = jnp.ceil(fraction * n - 1e-3)
  order = jnp.argsort(jnp.where(mask, -scores, jnp.inf), axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)
  return mask & (rank < k)


def hicra(advantages: jax.Array, planning: jax.Array, mask: jax.Array, alpha=0.2) -> jax.Array:
  """HICRA, the paper's form (arXiv 2509.03646): `A + alpha * |A| * 1[t in S]`.

  Planning tokens (`planning`, the set S) get `(1 + alpha) A` where `A > 0` and
  `(1 - alpha) A` where `A < 0`; other tokens keep `A`. With an empty S this is exactly the
  input (GRPO when `advantages` are GRPO's). alpha = 0.2 is unverified.

  Args:
    advantages: [..., T] float32 token advantages (e.g. GRPO's, broadcast to the tokens).
    planning: bool [..., T], the planning set S.
    mask: bool [..., T].
    alpha: traceable scalar.

  Returns:
    float32 [..., T]; 0 where `mask` is False.
  """
  _checks.at_least_1d('advantages', advantages)
  advantages = _checks.as_float('advantages', advantages)
  mask = _checks.check_mask(mask, 'advantages', advantages)
  planning = jnp.asarray(planning)
  if planning.dtype != jnp.bool_:
    raise TypeError(f'`planning` must be a bool array; got dtype {planning.dtype}.')
  _checks.same_shape('advantages', advantages, planning=planning)
  alpha = _scalar('alpha', alpha)
  out = advantages + jnp.where(planning, alpha * jnp.abs(advantages), 0.0)
  return jnp.where(mask, out, 0.0)


def hicra_official(
  advantages: jax.Array,
  entropies: jax.Array,
  mask: jax.Array,
  group_ids: jax.Array | None = None,
  num_groups: int | None = None,
  alpha=0.2,
  top_fraction=0.3,
) -> jax.Array:
  """HICRA as in the later-released code (arXiv 2509.03646): `A *= 1 + alpha` on a subset.

  A token's advantage is multiplied by `1 + alpha` when (i) its entropy is among the top
  `top_fraction` of its response (`top_fraction_mask`: the ceil(0.3 n) highest of its n valid
  tokens), (ii) its advantage is positive, and (iii) its response is longer than the mean
  length of its group (strictly; mean over all G responses of the group). Everything else is
  unchanged, so negative advantages are never touched (unlike the paper's form). The exact
  top-30% rule (count vs. quantile threshold, ties) is our operationalisation. With
  `top_fraction = 0` this is exactly the input.

  Args:
    advantages: [..., G, T] (or [N, T]) float32; with sequence-level advantages (GRPO)
      condition (ii) is "responses with A > 0".
    entropies: float32 token entropies, the shape of `advantages`.
    mask: bool, the shape of `advantages`.
    group_ids, num_groups: the `group_ids` layout (see the module docstring).
    alpha, top_fraction: traceable scalars (defaults 0.2 and 0.3).

  Returns:
    float32 with the shape of `advantages`; 0 where `mask` is False.
  """
  advantages = _checks.as_float('advantages', advantages)
  if advantages.ndim < 2:
    raise ValueError(
      f'`advantages` must be [..., G, T] (or [N, T] with group_ids); got {advantages.shape}.'
    )
  entropies = _checks.as_float('entropies', entropies)
  _checks.same_shape('advantages', advantages, entropies=entropies)
  mask = _checks.check_mask(mask, 'advantages', advantages)
  groups = _Groups(group_ids, num_groups, advantages.shape[:-1])
  alpha = _scalar('alpha', alpha)
  lengths = jnp.sum(mask, axis=-1, dtype=jnp.float32)
  count = groups.sum_responses(jnp.ones_like(lengths))
  long = lengths > groups.sum_responses(lengths) / count
  chosen = top_fraction_mask(entropies, mask, top_fraction) & long[..., None] & (advantages > 0)
  return jnp.where(mask, jnp.where(chosen, advantages * (1.0 + alpha), advantages), 0.0)


# ----------------------------------------------------------------------------- attention metrics


def _attention(attention, mask):
  attention = _checks.as_float('attention', attention)
  if attention.ndim == 5:  # [B, layers, H, T, T]: every (layer, head) pair is a head.
    b, layers, heads, t, _ = attention.shape
    attention = attention.reshape(b, layers * heads, t, t)
  if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
    raise ValueError(
      f'`attention` must be [B, H, T, T] or [B, layers, H, T, T]; got {attention.shape}.'
    )
  b, _, t, _ = attention.shape
  if mask is None:
    return attention, jnp.ones((b, t), jnp.bool_)
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise TypeError(f'`mask` must be a bool array; got dtype {mask.dtype}.')
  if tuple(mask.shape) != (b, t):
    raise ValueError(f'`mask` must have shape {(b, t)} for `attention`; got {mask.shape}.')
  return attention, mask


def _head_mean(attention, heads):
  """Mean over the selected heads: [B, H, T, T] -> [B, T, T]; 0 if no head is selected."""
  num_heads = attention.shape[1]
  if heads is None:
    return jnp.mean(attention, axis=1)
  heads = jnp.asarray(heads)
  if heads.dtype != jnp.bool_ or tuple(heads.shape) != (num_heads,):
    raise ValueError(
      f'`heads` must be a bool [{num_heads}] selection (layers * heads when `attention` is '
      f'5-D); got {heads.dtype} {heads.shape}.'
    )
  w = heads.astype(jnp.float32)
  return jnp.einsum('bhts,h->bts', attention, w) / jnp.maximum(jnp.sum(w), 1.0)


def _offsets(t):
  idx = jnp.arange(t)
  return (idx[:, None] - idx[None, :]).astype(jnp.float32)  # [query t, key s] = t - s


def mean_attention_distance(
  attention: jax.Array, query_mask: jax.Array | None = None, key_mask: jax.Array | None = None
) -> jax.Array:
  """Per-head mean backward attention distance, the statistic that splits heads.

  `D_h = mean over valid queries (b, t) of sum_{s <= t, key_mask[b, s]} A^h_{b,t,s} (t - s)`,
  with distances in columns (equal to token distances when padding only precedes the prompt
  and follows the response). Our operationalisation of the local/global head split of arXiv
  2510.13554.

  Args:
    attention: [B, H, T, T] (query, key) attention probabilities, or [B, layers, H, T, T]
      (then each (layer, head) pair is one of layers * H heads).
    query_mask: optional bool [B, T]; the queries averaged over (e.g. response tokens).
    key_mask: optional bool [B, T]; the keys counted.

  Returns:
    float32 [H] (or [layers * H]); 0 for every head if no query is valid.
  """
  attention, query_mask = _attention(attention, query_mask)
  _, key_mask = _attention(attention, key_mask)
  t = attention.shape[-1]
  dist = jnp.maximum(_offsets(t), 0.0)
  per_query = jnp.einsum('bhts,ts,bs->bht', attention, dist, key_mask.astype(jnp.float32))
  q = query_mask.astype(jnp.float32)
  return jnp.einsum('bht,bt->h', per_query, q) / jnp.maximum(jnp.sum(q), 1.0)


def global_heads(distance: jax.Array) -> jax.Array:
  """Heads whose mean attention distance is above the median (the rest are local).

  Our operationalisation of the global/local head split of arXiv 2510.13554.

  Args:
    distance: float32 [H] from `mean_attention_distance`.

  Returns:
    bool [H]; True for global heads (strictly above the median).
  """
  distance = _checks.as_float('distance', distance)
  if distance.ndim != 1:
    raise ValueError(f'`distance` must be [H]; got shape {distance.shape}.')
  return distance > jnp.median(distance)


def fai(
  attention: jax.Array,
  mask: jax.Array | None = None,
  heads: jax.Array | None = None,
  query_mask: jax.Array | None = None,
) -> jax.Array:
  """Future Attention Influence (arXiv 2510.13554; our operationalisation).

  `FAI_s = (1 / |Q_s|) sum_{t in Q_s} Abar_{t,s}`, `Q_s` = the valid queries t > s, and
  `Abar` the attention averaged over the selected heads (the global heads in the paper's use).
  High FAI marks "anchor" tokens that later tokens keep attending to.

  Args:
    attention: [B, H, T, T] or [B, layers, H, T, T] attention probabilities (query, key).
    mask: optional bool [B, T]; tokens whose FAI is computed (0 elsewhere).
    heads: optional bool [H] (or [layers * H]) selection; None averages all heads.
    query_mask: optional bool [B, T]; the queries that count (default: `mask`).

  Returns:
    float32 [B, T]; 0 where `mask` is False or no valid query follows s (e.g. the last token).
  """
  attention, mask = _attention(attention, mask)
  _, query_mask = _attention(attention, mask if query_mask is None else query_mask)
  abar = _head_mean(attention, heads)
  later = (_offsets(attention.shape[-1]) > 0).astype(jnp.float32)  # [t, s]: t > s
  q = query_mask.astype(jnp.float32)
  total = jnp.einsum('bts,ts,bt->bs', abar, later, q)
  count = jnp.einsum('ts,bt->bs', later, q)
  return jnp.where(mask & (count > 0), total / jnp.maximum(count, 1.0), 0.0)


def waad(
  attention: jax.Array, mask: jax.Array | None = None, heads: jax.Array | None = None, window=4.0
) -> jax.Array:
  """Windowed Average Attention Distance (arXiv 2510.13554; our operationalisation).

  `WAAD_t = sum_{s <= t, mask_s} Abar_{t,s} * min(t - s, W)`, `Abar` the attention averaged
  over the selected heads (the local heads in the paper's use). Spikes mark "preplan" tokens
  that look far back. The window W (default 4) is unverified.

  Args:
    attention: [B, H, T, T] or [B, layers, H, T, T] attention probabilities (query, key).
    mask: optional bool [B, T]; valid tokens (keys counted and queries reported).
    heads: optional bool [H] (or [layers * H]) selection; None averages all heads.
    window: W, traceable scalar.

  Returns:
    float32 [B, T]; 0 where `mask` is False.
  """
  attention, mask = _attention(attention, mask)
  window = _scalar('window', window)
  abar = _head_mean(attention, heads)
  off = _offsets(attention.shape[-1])
  dist = jnp.where(off >= 0, jnp.minimum(off, window), 0.0)
  out = jnp.einsum('bts,ts,bs->bt', abar, dist, mask.astype(jnp.float32))
  return jnp.where(mask, out, 0.0)
