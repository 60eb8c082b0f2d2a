"""Tests for jaxca.networks.transformer: shapes, dtypes, masking, KV cache, alignment."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxca import networks
from tests.reference import transformer as ref_transformer

VOCAB = 11


def _cfg(**overrides):
  cfg = dict(width=32, depth=2, num_heads=4, max_len=32, dtype='float32', value_head=True)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


@functools.cache
def _build(**overrides):
  policy = networks.make_policy(_cfg(**overrides), vocab_size=VOCAB)
  return policy, jax.jit(policy.init)(jax.random.key(0)), jax.jit(policy.apply)


def _policy(**overrides):
  return _build(**overrides)[:2]


def _apply(**overrides):
  """The jitted apply of `_policy(**overrides)`, shared between tests (one compile per shape)."""
  return _build(**overrides)[2]


def _left_padded(key, lengths, width):
  """[P, width] tokens with the last lengths[p] columns real, pads (=0) before them."""
  tokens = jax.random.randint(key, (len(lengths), width), 1, VOCAB)
  valid = jnp.arange(width)[None, :] >= (width - jnp.asarray(lengths))[:, None]
  return jnp.where(valid, tokens, 0), valid


def test_large_config_shapes_without_allocation():
  cfg = _cfg(width=1024, depth=24, num_heads=16, max_len=2048, dtype='bfloat16')
  policy = networks.make_policy(cfg, vocab_size=32_000)
  params = jax.eval_shape(policy.init, jax.random.key(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert 300e6 < n_params < 400e6  # 24 * 12 * 1024^2 + 2 * 32000 * 1024 ~ 368M
  tokens = jax.ShapeDtypeStruct((2, 2048), jnp.int32)
  valid = jax.ShapeDtypeStruct((2, 2048), jnp.bool_)
  out = jax.eval_shape(policy.apply, params, tokens, valid)
  assert out.logits.shape == (2, 2048, 32_000) and out.logits.dtype == jnp.float32
  assert out.values.shape == (2, 2048) and out.values.dtype == jnp.float32
  cache = jax.eval_shape(lambda: networks.init_cache(policy.module, 2, 2048))
  assert cache.layers[0].keys.shape == (2, 2048, 16, 64) and len(cache.layers) == 24


@pytest.mark.parametrize('value_head', [True, False])
def test_value_head_present_iff_requested(value_head):
  policy, params = _policy(value_head=value_head)
  tokens, valid = _left_padded(jax.random.key(1), [3, 5], 6)
  out = _apply(value_head=value_head)(params, tokens, valid)
  assert out.logits.shape == (2, 6, VOCAB)
  assert ('value' in params) == value_head
  if value_head:
    assert out.values.shape == (2, 6) and out.values.dtype == jnp.float32
  else:
    assert out.values is None


def test_bfloat16_compute_gives_float32_outputs_close_to_float32():
  params = _policy()[1]
  policy16 = networks.make_policy(_cfg(dtype='bfloat16'), vocab_size=VOCAB)
  params16 = jax.eval_shape(policy16.init, jax.random.key(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params16))
  tokens, valid = _left_padded(jax.random.key(1), [4, 6], 6)
  out16 = jax.jit(policy16.apply)(params, tokens, valid)
  out32 = _apply()(params, tokens, valid)
  assert out16.logits.dtype == jnp.float32 and out16.values.dtype == jnp.float32
  # bf16 has ~3 significant digits; the two computations agree only loosely.
  np.testing.assert_allclose(out16.logits, out32.logits, atol=0.15, rtol=0.05)


def test_jit_equals_eager():
  policy, params = _policy(depth=1)
  tokens, valid = _left_padded(jax.random.key(2), [2, 6, 4], 6)
  eager = policy.apply(params, tokens, valid)
  jitted = _apply(depth=1)(params, tokens, valid)
  np.testing.assert_allclose(eager.logits, jitted.logits, atol=1e-5, rtol=1e-5)


def test_left_padding_invariance():
  """A left-padded prompt gives the logits of the unpadded prompt at its real tokens."""
  policy, params = _policy()
  tokens = np.asarray(jax.random.randint(jax.random.key(3), (5,), 1, VOCAB))
  rows, valid = np.zeros((4, 9), np.int32), np.zeros((4, 9), bool)
  for row, (pad, pad_token) in enumerate([(0, 0), (1, 0), (4, 0), (4, 7)]):
    rows[row] = pad_token
    rows[row, pad : pad + 5] = tokens
    valid[row, pad : pad + 5] = True  # unpadded row 0 is right-padded; causality hides that
  out = _apply()(params, rows, valid)
  for row, pad in enumerate([0, 1, 4, 4]):
    np.testing.assert_allclose(out.logits[row, pad : pad + 5], out.logits[0, :5], atol=1e-5)
    np.testing.assert_allclose(out.values[row, pad : pad + 5], out.values[0, :5], atol=1e-5)


def test_invalid_tokens_are_not_attended_and_causality():
  policy, params = _policy()
  tokens = jax.random.randint(jax.random.key(4), (1, 8), 1, VOCAB)
  valid = jnp.array([[True, True, False, True, True, True, False, True]])
  changed_invalid = tokens.at[0, 2].set(0).at[0, 6].set(5)
  changed_future = tokens.at[0, 5].set((tokens[0, 5] + 1) % VOCAB)
  batch = jnp.concatenate([tokens, changed_invalid, changed_future], axis=0)
  out = _apply()(params, batch, jnp.repeat(valid, 3, axis=0)).logits
  base, other, future = out[0], out[1], out[2]
  assert np.all(np.isfinite(out))
  # Changing an invalid token changes no real token's output.
  np.testing.assert_allclose(other[valid[0]], base[valid[0]], atol=1e-5, rtol=1e-5)
  # Changing a token changes nothing before it (not even at invalid positions) but matters
  # at and after it.
  np.testing.assert_allclose(future[:5], base[:5], atol=1e-5, rtol=1e-5)
  assert not np.allclose(future[5], base[5])


def test_cached_decoding_matches_full_forward():
  """Prefill + chunked/single-token decoding through the cache == one full forward pass.

  Rows have prompts of different lengths (left padding) and invalid columns mid-decode
  (as after EOS).
  """
  policy, params = _policy()
  module = policy.module
  prompt_len, total = 6, 14
  prompts, prompt_valid = _left_padded(jax.random.key(5), [6, 1, 3], prompt_len)
  rest = jax.random.randint(jax.random.key(6), (3, total - prompt_len), 0, VOCAB)
  rest_valid = jnp.ones((3, total - prompt_len), bool).at[1, 4:].set(False).at[2, 2].set(False)
  tokens = jnp.concatenate([prompts, rest], axis=1)
  valid = jnp.concatenate([prompt_valid, rest_valid], axis=1)
  full = _apply()(params, tokens, valid)

  @jax.jit
  def step(cache, toks, vals):
    return module.apply({'params': params}, toks, vals, cache=cache)

  cache = networks.init_cache(module, 3, total)
  chunks = [(0, prompt_len), (prompt_len, prompt_len + 3)] + [
    (t, t + 1) for t in range(prompt_len + 3, total)
  ]
  for start, stop in chunks:
    out, cache = step(cache, tokens[:, start:stop], valid[:, start:stop])
    got, want = out.logits, full.logits[:, start:stop]
    m = np.asarray(valid[:, start:stop])
    np.testing.assert_allclose(np.asarray(got)[m], np.asarray(want)[m], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(
      np.asarray(out.values)[m], np.asarray(full.values[:, start:stop])[m], atol=1e-5, rtol=1e-5
    )
  assert int(cache.index) == total
  np.testing.assert_array_equal(cache.count, valid.sum(1))


def test_response_log_probs_and_values_alignment():
  """Against an obviously-correct NumPy loop: logits at t-1 predict token t."""
  rng = np.random.default_rng(0)
  b, length, v, lp = 3, 7, 5, 3
  logits = rng.normal(size=(b, length, v)).astype(np.float32)
  tokens = rng.integers(0, v, size=(b, length)).astype(np.int32)
  values = rng.normal(size=(b, length)).astype(np.float32)
  for temperature in (1.0, 0.5):
    want = np.zeros((b, length - lp), np.float32)
    for i in range(b):
      for t in range(lp, length):
        z = logits[i, t - 1] / temperature
        want[i, t - lp] = z[tokens[i, t]] - np.log(np.sum(np.exp(z)))
    got = networks.response_log_probs(logits, tokens, lp, temperature=temperature)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    got_jit = jax.jit(networks.response_log_probs, static_argnums=2)(logits, tokens, lp)
    assert got_jit.shape == (b, length - lp) and got_jit.dtype == jnp.float32
  want_v = np.array([[values[i, t - 1] for t in range(lp, length)] for i in range(b)])
  np.testing.assert_array_equal(networks.response_values(values, lp), want_v)


def test_bad_config_errors():
  with pytest.raises(ValueError, match=r"Unknown policy dtype 'float16'.*bfloat16.*float32"):
    networks.make_policy(_cfg(dtype='float16'), vocab_size=VOCAB)
  with pytest.raises(ValueError, match='divisible by `num_heads`'):
    networks.make_policy(_cfg(width=30), vocab_size=VOCAB)
  with pytest.raises(ValueError, match='`depth` must be a positive int'):
    networks.make_policy(_cfg(depth=0), vocab_size=VOCAB)
  with pytest.raises(ValueError, match='`value_head` must be a bool'):
    networks.make_policy(_cfg(value_head='yes'), vocab_size=VOCAB)
  with pytest.raises(ValueError, match='`vocab_size`'):
    networks.make_policy(_cfg(), vocab_size=0)
  policy, params = _policy(max_len=4)
  with pytest.raises(ValueError, match='exceeds policy max_len 4'):
    policy.apply(params, jnp.zeros((1, 5), jnp.int32), jnp.ones((1, 5), bool))
  with pytest.raises(ValueError, match='`prompt_len`'):
    networks.response_log_probs(jnp.zeros((1, 3, 2)), jnp.zeros((1, 3), jnp.int32), 0)
  with pytest.raises(ValueError, match='value_head=True'):
    networks.response_values(None, 1)


def _attention_batch():
  """Left-padded prompts, right-padded responses with an invalid column mid-row."""
  prompts, prompt_valid = _left_padded(jax.random.key(7), [5, 2, 3], 5)
  rest = jax.random.randint(jax.random.key(8), (3, 4), 1, VOCAB)
  rest_valid = jnp.ones((3, 4), bool).at[1, 2:].set(False).at[2, 1].set(False)
  return jnp.concatenate([prompts, rest], 1), jnp.concatenate([prompt_valid, rest_valid], 1)


@functools.cache
def _apply_with_attention():
  policy, _ = _policy()
  return jax.jit(functools.partial(policy.apply, return_attention=True))


def test_return_attention_matches_numpy_forward():
  """Attention maps and logits == an independent float64 NumPy forward (all layers)."""
  policy, params = _policy()
  tokens, valid = _attention_batch()
  out = _apply_with_attention()(params, tokens, valid)
  base = _apply()(params, tokens, valid)
  assert base.attention is None
  assert out.attention.shape == (3, 2, 4, 9, 9) and out.attention.dtype == jnp.float32
  np.testing.assert_array_equal(out.logits, base.logits)
  np.testing.assert_array_equal(out.values, base.values)
  want_logits, want_attn = ref_transformer.forward(
    jax.tree.map(np.asarray, params), tokens, valid, num_heads=4
  )
  np.testing.assert_allclose(out.attention, want_attn, atol=2e-5, rtol=1e-4)
  m = np.asarray(valid)
  np.testing.assert_allclose(np.asarray(out.logits)[m], want_logits[m], atol=1e-4, rtol=1e-4)


def test_attention_rows_are_masked_distributions():
  _, params = _policy()
  tokens, valid = _attention_batch()
  attn = np.asarray(_apply_with_attention()(params, tokens, valid).attention)
  v = np.asarray(valid)
  length = v.shape[1]
  causal = np.tril(np.ones((length, length), bool))
  allowed = causal & (v[:, None, :] & v[:, :, None]) | np.eye(length, dtype=bool)[None]
  assert np.all(attn >= 0)
  # Exactly zero outside the mask (future keys, padding keys).
  np.testing.assert_array_equal(np.where(allowed[:, None, None], 0.0, attn), 0.0)
  np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
  # An invalid query's row is one-hot on itself.
  for b, t in zip(*np.nonzero(~v)):
    np.testing.assert_array_equal(attn[b, :, :, t, t], 1.0)


def test_return_attention_consistent_with_cached_decoding():
  """Prefill + one-token cached decodes give the logits of the attention-returning forward."""
  policy, params = _policy()
  module = policy.module
  tokens, valid = _attention_batch()
  full = _apply_with_attention()(params, tokens, valid)
  step = jax.jit(lambda c, t, v: module.apply({'params': params}, t, v, cache=c))
  cache = networks.init_cache(module, 3, tokens.shape[1])
  out, cache = step(cache, tokens[:, :5], valid[:, :5])
  for t in range(5, tokens.shape[1]):
    out, cache = step(cache, tokens[:, t : t + 1], valid[:, t : t + 1])
    assert out.attention is None
    m = np.asarray(valid[:, t])
    np.testing.assert_allclose(
      np.asarray(out.logits[:, 0])[m], np.asarray(full.logits[:, t])[m], atol=1e-5, rtol=1e-5
    )
  with pytest.raises(ValueError, match='return_attention'):
    module.apply(
      {'params': params}, tokens[:, :1], valid[:, :1], cache=cache, return_attention=True
    )


@pytest.mark.parametrize('family', ['jaxca', 'hf'])
def test_logits_from_equals_the_slice_of_the_full_logits(family):
  """`logits_from=k` gives `logits[:, k:]` of the full pass, values unchanged, under jit and
  without; a bad `logits_from` is refused naming the argument."""
  if family == 'hf':
    from tests.networks import hf_test  # noqa: PLC0415

    policy, params = hf_test._random()
  else:
    policy, params = _policy()
  tokens, valid = _left_padded(jax.random.key(3), [5, 8, 3], 8)
  full = policy.apply(params, tokens, valid)
  for k in (0, 1, 4, 7):
    for apply in (policy.apply, jax.jit(policy.apply, static_argnames=('logits_from',))):
      out = apply(params, tokens, valid, logits_from=k)
      assert out.logits.shape == (3, 8 - k, full.logits.shape[-1])
      np.testing.assert_allclose(out.logits, full.logits[:, k:], atol=1e-5, rtol=1e-5)
      if full.values is not None:
        np.testing.assert_allclose(out.values, full.values, atol=1e-5, rtol=1e-5)
  for bad in (-1, 8, 2.0):
    with pytest.raises(ValueError, match='logits_from'):
      policy.apply(params, tokens, valid, logits_from=bad)


def test_rollout_forward_equals_full_logits_reference():
  """`lm.rollout.forward` (output projection on the response only) against the full pass
  through `response_log_probs`, at two temperatures."""
  from jaxca.lm import rollout  # noqa: PLC0415

  policy, params = _policy()
  tokens, valid = _left_padded(jax.random.key(4), [6, 8, 2], 8)
  lp = 4
  full = policy.apply(params, tokens, valid)
  for temperature in (1.0, 0.7):
    logits, log_probs, values = jax.jit(rollout.forward, static_argnums=(0, 4, 5))(
      policy, params, tokens, valid, lp, temperature
    )
    np.testing.assert_allclose(logits, full.logits[:, lp - 1 : -1], atol=1e-5, rtol=1e-5)
    want = networks.response_log_probs(full.logits, tokens, lp, temperature=temperature)
    np.testing.assert_allclose(log_probs, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(values, networks.response_values(full.values, lp), atol=1e-5)
