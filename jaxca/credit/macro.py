"""Macro actions (MA-RLHF, Chai et al., arXiv 2410.02743): termination rules and GAE over
macro actions.

A macro action is a run of consecutive valid tokens; the rules below label each valid token
with its macro's index (`step_ids [..., T]`, macros 0..n-1 of a row in order, -1 for masked
tokens), so every step-level tool (`ops.to_steps`, `ops.to_tokens`) applies. Masked tokens
are transparent: a rule sees the valid tokens only, in order. MA-RLHF's termination rules
(Sec. 3.2):
  * `ngram_step_ids`: fixed n-grams, a macro every n valid tokens;
  * `separator_step_ids`: parsing-based, a macro ends at each separator token (inclusive);
  * `perplexity_step_ids`: a new macro starts at token k when the next token's perplexity
    under the reference model is higher, ppl_{k+1} > ppl_k, i.e. log p_{k+1} < log p_k (the
    rule of the official code, `ppl_selection` in ernie-research/MA-RLHF).
`macro_gae` is PPO's GAE with the macros as the time steps (Sec. 3.3): each macro's value is
the critic's value at its first token (or the mean over its tokens), its reward the sum (or
mean) of its tokens' rewards, the discount gamma per macro, and the macro's advantage and
return are broadcast to its tokens.
"""

import jax
import jax.numpy as jnp

from jaxca import ops
from jaxca.credit import _checks
from jaxca.credit.gae import gae

VALUE_AT = ('start', 'mean')
REWARD_AGG = ('sum', 'mean')


def _rank(mask):
  """[..., T] int32: index of each valid token among the valid tokens of its row."""
  return jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1


def _label(starts, mask):
  """Step ids from macro-start flags at valid tokens (the first valid token always starts)."""
  first = mask & (_rank(mask) == 0)
  ids = jnp.cumsum(mask & (starts | first), axis=-1, dtype=jnp.int32) - 1
  return jnp.where(mask, ids, -1)


def ngram_step_ids(mask: jax.Array, n) -> jax.Array:
  """Fixed n-gram macros: valid token k (in order) is in macro k // n.

  Args:
    mask: [..., T] bool.
    n: macro length, a positive int (traceable).

  Returns:
    [..., T] int32 step ids, -1 where masked.
  """
  mask = jnp.asarray(mask, bool)
  n = jnp.asarray(n, jnp.int32)
  return jnp.where(mask, _rank(mask) // jnp.maximum(n, 1), -1)


def separator_step_ids(tokens: jax.Array, mask: jax.Array, separators) -> jax.Array:
  """Parsing-based macros: a macro ends at each valid token whose id is in `separators`.

  Args:
    tokens: [..., T] int token ids.
    mask: [..., T] bool.
    separators: a sequence of token ids (e.g. newline, ';', end of statement).

  Returns:
    [..., T] int32 step ids, -1 where masked.
  """
  mask = jnp.asarray(mask, bool)
  sep = jnp.isin(jnp.asarray(tokens), jnp.asarray(list(separators))) & mask
  closed_before = jnp.cumsum(sep, axis=-1, dtype=jnp.int32) - sep.astype(jnp.int32)
  return jnp.where(mask, closed_before, -1)


def _next_valid(x, mask, fill):
  """[..., T]: x at the next valid token after t (fill where there is none)."""
  t = x.shape[-1]
  pos = jnp.where(mask, jnp.arange(t, dtype=jnp.int32), t)
  nxt = jax.lax.cummin(pos, axis=pos.ndim - 1, reverse=True)
  nxt = jnp.concatenate([nxt[..., 1:], jnp.full(nxt.shape[:-1] + (1,), t, jnp.int32)], axis=-1)
  got = jnp.take_along_axis(x, jnp.minimum(nxt, t - 1), axis=-1)
  return jnp.where(nxt < t, got, fill), nxt < t


def perplexity_step_ids(log_probs: jax.Array, mask: jax.Array) -> jax.Array:
  """Perplexity-based macros: valid token k starts a macro when log p_{k+1} < log p_k.

  `log_probs` are the reference model's log-probabilities of the sampled tokens (the official
  code uses the reference model's per-token perplexity, exp(-log p)); k + 1 is the next valid
  token. The first valid token always starts a macro.

  Returns:
    [..., T] int32 step ids, -1 where masked.
  """
  mask = jnp.asarray(mask, bool)
  lp = jnp.where(mask, _checks.as_float('log_probs', log_probs), 0.0)
  nxt, has = _next_valid(lp, mask, 0.0)
  return _label(has & (nxt < lp), mask)


def macro_gae(
  rewards: jax.Array,
  values: jax.Array,
  step_ids: jax.Array,
  gamma,
  lambda_,
  mask: jax.Array,
  value_at: str = 'start',
  reward_agg: str = 'sum',
) -> tuple[jax.Array, jax.Array]:
  """GAE over macro actions, broadcast back to tokens (MA-RLHF, arXiv 2410.02743, Sec. 3.3).

  With macros i = 0..n-1 of a row, R_i their rewards, V_i their values and V_n = 0:

    delta_i = R_i + gamma V_{i+1} - V_i,   A_i = delta_i + gamma lambda A_{i+1},
    G_i = A_i + V_i;

  every token of macro i gets A_i and G_i. Tokens in no macro (`step_ids` -1) and masked
  tokens get 0.

  Args:
    rewards, values: [..., T] float32 token rewards and critic values V(s_t).
    step_ids: [..., T] int macro of each token (0..n-1 in order along the row), -1 for none.
    gamma, lambda_: scalars (traceable).
    mask: [..., T] bool.
    value_at: 'start' (the value at the macro's first token) or 'mean' (over its tokens: the
      official code's `value_function='equal'`).
    reward_agg: 'sum' or 'mean' (the official code applies its value function to the rewards
      too).

  Returns:
    (advantages, returns), [..., T] float32, 0 where masked or in no macro.
  """
  _checks.choice('value_at', value_at, VALUE_AT)
  _checks.choice('reward_agg', reward_agg, REWARD_AGG)
  rewards = _checks.as_float('rewards', rewards)
  values = _checks.as_float('values', values)
  mask = jnp.asarray(mask, bool)
  s = rewards.shape[-1]
  sid = jnp.where(mask, jnp.asarray(step_ids, jnp.int32), -1)
  count = ops.to_steps(rewards, sid, s, 'count')
  valid = count > 0
  r_steps = ops.to_steps(rewards, sid, s, reward_agg)
  if value_at == 'start':
    pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), sid.shape)
    first = ops.to_steps(jnp.where(sid >= 0, pos, s), sid, s, 'min')
    v_steps = jnp.take_along_axis(values, jnp.clip(first, 0, s - 1), axis=-1)
  else:
    v_steps = ops.to_steps(values, sid, s, 'mean')
  v_steps = jnp.where(valid, v_steps, 0.0)
  d = jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), r_steps.shape)
  boot = jnp.zeros(r_steps.shape[:-1], jnp.float32)
  a_steps, g_steps = gae(r_steps, v_steps, d, boot, lambda_, mask=valid)
  return ops.to_tokens(a_steps, sid), ops.to_tokens(g_steps, sid)
