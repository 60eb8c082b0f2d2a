"""Tests for jaxca.sampling: cache vs recomputation, log-prob alignment, EOS, shapes."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxca import bench
from jaxca import networks
from jaxca import prefixes as prefixes_lib
from jaxca import sampling
from jaxca.credit import mc

VOCAB, EOS, PAD = 7, 6, 0
P, LP, G, N = 3, 5, 4, 9


@functools.cache
def _setup(dtype='float32'):
  cfg = ml_collections.ConfigDict(
    dict(width=32, depth=1, num_heads=4, max_len=16, dtype=dtype, value_head=False)
  )
  policy = networks.make_policy(cfg, vocab_size=VOCAB)
  params = jax.jit(policy.init)(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (P, LP), 1, EOS)
  prompt_mask = jnp.arange(LP)[None, :] >= jnp.array([0, 2, 4])[:, None]  # lengths 5, 3, 1
  return policy, params, jnp.where(prompt_mask, tokens, PAD), prompt_mask


@functools.cache
def _sampler(use_cache, greedy=False, dtype='float32'):
  """Jitted sampler; the temperature is a traced argument (one compile for all values)."""
  policy = _setup(dtype)[0]

  def fn(params, key, prompts, prompt_mask, temperature=1.0):
    return sampling.sample(
      policy,
      params,
      key,
      prompts,
      prompt_mask,
      num_samples=G,
      max_new_tokens=N,
      temperature=temperature,
      eos_id=EOS,
      pad_id=PAD,
      greedy=greedy,
      use_cache=use_cache,
    )

  return jax.jit(fn)


def _check_structure(s, prompts, prompt_mask):
  """Shapes, dtypes, group layout and EOS/pad invariants that every Samples must satisfy."""
  b = P * G
  assert s.tokens.shape == (b, LP + N) and s.tokens.dtype == jnp.int32
  assert s.valid.shape == (b, LP + N) and s.valid.dtype == jnp.bool_
  assert s.responses.shape == (b, N) and s.log_probs.shape == (b, N) and s.mask.shape == (b, N)
  assert s.log_probs.dtype == jnp.float32 and s.lengths.dtype == jnp.int32
  tokens, mask, responses = np.asarray(s.tokens), np.asarray(s.mask), np.asarray(s.responses)
  np.testing.assert_array_equal(tokens[:, :LP], np.repeat(prompts, G, axis=0))  # row p*G+g
  np.testing.assert_array_equal(s.valid[:, :LP], np.repeat(prompt_mask, G, axis=0))
  np.testing.assert_array_equal(tokens[:, LP:], responses)
  np.testing.assert_array_equal(s.valid[:, LP:], mask)
  np.testing.assert_array_equal(s.lengths, mask.sum(1))
  for row in range(b):
    n = int(s.lengths[row])
    assert n >= 1 and mask[row, :n].all() and not mask[row, n:].any()  # a prefix
    eos = np.flatnonzero(responses[row, :n] == EOS)
    # EOS, if any, is the last masked token; after it only pads with log-prob 0.
    assert eos.size == 0 and n == N or eos.tolist() == [n - 1]
    assert (responses[row, n:] == PAD).all() and (np.asarray(s.log_probs)[row, n:] == 0).all()
  assert np.all(np.asarray(s.log_probs)[mask] <= 0) and np.all(np.isfinite(s.log_probs))


def test_greedy_with_cache_equals_without_cache():
  policy, params, prompts, prompt_mask = _setup()
  cached = _sampler(True, greedy=True)(params, jax.random.key(2), prompts, prompt_mask)
  full = _sampler(False, greedy=True)(params, jax.random.key(3), prompts, prompt_mask)
  _check_structure(cached, prompts, prompt_mask)
  np.testing.assert_array_equal(cached.tokens, full.tokens)
  np.testing.assert_array_equal(cached.mask, full.mask)
  np.testing.assert_allclose(cached.log_probs, full.log_probs, atol=1e-5, rtol=1e-5)
  # Greedy samples of one prompt are identical across its group.
  responses = np.asarray(cached.responses).reshape(P, G, N)
  assert (responses == responses[:, :1]).all()


@pytest.mark.parametrize('temperature', [1.0, 0.7])
def test_sampled_log_probs_match_recomputed_policy(temperature):
  """Samples.log_probs == response_log_probs(policy.apply(tokens, valid)) on the mask.

  This pins the alignment the train step relies on (logits at t-1 score token t).
  """
  policy, params, prompts, prompt_mask = _setup()
  key = jax.random.key(4)
  s = _sampler(True)(params, key, prompts, prompt_mask, temperature)
  _check_structure(s, prompts, prompt_mask)
  logits = jax.jit(policy.apply)(params, s.tokens, s.valid).logits
  recomputed = networks.response_log_probs(logits, s.tokens, LP, temperature=temperature)
  m = np.asarray(s.mask)
  np.testing.assert_allclose(np.asarray(s.log_probs)[m], np.asarray(recomputed)[m], atol=1e-4)
  if temperature == 1.0:
    # The no-cache path with the same key draws the same tokens.
    full = _sampler(False)(params, key, prompts, prompt_mask)
    np.testing.assert_array_equal(s.tokens, full.tokens)
    np.testing.assert_allclose(s.log_probs, full.log_probs, atol=1e-5, rtol=1e-5)
    # Different samples of a group differ (stochastic sampling, 6 of 7 tokens allowed).
    responses = np.asarray(s.responses).reshape(P, G, N)
    assert all(len({r.tobytes() for r in responses[p]}) > 1 for p in range(P))


def test_eos_stops_generation():
  """A policy whose logits favour EOS emits it first: length 1, then pads, mask False."""
  policy, params, prompts, prompt_mask = _setup()
  bias = params['logits']['bias'].at[EOS].set(100.0)
  params = {**params, 'logits': {**params['logits'], 'bias': bias}}
  for use_cache in (True, False):
    s = _sampler(use_cache)(params, jax.random.key(5), prompts, prompt_mask)
    _check_structure(s, prompts, prompt_mask)
    np.testing.assert_array_equal(s.lengths, np.ones(P * G))
    np.testing.assert_array_equal(s.responses[:, 0], EOS)
    np.testing.assert_array_equal(s.responses[:, 1:], PAD)


def test_eos_mid_sequence_and_unjitted():
  """Higher temperature: EOS at varying steps; also runs without jit."""
  policy, params, prompts, prompt_mask = _setup()
  s = sampling.sample(
    policy,
    params,
    jax.random.key(6),
    prompts,
    prompt_mask,
    num_samples=G,
    max_new_tokens=N,
    temperature=3.0,
    eos_id=EOS,
    pad_id=PAD,
  )
  _check_structure(s, prompts, prompt_mask)
  lengths = np.asarray(s.lengths)
  assert 1 < len(set(lengths.tolist()))  # stopped at different steps


def test_early_stop_when_every_row_is_done_matches_the_full_decode():
  """Once every row has emitted EOS the cached decode stops; the result is unchanged.

  The reference is the recomputing sampler (no early stop, the same per-column keys), under
  jit, without jit and under vmap over keys.
  """
  policy, params, prompts, prompt_mask = _setup()
  bias = params['logits']['bias'].at[EOS].set(2.5)  # every row ends after a few tokens
  params = {**params, 'logits': {**params['logits'], 'bias': bias}}
  keys = jax.random.split(jax.random.key(11), 3)
  batched = jax.vmap(_sampler(True), in_axes=(None, 0, None, None))(
    params, keys, prompts, prompt_mask
  )
  for i, key in enumerate(keys):
    ref = _sampler(False)(params, key, prompts, prompt_mask)
    assert int(ref.lengths.max()) < N  # the early exit is exercised
    unjitted = sampling.sample(
      policy,
      params,
      key,
      prompts,
      prompt_mask,
      num_samples=G,
      max_new_tokens=N,
      eos_id=EOS,
      pad_id=PAD,
    )
    for s in (
      _sampler(True)(params, key, prompts, prompt_mask),
      unjitted,
      jax.tree.map(lambda x: x[i], batched),
    ):
      _check_structure(s, prompts, prompt_mask)
      np.testing.assert_array_equal(s.tokens, ref.tokens)
      np.testing.assert_array_equal(s.mask, ref.mask)
      np.testing.assert_allclose(s.log_probs, ref.log_probs, atol=1e-5, rtol=1e-5)


def test_bfloat16_policy_gives_float32_log_probs():
  _, params, prompts, prompt_mask = _setup()
  s = _sampler(True, dtype='bfloat16')(params, jax.random.key(7), prompts, prompt_mask)
  _check_structure(s, prompts, prompt_mask)


def test_bad_arguments():
  policy, params, prompts, prompt_mask = _setup()
  call = functools.partial(sampling.sample, policy, params, jax.random.key(0))
  kw = dict(num_samples=2, max_new_tokens=3, eos_id=EOS, pad_id=PAD)
  with pytest.raises(ValueError, match='exceeds the policy max_len 16'):
    call(prompts, prompt_mask, **{**kw, 'max_new_tokens': 12})
  with pytest.raises(ValueError, match='`prompt_mask` must be a bool'):
    call(prompts, prompt_mask.astype(jnp.int32), **kw)
  with pytest.raises(ValueError, match=r'`eos_id` must be an int in \[0, 7\)'):
    call(prompts, prompt_mask, **{**kw, 'eos_id': 7})
  with pytest.raises(ValueError, match='`num_samples` must be a positive'):
    call(prompts, prompt_mask, **{**kw, 'num_samples': 0})
  with pytest.raises(ValueError, match='`temperature` must be > 0'):
    call(prompts, prompt_mask, temperature=0.0, **kw)


@functools.cache
def _prefix_sampler(num_samples, naive=False, greedy=False):
  """Jitted shared-prefill sampler, or the naive one: every prefix repeated, prefilled n times."""
  policy = _setup()[0]
  kw = dict(max_new_tokens=N, eos_id=EOS, pad_id=PAD, greedy=greedy)

  def shared(params, key, prefixes, prefix_mask, temperature=1.0):
    return sampling.sample_from_prefixes(
      policy,
      params,
      key,
      prefixes,
      prefix_mask,
      num_samples=num_samples,
      temperature=temperature,
      **kw,
    )

  def repeated(params, key, prefixes, prefix_mask, temperature=1.0):
    rep = lambda x: jnp.repeat(x, num_samples, axis=0)
    return sampling.sample(
      policy,
      params,
      key,
      rep(prefixes),
      rep(prefix_mask),
      num_samples=1,
      temperature=temperature,
      **kw,
    )

  return jax.jit(repeated if naive else shared)


def _right_padded(prefixes, prefix_mask):
  """The same prefixes with their tokens moved to the front (pads after them)."""
  toks, mask = np.asarray(prefixes), np.asarray(prefix_mask)
  out_t, out_m = np.full_like(toks, PAD), np.zeros_like(mask)
  for u in range(len(toks)):
    real = toks[u][mask[u]]
    out_t[u, : len(real)] = real
    out_m[u, : len(real)] = True
  return jnp.asarray(out_t), jnp.asarray(out_m)


@pytest.mark.parametrize('num_samples', [1, 3])
def test_shared_prefill_equals_naive_reprefill(num_samples):
  """Prefill U prefixes once + repeat the cache == repeat the prefixes and prefill U*n rows."""
  _, params, prefixes, prefix_mask = _setup()  # lengths 5, 3, 1 (left-padded)
  key = jax.random.key(11)
  shared = _prefix_sampler(num_samples)(params, key, prefixes, prefix_mask)
  naive = _prefix_sampler(num_samples, naive=True)(params, key, prefixes, prefix_mask)
  assert shared.tokens.shape == (P * num_samples, LP + N)
  np.testing.assert_array_equal(shared.tokens, naive.tokens)
  np.testing.assert_array_equal(shared.valid, naive.valid)
  np.testing.assert_array_equal(shared.mask, naive.mask)
  np.testing.assert_allclose(shared.log_probs, naive.log_probs, atol=1e-5, rtol=1e-5)
  # Row u * n + i continues prefix u.
  np.testing.assert_array_equal(shared.tokens[:, :LP], np.repeat(prefixes, num_samples, axis=0))
  if num_samples > 1:
    responses = np.asarray(shared.responses).reshape(P, num_samples, N)
    assert any(len({r.tobytes() for r in responses[u]}) > 1 for u in range(P))


def test_right_padded_prefixes_sample_like_left_padded():
  """Padding placement is irrelevant: right-padded prefixes draw the same completions."""
  _, params, prefixes, prefix_mask = _setup()
  right, right_mask = _right_padded(prefixes, prefix_mask)
  assert not np.array_equal(right_mask, prefix_mask)
  key = jax.random.key(12)
  a = _prefix_sampler(3)(params, key, prefixes, prefix_mask)
  b = _prefix_sampler(3)(params, key, right, right_mask)
  np.testing.assert_array_equal(a.responses, b.responses)
  np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-5, rtol=1e-5)
  # Gaps inside a row (a state = prompt ++ response with the tail masked out) work too.
  gappy_mask = np.asarray(right_mask).copy()
  gappy_tokens = np.asarray(right).copy()
  gappy_tokens[0, 1:3], gappy_mask[0, 1:3] = 5, False  # remove 2 tokens, keep 3 around them
  c = _prefix_sampler(3)(params, key, jnp.asarray(gappy_tokens), jnp.asarray(gappy_mask))
  dense = np.asarray(prefixes).copy()
  dense_mask = np.asarray(prefix_mask).copy()
  dense[0] = [PAD, PAD, *np.asarray(gappy_tokens)[0][gappy_mask[0]]]
  dense_mask[0] = [False, False, True, True, True]
  d = _prefix_sampler(3)(params, key, jnp.asarray(dense), jnp.asarray(dense_mask))
  np.testing.assert_array_equal(c.responses, d.responses)


def test_mc_values_of_a_deterministic_policy_are_exact():
  """Greedy (or a near-one-hot policy): every completion is the same, so V is the reward."""
  _, params, prefixes, prefix_mask = _setup()
  bias = params['logits']['bias'].at[EOS].set(100.0)
  eos_params = {**params, 'logits': {**params['logits'], 'bias': bias}}
  s = _prefix_sampler(3)(eos_params, jax.random.key(13), prefixes, prefix_mask)
  finished = sampling.finished(s, EOS)
  assert np.asarray(finished).all()
  reward = (jnp.sum(s.valid[:, :LP], axis=1) >= 3).astype(jnp.float32)  # prefix length >= 3
  np.testing.assert_array_equal(mc.mc_values(reward, finished, 3), [1.0, 1.0, 0.0])
  # A policy that never emits EOS within N tokens: all unfinished, V = 0 whatever the reward.
  bias = params['logits']['bias'].at[2].set(100.0)
  loop_params = {**params, 'logits': {**params['logits'], 'bias': bias}}
  s = _prefix_sampler(3)(loop_params, jax.random.key(13), prefixes, prefix_mask)
  assert not np.asarray(sampling.finished(s, EOS)).any()
  np.testing.assert_array_equal(
    mc.mc_values(jnp.ones(P * 3), sampling.finished(s, EOS), 3), [0.0, 0.0, 0.0]
  )


def test_compact_moves_valid_tokens_to_the_front():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 7, (6, 8)).astype(np.int32)
  valid = rng.random((6, 8)) > 0.4
  for length in (5, 8, 10):
    got_t, got_m = sampling.compact(jnp.asarray(tokens), jnp.asarray(valid), length, PAD)
    for b in range(6):
      real = tokens[b][valid[b]][:length]
      want = np.full(length, PAD)
      want[: len(real)] = real
      np.testing.assert_array_equal(got_t[b], want)
      np.testing.assert_array_equal(got_m[b], np.arange(length) < len(real))


def test_prefix_sampling_benchmark_contenders_agree():
  """The benchmark's two contenders draw the same completions; rows are computed (no timing)."""
  policy, params, prefixes, prefix_mask = _setup()
  thunks = bench.prefix_sampling_thunks(
    policy,
    params,
    jax.random.key(14),
    prefixes,
    prefix_mask,
    num_samples=2,
    max_new_tokens=N,
    eos_id=EOS,
    pad_id=PAD,
  )
  assert tuple(thunks) == bench.PREFIX_CONTENDERS
  outputs = {name: thunk() for name, thunk in thunks.items()}
  np.testing.assert_array_equal(outputs['shared_prefill'].tokens, outputs['naive_prefill'].tokens)
  fake = {
    'shared_prefill': bench.Timing((0.5, 0.5), 1.0),
    'naive_prefill': bench.Timing((2.0,), 3.0),
  }
  rows = bench.prefix_sampling_rows(fake, outputs, 2)
  assert rows['num_completions'] == P * 2 and rows['speedup'] == 4.0
  assert rows['same_tokens_fraction'] == 1.0
  assert rows['contenders']['shared_prefill']['completions_per_s'] == P * 2 / 0.5


def test_mc_value_grid_end_to_end_with_a_deterministic_policy():
  """step_prefixes -> plan (dedup, bucket) -> sample_from_prefixes -> score -> [B, S] values."""
  policy, params, prompts, prompt_mask = _setup()
  bias = params['logits']['bias'].at[EOS].set(100.0)  # every completion is [EOS]
  params = {**params, 'logits': {**params['logits'], 'bias': bias}}
  step = 5
  prompts, prompt_mask = prompts[jnp.array([0, 0, 1])], prompt_mask[jnp.array([0, 0, 1])]
  responses = jnp.array([[1, step, 2, EOS], [1, step, 2, EOS], [3, EOS, PAD, PAD]])
  mask = responses != PAD
  step_ids = jnp.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, -1, -1]])
  tokens, pmask, exists = mc.step_prefixes(prompts, prompt_mask, responses, mask, step_ids, 3)
  np.testing.assert_array_equal(exists, [[1, 1, 0], [1, 1, 0], [1, 0, 0]])
  sample_fn = jax.jit(
    functools.partial(
      sampling.sample_from_prefixes,
      policy,
      params,
      jax.random.key(15),
      num_samples=2,
      max_new_tokens=3,
      eos_id=EOS,
      pad_id=PAD,
    )
  )

  def score_fn(s):  # a deterministic verifier: 1 iff the completed length is a multiple of 3
    _, body_mask = sampling.compact(s.tokens, s.valid, s.tokens.shape[1], PAD)
    return (jnp.sum(body_mask, axis=1) % 3 == 0).astype(jnp.float32), sampling.finished(s, EOS)

  got = prefixes_lib.mc_value_grid(
    sample_fn, score_fn, tokens, pmask, exists, num_samples=2, minimum_bucket=1
  )
  assert (got.num_unique, got.bucket) == (3, 4)  # rows 0 and 1 share their states
  assert got.samples.tokens.shape[0] == 4 * 2
  lengths = np.asarray(pmask).sum(-1) + 1  # state + EOS
  want = np.where(np.asarray(exists), (lengths % 3 == 0).astype(np.float32), 0.0)
  np.testing.assert_array_equal(got.values, want)
  np.testing.assert_array_equal(got.values, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])
  adv = mc.vineppo_advantages(step_ids, got.values, jnp.ones(3), mask)
  assert adv.shape == (3, 4) and np.isfinite(np.asarray(adv)).all()
