"""Tests for jaxca.sampling: cache vs recomputation, log-prob alignment, EOS, shapes."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxca import networks
from jaxca import sampling

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
