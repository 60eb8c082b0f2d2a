"""Host-side bookkeeping for Monte-Carlo completions of many shared prefixes.

Host-side by design, like `checkpoint`/`metrics`: nothing here is traced. A value provider
for VinePPO (arXiv 2410.01679) or SPO (arXiv 2505.23564) turns a batch into states
(`credit.mc.step_prefixes`: [B, S, L] tokens/mask and which states exist), then

  plan = prefixes.plan(tokens, mask, state_valid)     # dedupe, bucket U to a power of two
  samples = sample_fn(params, key, plan.tokens, plan.mask)   # sampling.sample_from_prefixes
  v = credit.mc.mc_values(rewards, finished, num_samples)    # [U_bucket]
  mc_values = plan.scatter(v)                         # [B, S], 0 at states that do not exist

Identical states (e.g. s_0 = the prompt, shared by the G responses of a group, or two
responses that agree on their first steps) are completed once. Bucketing U up to the next
power of two keeps the number of distinct batch shapes, hence compilations of the jitted
sampler, logarithmic in the batch size; the padding rows copy the first unique prefix and
their results are ignored.
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import Optional

import numpy as np

from jaxca.credit import mc


@dataclasses.dataclass(frozen=True)
class UniquePrefixes:
  """Distinct prefixes of a set of rows.

  Attributes:
    tokens: [U, L] the first row of each distinct prefix (layout kept as given).
    mask: [U, L] bool, its valid tokens.
    index: [U] int, the row of `tokens`/`mask` in the input (first occurrence).
    inverse: [N] int, the unique prefix of each input row: `tokens[inverse]` has the same
      valid-token sequence as the input rows.
  """

  tokens: np.ndarray
  mask: np.ndarray
  index: np.ndarray
  inverse: np.ndarray


def unique_prefixes(tokens, mask) -> UniquePrefixes:
  """De-duplicates rows by their sequence of valid tokens (padding layout is ignored).

  Two rows are the same prefix iff their valid tokens, read in order, are equal; where the
  padding sits does not matter (the policy sees positions `cumsum(valid) - 1`). Unique
  prefixes are listed in order of first occurrence.

  Args:
    tokens: [N, L] integer token ids (>= 0).
    mask: [N, L] bool, True for the tokens of the prefix.

  Returns:
    `UniquePrefixes`.
  """
  tokens = np.asarray(tokens)
  mask = np.asarray(mask)
  if tokens.ndim != 2 or mask.shape != tokens.shape or mask.dtype != np.bool_:
    raise ValueError(
      f'`tokens` must be [N, L] and `mask` a bool array of the same shape; got '
      f'{tokens.shape} and {mask.dtype}{mask.shape}.'
    )
  if tokens.size and tokens[mask].min(initial=0) < 0:
    raise ValueError('`tokens` must be >= 0 at valid positions.')
  n, length = tokens.shape
  if n == 0:
    empty = np.zeros((0,), np.int64)
    return UniquePrefixes(tokens, mask, empty, empty)
  # Canonical form: valid tokens packed to the right, -1 before them (no token id is -1, so
  # prefixes of different lengths never collide).
  order = np.argsort(mask, axis=1, kind='stable')  # invalid first, valid in order after
  canon = np.where(np.sort(mask, axis=1), np.take_along_axis(tokens, order, axis=1), -1)
  _, first, inverse = np.unique(canon, axis=0, return_index=True, return_inverse=True)
  inverse = inverse.reshape(-1)
  by_occurrence = np.argsort(first, kind='stable')
  rank = np.empty_like(by_occurrence)
  rank[by_occurrence] = np.arange(len(by_occurrence))
  index = first[by_occurrence]
  del length
  return UniquePrefixes(tokens[index], mask[index], index, rank[inverse])


def bucket_size(n: int, minimum: int = 1) -> int:
  """The smallest power of two >= max(n, minimum) (at least 1)."""
  if n < 0 or minimum < 1:
    raise ValueError(f'need n >= 0 and minimum >= 1; got n={n}, minimum={minimum}.')
  size = max(int(n), int(minimum), 1)
  return 1 << (size - 1).bit_length()


def pad_rows(x, size: int) -> np.ndarray:
  """`x` [U, ...] padded to `size` rows by repeating row 0 (results on them are ignored)."""
  x = np.asarray(x)
  if not 1 <= len(x) <= size:
    raise ValueError(f'need 1 <= rows ({len(x)}) <= size ({size}).')
  return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)], axis=0)


@dataclasses.dataclass(frozen=True)
class PrefixPlan:
  """De-duplicated, bucketed prefixes of a [B, S] grid of states (see the module docstring).

  Attributes:
    tokens: [U_bucket, L] prefixes to sample from (the first `num_unique` rows are real).
    mask: [U_bucket, L] bool.
    num_unique: U, the number of distinct states.
    inverse: [B, S] int, the unique prefix of each state; -1 where the state does not exist.
    rows: [U_bucket] int, the batch row b of the state each prefix was taken from (padding
      rows repeat row 0's), to look up per-row data such as the verifier's answer.
  """

  tokens: np.ndarray
  mask: np.ndarray
  num_unique: int
  inverse: np.ndarray
  rows: np.ndarray = None

  @property
  def bucket(self) -> int:
    return len(self.tokens)

  def scatter(self, values, fill: float = 0.0) -> np.ndarray:
    """[U_bucket] (or [U]) per-prefix values -> [B, S] float32 per state (`fill` where absent)."""
    values = np.asarray(values)
    if values.ndim != 1 or len(values) < self.num_unique:
      raise ValueError(f'`values` must be [>= {self.num_unique}]; got {values.shape}.')
    out = np.where(self.inverse >= 0, values[np.maximum(self.inverse, 0)], fill)
    return out.astype(np.float32)


def plan(tokens, mask, state_valid, *, minimum_bucket: int = 1) -> PrefixPlan:
  """De-duplicates the existing states of a [B, S] grid and buckets their number.

  Args:
    tokens: [B, S, L] integer prefix tokens (e.g. from `credit.mc.step_prefixes`).
    mask: [B, S, L] bool.
    state_valid: [B, S] bool, which states exist (others are skipped).
    minimum_bucket: smallest batch of prefixes to sample (a power of two keeps all buckets
      powers of two).

  Returns:
    `PrefixPlan`; with no existing state at all, one padding row (copied from state [0, 0]).
  """
  tokens = np.asarray(tokens)
  mask = np.asarray(mask)
  state_valid = np.asarray(state_valid)
  if tokens.ndim != 3 or mask.shape != tokens.shape or state_valid.shape != tokens.shape[:2]:
    raise ValueError(
      f'need tokens/mask [B, S, L] and state_valid [B, S]; got {tokens.shape}, {mask.shape}, '
      f'{state_valid.shape}.'
    )
  b, s, length = tokens.shape
  rows = np.flatnonzero(state_valid.reshape(-1))
  flat_t = tokens.reshape(b * s, length)
  flat_m = mask.reshape(b * s, length)
  uniq = unique_prefixes(flat_t[rows], flat_m[rows])
  inverse = np.full((b * s,), -1, np.int64)
  inverse[rows] = uniq.inverse
  u = len(uniq.index)
  size = bucket_size(u, minimum_bucket)
  if u == 0:
    uniq_t, uniq_m, source = flat_t[:1], flat_m[:1], np.zeros((1,), np.int64)
  else:
    uniq_t, uniq_m, source = uniq.tokens, uniq.mask, rows[uniq.index]
  return PrefixPlan(
    tokens=pad_rows(uniq_t, size),
    mask=pad_rows(uniq_m, size),
    num_unique=u,
    inverse=inverse.reshape(b, s),
    rows=pad_rows(source // s, size),
  )


@dataclasses.dataclass(frozen=True)
class MCResult:
  """Output of `mc_value_grid`.

  Attributes:
    values: [B, S] float32 MC value of each state; 0 where the state does not exist.
    num_unique: U, distinct states completed.
    bucket: rows actually sampled (U rounded up to a power of two).
    samples: the sampler's output for the bucket (rows `u * n + i`), for token counts.
  """

  values: np.ndarray
  num_unique: int
  bucket: int
  samples: Any


def mc_value_grid(
  sample_fn: Callable,
  score_fn: Callable,
  tokens,
  mask,
  state_valid,
  *,
  num_samples: int,
  minimum_bucket: int = 1,
) -> MCResult:
  """Monte-Carlo values of a [B, S] grid of states: dedupe, bucket, sample, score, scatter.

  Args:
    sample_fn: (prefixes [U_bucket, L], prefix_mask [U_bucket, L]) -> `sampling.Samples` with
      U_bucket * num_samples rows, e.g. a jitted `sampling.sample_from_prefixes` closed over
      the policy, parameters and a fresh key (it compiles once per bucket size).
    score_fn: (samples) -> (rewards [U_bucket * n] float, finished [U_bucket * n] bool), the
      verifier's reward of each completed response and whether it ended (`sampling.finished`).
    tokens: [B, S, L] prefix tokens (`credit.mc.step_prefixes`).
    mask: [B, S, L] bool.
    state_valid: [B, S] bool.
    num_samples: n, completions per state (must match `sample_fn`).
    minimum_bucket: smallest number of prefixes sampled at once.

  Returns:
    `MCResult`; unfinished completions score 0 (`credit.mc.mc_values`).
  """
  p = plan(tokens, mask, state_valid, minimum_bucket=minimum_bucket)
  samples = sample_fn(p.tokens, p.mask)
  rewards, finished = score_fn(samples)
  values = np.asarray(mc.mc_values(rewards, finished, num_samples))
  return MCResult(p.scatter(values), p.num_unique, p.bucket, samples)


def mc_step_values(
  complete_fn: Callable,
  tokens,
  mask,
  state_valid,
  batch,
  *,
  num_samples: int,
  minimum_bucket: int = 1,
  chunk: Optional[int] = None,
) -> MCResult:
  """Like `mc_value_grid`, for a verifier that needs per-row data (e.g. the answer).

  Args:
    complete_fn: (prefixes [U_bucket, L], prefix_mask [U_bucket, L], rows) ->
      (rewards [U_bucket * n], finished [U_bucket * n] bool, generated [U_bucket * n] int),
      where `rows` = {k: batch[k][plan.rows]} holds the batch data of each prefix's row;
      e.g. a jitted `lm.providers.mc_complete_and_score` closed over the policy, parameters
      and a fresh key.
    tokens, mask, state_valid: the [B, S] grid of states (`credit.mc.step_prefixes`).
    batch: dict of [B, ...] per-row arrays.
    num_samples: n, completions per state.
    minimum_bucket: smallest number of prefixes sampled at once.
    chunk: optional power of two; at most this many prefixes per `complete_fn` call (the
      bucket is cut into equal chunks, so one compile serves them all; bounds memory when
      there are many states, e.g. one per token boundary). `complete_fn` is then called
      once per chunk, in order: fold a call counter into its key for independent chunks.

  Returns:
    `MCResult` whose `samples` is `dict(generated=...)`: the number of tokens generated for
    the U real states (padding rows of the bucket excluded).
  """
  p = plan(tokens, mask, state_valid, minimum_bucket=minimum_bucket)
  rows = {k: np.asarray(v)[p.rows] for k, v in batch.items()}
  if chunk is None or p.bucket <= chunk:
    rewards, finished, generated = complete_fn(p.tokens, p.mask, rows)
  else:
    if chunk < 1 or chunk & (chunk - 1):
      raise ValueError(f'`chunk` must be a power of two; got {chunk}.')
    parts = []
    for s in range(0, p.bucket, chunk):
      sl = slice(s, s + chunk)
      parts.append(complete_fn(p.tokens[sl], p.mask[sl], {k: v[sl] for k, v in rows.items()}))
    rewards, finished, generated = (
      np.concatenate([np.asarray(x[i]) for x in parts]) for i in range(3)
    )
  values = np.asarray(mc.mc_values(rewards, finished, num_samples))
  real = int(np.asarray(generated)[: p.num_unique * num_samples].sum())
  return MCResult(p.scatter(values), p.num_unique, p.bucket, dict(generated=real))
