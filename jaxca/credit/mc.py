"""Monte-Carlo step values and segment advantages: VinePPO and SPO-chain.

VinePPO (Kazemnejad et al. 2024, arXiv 2410.01679) estimates the value of the state before
each reasoning step, `V(s_i)` with s_0 = the prompt and s_i = the prompt plus the first i
steps, as the mean reward of K completions from s_i, and gives every token of step i

  A_i = V(s_{i+1}) - V(s_i)   (i < n - 1),    A_{n-1} = R - V(s_{n-1})        (Eq. 5, gamma = 1)

SPO-chain (Guo et al. 2025, arXiv 2505.23564, Sec. 3) cuts the response before
low-probability tokens instead: with `p_j = pi_old(y_j)`, the cutpoints are the tokens j
with `p_j < threshold` (0.9), keeping every `interval`-th one (the authors' code defaults to
5). Segment k runs from the k-th cut token to the token before the next one; its advantage
is the value after the segment minus the value before it (the last segment ends with R), so
it is the VinePPO formula over segments. The tokens before the first cut form no segment
and get 0 (the official code has no value for the prompt unless the first token is a cut:
"the first-segment-zero" behaviour). Finally `A_j = 0` where `p_j > threshold`, and the
policy loss and the advantage whitening use only the tokens with `p_j < threshold`
(`prob_mask`).

Conventions: time (tokens, T) is the last axis of token arrays and steps (S) the last axis
of step arrays, with any number of leading batch axes. `step_ids [..., T]` int32 is the step
of each token in [0, S), -1 for tokens in no step (masked, or before SPO's first cut); steps
of a row are 0..n-1 and contiguous. `mc_values [..., S]` float32 is `V(state before step
i)`; entries at i >= n are ignored. `mask [..., T]` bool is True where the policy acted;
masked tokens are transparent (their output is 0 and they change nothing else).
"""

import jax
import jax.numpy as jnp

from jaxca.credit import _checks


def mc_values(rewards, finished, num_samples: int, unfinished_reward=0.0) -> jax.Array:
  """Mean reward of the completions of each prefix.

  `V(s) = (1/K) sum_k r_k`, with `r_k = unfinished_reward` for a completion that did not
  finish (VinePPO/SPO score unfinished rollouts with the task's unfinished penalty; 0 here).

  Args:
    rewards: [U * K] float32 reward of each completion (verifier output), rows `u * K + k`
      as `sampling.sample_from_prefixes` lays them out.
    finished: [U * K] bool, the completion ended (emitted EOS; `sampling.finished`).
    num_samples: K (static).
    unfinished_reward: scalar float32 (traceable) given to unfinished completions.

  Returns:
    [U] float32 values.
  """
  rewards = _checks.as_float('rewards', rewards)
  finished = jnp.asarray(finished)
  if rewards.ndim != 1 or finished.shape != rewards.shape or finished.dtype != jnp.bool_:
    raise ValueError(
      f'`rewards` must be [U * K] float and `finished` bool of the same shape; got '
      f'{rewards.shape} and {finished.dtype}{finished.shape}.'
    )
  if not isinstance(num_samples, int) or num_samples < 1 or rewards.shape[0] % num_samples:
    raise ValueError(
      f'`num_samples` must be a positive int dividing {rewards.shape[0]}; got {num_samples!r}.'
    )
  unfinished_reward = _checks.as_float('unfinished_reward', unfinished_reward)
  scores = jnp.where(finished, rewards, unfinished_reward)
  return jnp.mean(scores.reshape(-1, num_samples), axis=1)


def _lead(x, ndim: int):
  """`x` with leading unit axes up to rank `ndim` (explicit broadcasting, no rank promotion)."""
  return jnp.reshape(x, (1,) * (ndim - x.ndim) + x.shape)


def _check_steps(step_ids, mc_values_, outcome, mask):
  _checks.at_least_1d('step_ids', step_ids)
  step_ids = jnp.asarray(step_ids)
  if not jnp.issubdtype(step_ids.dtype, jnp.integer):
    raise TypeError(f'`step_ids` must be an integer array; got {step_ids.dtype}.')
  mc_values_ = _checks.as_float('mc_values', mc_values_)
  _checks.at_least_1d('mc_values', mc_values_)
  if mc_values_.shape[:-1] != step_ids.shape[:-1]:
    raise ValueError(
      f'`mc_values` {mc_values_.shape} must have the batch shape of `step_ids` '
      f'{step_ids.shape} (all axes but the last).'
    )
  outcome = _checks.as_float('outcome', outcome)
  _checks.batch_shape('outcome', outcome, 'step_ids', step_ids)
  mask = _checks.check_mask(mask, 'step_ids', step_ids)
  return step_ids.astype(jnp.int32), mc_values_, outcome, mask


def vineppo_advantages(step_ids, mc_values_, outcome, mask=None) -> jax.Array:
  """VinePPO step advantages broadcast to the tokens of each step.

    A_i = V(s_{i+1}) - V(s_i)  for i < n - 1,   A_{n-1} = R - V(s_{n-1}),
    token t of step i takes A_i; tokens in no step take 0.

  n is the number of steps of the row (1 + the largest step id of a valid token), so
  responses with fewer steps (malformed, truncated) use the same formula over their own
  steps. A row with a single step gets `R - V(s_0)`.

  Args:
    step_ids: [..., T] int step of each token in [0, S); -1 for no step.
    mc_values_: [..., S] float32, `V(s_i)` (mean reward of completions from the prompt plus
      the first i steps); entries at i >= n are ignored.
    outcome: [...] float32 R, the response's reward.
    mask: optional [..., T] bool.

  Returns:
    [..., T] float32 advantages (0 where `mask` is False or `step_ids` < 0).

  References:
    Kazemnejad et al. (2024), https://arxiv.org/abs/2410.01679, Eq. 5 and Sec. 4.
  """
  step_ids, values, outcome, mask = _check_steps(step_ids, mc_values_, outcome, mask)
  num_steps = values.shape[-1]
  in_step = mask & (step_ids >= 0)
  n = jnp.max(jnp.where(in_step, step_ids + 1, 0), axis=-1)  # [...]
  i = _lead(jnp.arange(num_steps), values.ndim)
  next_values = jnp.concatenate([values[..., 1:], jnp.zeros_like(values[..., :1])], axis=-1)
  is_last = i == (n[..., None] - 1)
  step_adv = jnp.where(is_last, outcome[..., None], next_values) - values  # [..., S]
  picked = jnp.take_along_axis(step_adv, jnp.clip(step_ids, 0, num_steps - 1), axis=-1)
  return jnp.where(in_step, picked, 0.0)


def _probs(log_probs, mask):
  log_probs = _checks.as_float('log_probs', log_probs)
  mask = _checks.check_mask(mask, 'log_probs', log_probs)
  return jnp.exp(jnp.where(mask, log_probs, 0.0)), mask


def prob_mask(log_probs, mask=None, threshold=0.9) -> jax.Array:
  """SPO's loss mask: valid tokens with `pi_old(y_t) = exp(log_probs) < threshold`.

  Args:
    log_probs: [..., T] float32 log pi_old of the sampled tokens.
    mask: optional [..., T] bool.
    threshold: scalar float32 (traceable); SPO uses 0.9.

  Returns:
    [..., T] bool.

  References:
    Guo et al. (2025), https://arxiv.org/abs/2505.23564, Sec. 3.3.
  """
  _checks.at_least_1d('log_probs', log_probs)
  probs, mask = _probs(log_probs, mask)
  return mask & (probs < _checks.as_float('threshold', threshold))


def spo_segments(log_probs, mask=None, threshold=0.9, interval=1) -> jax.Array:
  """SPO-chain's probability-guided segments as step ids.

  Cut tokens: the valid tokens j with `p_j = exp(log_probs_j) < threshold`, keeping the
  0th, interval-th, 2*interval-th, ... of them in order. A cut at token j is the state
  before j (the official code's cutpoint j - 1; -1 is the prompt). Segment k is the k-th
  cut token and the valid tokens up to the next cut; valid tokens before the first cut are
  in no segment (-1).

  Args:
    log_probs: [..., T] float32 log pi_old of the sampled tokens.
    mask: optional [..., T] bool; masked tokens are skipped (never cut, id -1).
    threshold: scalar float32 (traceable), 0.9 in the paper.
    interval: scalar (traceable; an int, or a float32 hyper-parameter rounded to the nearest
      int), keep every interval-th candidate (>= 1).

  Returns:
    [..., T] int32 segment ids, usable as `step_ids` with `vineppo_advantages` and
    `step_prefixes` (the number of segments is at most T).

  References:
    Guo et al. (2025), https://arxiv.org/abs/2505.23564, Sec. 3.1 (cutpoint-based partition).
  """
  _checks.at_least_1d('log_probs', log_probs)
  probs, mask = _probs(log_probs, mask)
  threshold = _checks.as_float('threshold', threshold)
  interval = jnp.maximum(jnp.round(jnp.asarray(interval, jnp.float32)).astype(jnp.int32), 1)
  low = mask & (probs < threshold)
  rank = jnp.cumsum(low, axis=-1, dtype=jnp.int32) - 1
  cut = low & (rank % interval == 0)
  seg = jnp.cumsum(cut, axis=-1, dtype=jnp.int32) - 1
  return jnp.where(mask, seg, -1)


def spo_chain_advantages(
  log_probs, mc_values_, outcome, mask=None, threshold=0.9, interval=1
) -> jax.Array:
  """SPO-chain token advantages (the authors' chain advantage, prob-masked).

  Segments from `spo_segments`; `mc_values_[..., k]` is the value of the state before the
  k-th cut token. Segment k takes `V(after) - V(before)`, the last one `R - V(before)`;
  tokens before the first cut take 0; then `A_t = 0` where `p_t > threshold`.

  Args:
    log_probs: [..., T] float32 log pi_old of the sampled tokens.
    mc_values_: [..., S] float32 values at the cuts (S <= T; entries past the row's
      number of cuts are ignored).
    outcome: [...] float32 R.
    mask: optional [..., T] bool.
    threshold: scalar float32 (traceable).
    interval: scalar int (traceable).

  Returns:
    [..., T] float32 advantages; 0 where `mask` is False. Train on `prob_mask` tokens only.

  References:
    Guo et al. (2025), https://arxiv.org/abs/2505.23564, Sec. 3.2-3.3.
  """
  _checks.at_least_1d('log_probs', log_probs)
  probs, mask = _probs(log_probs, mask)
  seg = spo_segments(log_probs, mask, threshold, interval)
  adv = vineppo_advantages(seg, mc_values_, outcome, mask)
  return jnp.where(probs > _checks.as_float('threshold', threshold), 0.0, adv)


def step_prefixes(prompts, prompt_mask, responses, mask, step_ids, num_steps: int):
  """The states before each step, as prefixes for `sampling.sample_from_prefixes`.

  State i is the prompt plus the valid response tokens before the first token of step i
  (VinePPO: s_0 = the prompt, s_i = the prompt and the first i steps; SPO: the prefix
  before the i-th cut token). Tokens are not moved: every state of a row is the row
  `prompt ++ response` with a mask that keeps the prompt's tokens and the response tokens
  before the step.

  Args:
    prompts: [..., Lp] int32 prompt tokens (padding anywhere).
    prompt_mask: [..., Lp] bool.
    responses: [..., T] int32 response tokens.
    mask: [..., T] bool, valid response tokens.
    step_ids: [..., T] int step of each token (-1: none).
    num_steps: S (static), the number of states per row.

  Returns:
    (tokens [..., S, Lp + T] int32, prefix_mask [..., S, Lp + T] bool, state_valid [..., S]
    bool: step i occurs in the row).
  """
  prompts = jnp.asarray(prompts)
  prompt_mask = jnp.asarray(prompt_mask)
  responses = jnp.asarray(responses)
  mask = _checks.check_mask(mask, 'responses', responses)
  step_ids = jnp.asarray(step_ids)
  _checks.same_shape('responses', responses, step_ids=step_ids)
  _checks.same_shape('prompts', prompts, prompt_mask=prompt_mask)
  if prompt_mask.dtype != jnp.bool_:
    raise TypeError(f'`prompt_mask` must be bool; got {prompt_mask.dtype}.')
  if prompts.shape[:-1] != responses.shape[:-1]:
    raise ValueError(f'batch shapes differ: prompts {prompts.shape}, responses {responses.shape}.')
  t = responses.shape[-1]
  rank = responses.ndim + 1
  pos = _lead(jnp.arange(t), rank)
  steps = _lead(jnp.arange(num_steps)[:, None], rank)
  member = (step_ids[..., None, :] == steps) & mask[..., None, :]  # [..., S, T]
  start = jnp.min(jnp.where(member, pos, t), axis=-1)  # [..., S]
  state_valid = jnp.any(member, axis=-1)
  before = mask[..., None, :] & (pos < start[..., None])  # [..., S, T]
  lead = prompts.shape[:-1] + (num_steps,)
  tokens = jnp.concatenate([prompts, responses], axis=-1).astype(jnp.int32)
  tokens = jnp.broadcast_to(tokens[..., None, :], lead + (tokens.shape[-1],))
  p_mask = jnp.broadcast_to(prompt_mask[..., None, :], lead + (prompt_mask.shape[-1],))
  return tokens, jnp.concatenate([p_mask, before], axis=-1), state_valid
