"""Batched autoregressive sampling from a `networks.transformer.Policy` with a KV cache.

`sample` is pure and jittable; the caller jits it, closing over the static arguments::

  fn = jax.jit(functools.partial(sampling.sample, policy, num_samples=8, max_new_tokens=64,
                                 eos_id=eos, pad_id=pad))
  samples = fn(params, key, prompts, prompt_mask)

With `use_cache=True` each prompt is prefilled ONCE (shape [P, Lp]), the cache is repeated
to the G samples, then a `lax.scan` decodes one column per step reading the cached keys and
values (no recomputation of the prefix). `use_cache=False` recomputes the full [B, Lp + N]
forward pass every step; it is the baseline of `experiments/bench_sampling.py` and a
cross-check in the tests. Both paths use the same per-step keys, so they sample the same
tokens up to float rounding of the logits.

`sample_from_prefixes` completes U prefixes (e.g. the partial responses whose Monte-Carlo
values VinePPO / SPO estimate) n times each with one prefill per prefix; `jaxca.prefixes`
de-duplicates the prefixes and buckets U on the host, `credit.mc.mc_values` averages the
completions' rewards (`finished` tells which completions ended; `compact` turns a completed
`prompt ++ response` state into a plain response for a verifier).

Log-probabilities are those of the policy the train step optimises at the sampling
temperature: `log_softmax(logits / temperature)[token]`. They equal
`networks.response_log_probs(policy.apply(params, s.tokens, s.valid).logits, s.tokens, Lp,
temperature=temperature)` on the masked positions (tested).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxca.networks import transformer


class Samples(NamedTuple):
  """G sampled responses per prompt; B = P * G rows, row `p * G + g` (contiguous groups).

  Attributes:
    tokens: [B, Lp + N] int32, the left-padded prompt followed by the response (pad_id after
      EOS).
    valid: [B, Lp + N] bool, the prompt mask followed by `mask`; feed with `tokens` to
      `Policy.apply`.
    responses: [B, N] int32 generated tokens (pad_id after EOS).
    log_probs: [B, N] float32 `log_softmax(logits / temperature)[token]` of each generated
      token (0 where `mask` is False).
    mask: [B, N] bool, True for generated tokens up to and including EOS.
    lengths: [B] int32 number of generated tokens (= mask.sum(-1); includes EOS).
  """

  tokens: jax.Array
  valid: jax.Array
  responses: jax.Array
  log_probs: jax.Array
  mask: jax.Array
  lengths: jax.Array


def _check_args(policy, prompts, prompt_mask, num_samples, max_new_tokens, eos_id, pad_id, temp):
  if prompts.ndim != 2 or not jnp.issubdtype(prompts.dtype, jnp.integer):
    raise ValueError(f'`prompts` must be an int [P, Lp] array; got {prompts.dtype}{prompts.shape}.')
  if tuple(prompt_mask.shape) != tuple(prompts.shape) or prompt_mask.dtype != jnp.bool_:
    raise ValueError(
      f'`prompt_mask` must be a bool array shaped like `prompts` {prompts.shape}; '
      f'got {prompt_mask.dtype}{prompt_mask.shape}.'
    )
  for name, value in (('num_samples', num_samples), ('max_new_tokens', max_new_tokens)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f'`{name}` must be a positive Python int; got {value!r}.')
  for name, value in (('eos_id', eos_id), ('pad_id', pad_id)):
    if not isinstance(value, int) or not 0 <= value < policy.vocab_size:
      raise ValueError(f'`{name}` must be an int in [0, {policy.vocab_size}); got {value!r}.')
  if prompts.shape[1] + max_new_tokens > policy.max_len:
    raise ValueError(
      f'prompt length {prompts.shape[1]} + `max_new_tokens` {max_new_tokens} exceeds the '
      f'policy max_len {policy.max_len}.'
    )
  if isinstance(temp, (int, float)) and not temp > 0:
    raise ValueError(f'`temperature` must be > 0; got {temp!r}.')


def sample(
  policy: transformer.Policy,
  params,
  key: jax.Array,
  prompts: jax.Array,
  prompt_mask: jax.Array,
  *,
  num_samples: int,
  max_new_tokens: int,
  temperature: float = 1.0,
  eos_id: int,
  pad_id: int,
  greedy: bool = False,
  use_cache: bool = True,
) -> Samples:
  """Samples `num_samples` responses of `max_new_tokens` tokens for every prompt.

  Args:
    policy: a `networks.transformer.Policy`.
    params: its parameters.
    key: PRNG key (ignored when `greedy`).
    prompts: [P, Lp] int32, LEFT-padded prompts; each row needs at least one real token.
      With `use_cache=True` any padding works (the first token is drawn from the logits at
      each row's last real token; see `sample_from_prefixes`).
    prompt_mask: [P, Lp] bool, True for real prompt tokens.
    num_samples: G, samples per prompt (static).
    max_new_tokens: N, generated columns (static); Lp + N <= policy.max_len.
    temperature: logits are divided by it before sampling and before the log-probs; may be
      traced.
    eos_id: end-of-sequence token; generation of a row stops after it.
    pad_id: token emitted (with mask False) after EOS.
    greedy: take the argmax instead of sampling.
    use_cache: decode with the KV cache (default) or recompute the full sequence every step.

  Returns:
    `Samples` with B = P * G rows, row `p * G + g`.
  """
  prompts = jnp.asarray(prompts)
  prompt_mask = jnp.asarray(prompt_mask)
  _check_args(
    policy, prompts, prompt_mask, num_samples, max_new_tokens, eos_id, pad_id, temperature
  )
  prompts = prompts.astype(jnp.int32)
  num_prompts, prompt_len = prompts.shape
  group, steps = num_samples, max_new_tokens
  batch, size = num_prompts * group, prompt_len + steps
  module = policy.module
  keys = jax.random.split(key, steps)

  def forward(tokens, valid, cache):
    return module.apply({'params': params}, tokens, valid, cache=cache)

  def choose(key, logits, done):
    """logits [B, V] float32 -> (token, log-prob, alive, done) after this step."""
    scaled = logits / temperature
    if greedy:
      token = jnp.argmax(scaled, axis=-1)
    else:
      token = jax.random.categorical(key, scaled, axis=-1)
    token = token.astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(scaled), token[:, None], axis=-1)[:, 0]
    alive = ~done
    token = jnp.where(alive, token, pad_id)
    logp = jnp.where(alive, logp, 0.0)
    done = done | (alive & (token == eos_id))
    return token, logp, alive, done

  done0 = jnp.zeros((batch,), jnp.bool_)
  rep = lambda x: jnp.repeat(x, group, axis=0)

  if use_cache:
    cache = transformer.init_cache(module, num_prompts, size)
    out, cache = forward(prompts, prompt_mask, cache)  # prefill once per prompt
    cache = cache._replace(
      layers=jax.tree.map(rep, cache.layers), valid=rep(cache.valid), count=rep(cache.count)
    )
    logits = rep(_at_last_valid(out.logits, prompt_mask))

    # Decode column i = 0 .. N-2 (then the last column below), stopping early once every row
    # has emitted EOS: the columns left are exactly what a full decode writes after EOS (pad,
    # log-prob 0, mask False), so the result is the same, at the cost of the longest response.
    def cond(carry):
      i, _, _, done, _ = carry
      return (i < steps - 1) & ~jnp.all(done)

    def body(carry):
      i, cache, logits, done, cols = carry
      token, logp, alive, done = choose(keys[i], logits, done)
      cols = tuple(
        jax.lax.dynamic_update_index_in_dim(c, x, i, axis=1)
        for c, x in zip(cols, (token, logp, alive))
      )
      out, cache = forward(token[:, None], alive[:, None], cache)
      return i + 1, cache, out.logits[:, 0], done, cols

    cols0 = (
      jnp.full((batch, steps), pad_id, jnp.int32),
      jnp.zeros((batch, steps), jnp.float32),
      jnp.zeros((batch, steps), jnp.bool_),
    )
    _, _, logits, done, cols = jax.lax.while_loop(
      cond, body, (jnp.int32(0), cache, logits, done0, cols0)
    )
    last = choose(keys[-1], logits, done)[:3]  # all pad if every row is done
    responses, log_probs, mask = (
      jax.lax.dynamic_update_index_in_dim(c, x.astype(c.dtype), steps - 1, axis=1)
      for c, x in zip(cols, last)
    )
  else:
    tokens0 = jnp.concatenate([rep(prompts), jnp.full((batch, steps), pad_id, jnp.int32)], axis=1)
    valid0 = jnp.concatenate([rep(prompt_mask), jnp.zeros((batch, steps), jnp.bool_)], axis=1)

    def step(carry, xs):
      tokens, valid, done = carry
      t, key = xs
      out, _ = forward(tokens, valid, None)  # the whole sequence, every step
      logits = jax.lax.dynamic_index_in_dim(out.logits, prompt_len - 1 + t, 1, keepdims=False)
      token, logp, alive, done = choose(key, logits, done)
      tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, prompt_len + t))
      valid = jax.lax.dynamic_update_slice(valid, alive[:, None], (0, prompt_len + t))
      return (tokens, valid, done), (token, logp, alive)

    _, (toks, logps, alives) = jax.lax.scan(
      step, (tokens0, valid0, done0), (jnp.arange(steps), keys)
    )
    responses, log_probs, mask = toks.T, logps.T, alives.T

  del size
  return Samples(
    tokens=jnp.concatenate([rep(prompts), responses], axis=1),
    valid=jnp.concatenate([rep(prompt_mask), mask], axis=1),
    responses=responses,
    log_probs=log_probs.astype(jnp.float32),
    mask=mask,
    lengths=mask.sum(axis=1).astype(jnp.int32),
  )


def _at_last_valid(x: jax.Array, valid: jax.Array) -> jax.Array:
  """x[b, l_b] for each row's last valid column l_b (column 0 for a row with none): [B, ...]."""
  length = valid.shape[1]
  last = length - 1 - jnp.argmax(valid[:, ::-1], axis=1)
  last = jnp.where(jnp.any(valid, axis=1), last, 0)
  return jnp.take_along_axis(x, last.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]


def sample_from_prefixes(
  policy: transformer.Policy,
  params,
  key: jax.Array,
  prefixes: jax.Array,
  prefix_mask: jax.Array,
  *,
  num_samples: int,
  max_new_tokens: int,
  temperature: float = 1.0,
  eos_id: int,
  pad_id: int,
  greedy: bool = False,
) -> Samples:
  """`num_samples` completions of each of U prefixes, prefilling every prefix once.

  The Monte-Carlo value estimates of VinePPO (arXiv 2410.01679, Sec. 4) and SPO (arXiv
  2505.23564, Sec. 3.2) complete many partial responses ("states" s = prompt + the first
  steps of a response) K times each. Re-prefilling each state K times would cost more than
  the decode for short completions; here the U states are prefilled ONCE ([U, L] through the
  model, writing the KV cache), the cache is repeated `num_samples` times on the batch axis,
  and the U * n rows are decoded together (row `u * n + i` is the i-th completion of prefix
  u). The result equals repeating every prefix n times and prefilling the U * n rows (same
  key: the same tokens up to float rounding of the logits; tested).

  Prefixes may be padded anywhere: a prefix is the sequence of its valid tokens in order
  (positions are `cumsum(valid) - 1`), and the first new token is drawn from the logits at
  each row's LAST valid column. So a state can be given as the full `prompt ++ response`
  row with the response tokens after the state masked out (right padding inside the row;
  see `credit.mc.step_prefixes`) without moving tokens. Host-side de-duplication and
  power-of-two bucketing of U live in `jaxca.prefixes`.

  Args:
    policy: a `networks.transformer.Policy`.
    params: its parameters.
    key: PRNG key (ignored when `greedy`).
    prefixes: [U, L] int32 tokens; each row needs at least one valid token.
    prefix_mask: [U, L] bool, True for the tokens of the prefix.
    num_samples: n, completions per prefix (static).
    max_new_tokens: N, generated columns (static); L + N <= policy.max_len.
    temperature: as in `sample` (traceable).
    eos_id: end-of-sequence token; a completion stops after it.
    pad_id: token emitted (mask False) after EOS.
    greedy: take the argmax instead of sampling.

  Returns:
    `Samples` with U * n rows (row `u * n + i`); `tokens`/`valid` are the repeated prefix
    followed by the completion. With right-padded prefixes the logits of a completion's first
    token sit at the prefix's last valid column (not at column L - 1) when recomputing
    log-probabilities with `policy.apply` on `tokens`/`valid`.
  """
  return sample(
    policy,
    params,
    key,
    prefixes,
    prefix_mask,
    num_samples=num_samples,
    max_new_tokens=max_new_tokens,
    temperature=temperature,
    eos_id=eos_id,
    pad_id=pad_id,
    greedy=greedy,
    use_cache=True,
  )


def finished(samples: Samples, eos_id: int) -> jax.Array:
  """[B] bool: the response emitted `eos_id` (False for one cut off at `max_new_tokens`)."""
  return jnp.any((samples.responses == eos_id) & samples.mask, axis=1)


def compact(tokens: jax.Array, valid: jax.Array, length: int, pad_id: int):
  """Moves the valid tokens of each row to the front, in order: (tokens, mask) [B, length].

  Turns a completed state (`Samples.tokens[:, Lp:]` / `Samples.valid[:, Lp:]` of
  `sample_from_prefixes` on `prompt ++ response` rows: the response tokens of the state, a
  gap, then the completion) into an ordinary right-padded response for a verifier. Valid
  tokens beyond `length` are dropped.

  Args:
    tokens: [B, L] int32.
    valid: [B, L] bool.
    length: static output width.
    pad_id: fill token of the padding.

  Returns:
    ([B, length] int32 tokens, [B, length] bool mask), `mask[b] = arange(length) < n_b` with
    n_b = min(valid[b].sum(), length).
  """
  order = jnp.argsort(~valid, axis=1, stable=True)  # valid columns first, in order
  moved = jnp.take_along_axis(tokens, order, axis=1)
  count = jnp.sum(valid, axis=1)
  width = tokens.shape[1]
  if length > width:
    moved = jnp.concatenate([moved, jnp.full((tokens.shape[0], length - width), pad_id)], axis=1)
  moved = moved[:, :length].astype(jnp.int32)
  mask = jnp.arange(length)[None, :] < count[:, None]
  return jnp.where(mask, moved, pad_id), mask
