"""`networks.hf` without the torch reference: config parsing, the safetensors round trip,
grouped-query attention as repeated heads, padding invariance, cache == full pass, and the
policy inside `sampling` and the LM learner. The comparison with `transformers` itself is in
tests/crosscheck/."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxca import estimators
from jaxca import lm
from jaxca import sampling
from jaxca.networks import hf
from jaxca.networks import transformer
from jaxca.tasks import arith

TINY = hf.HFConfig(
  family='qwen2',
  vocab_size=23,
  hidden_size=32,
  intermediate_size=48,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  rope_theta=1000.0,
  tie_embeddings=True,
  qkv_bias=True,
  max_position_embeddings=32,
)

# A Qwen2.5-0.5B-style config.json (transformers 4.x layout).
QWEN_JSON = {
  'architectures': ['Qwen2ForCausalLM'],
  'hidden_act': 'silu',
  'hidden_size': 896,
  'intermediate_size': 4864,
  'max_position_embeddings': 32768,
  'model_type': 'qwen2',
  'num_attention_heads': 14,
  'num_hidden_layers': 24,
  'num_key_value_heads': 2,
  'rms_norm_eps': 1e-06,
  'rope_theta': 1000000.0,
  'sliding_window': 32768,
  'tie_word_embeddings': True,
  'use_sliding_window': False,
  'vocab_size': 151936,
}


def _random(cfg=TINY, seed=0, **kw):
  policy = hf.make_policy(cfg, **kw)
  params = policy.init(jax.random.key(seed))
  # Non-trivial norms and biases, so a wrong mapping shows.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return policy, jax.tree.unflatten(tree, leaves)


def test_config_from_qwen_json():
  cfg = hf.config_from_dict(QWEN_JSON)
  assert (cfg.family, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == ('qwen2', 14, 2, 64)
  assert cfg.qkv_bias and not cfg.o_bias and cfg.tie_embeddings
  assert cfg.rope_theta == 1e6 and cfg.rope_scaling is None
  assert hf.config_from_dict(hf.config_to_dict(cfg)) == cfg


def test_config_llama3_rope_both_layouts():
  base = dict(
    model_type='llama',
    vocab_size=10,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
  )
  scaling = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0)
  scaling['original_max_position_embeddings'] = 8192
  v4 = hf.config_from_dict(
    dict(base, rope_theta=500000.0, rope_scaling=dict(scaling, rope_type='llama3'))
  )
  v4_old_key = hf.config_from_dict(
    dict(base, rope_theta=500000.0, rope_scaling=dict(scaling, type='llama3'))
  )
  v5 = hf.config_from_dict(
    dict(base, rope_parameters=dict(scaling, rope_type='llama3', rope_theta=500000.0))
  )
  assert v4 == v5 == v4_old_key
  assert v4.rope_theta == 500000.0 and v4.num_kv_heads == 2 and not v4.tie_embeddings
  inv = hf.inv_frequencies(v4)
  plain = hf.inv_frequencies(hf.config_from_dict(dict(base, rope_theta=500000.0)))
  assert inv[0] == plain[0] and np.isclose(inv[-1], plain[-1] / 32)  # high kept, low / factor


@pytest.mark.parametrize(
  'change, match',
  [
    (dict(model_type='gpt2'), 'model_type'),
    (dict(use_sliding_window=True), 'Sliding'),
    (dict(hidden_act='gelu'), 'hidden_act'),
    (dict(rope_scaling=dict(rope_type='yarn', factor=4.0)), 'rope_type'),
    (dict(num_key_value_heads=3), 'multiple'),
  ],
)
def test_config_errors(change, match):
  with pytest.raises(ValueError, match=match):
    hf.config_from_dict(dict(QWEN_JSON, **change))


@pytest.mark.parametrize('family', ['qwen2', 'llama'])
def test_save_load_round_trip(tmp_path, family):
  cfg = TINY
  if family == 'llama':
    cfg = hf.HFConfig(**dict(TINY.__dict__, family='llama', qkv_bias=False, tie_embeddings=False))
  policy, params = _random(cfg)
  hf.save_pretrained(str(tmp_path), cfg, params)
  loaded_policy, loaded = hf.load_pretrained(str(tmp_path), dtype='float32', max_len=16)
  assert loaded_policy.max_len == 16 and hf.read_config(str(tmp_path)) == cfg
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  # With a value head: the same trunk, a fresh head, values of the right shape.
  vpolicy, vparams = hf.load_pretrained(str(tmp_path), dtype='float32', value_head=True)
  assert set(vparams) == set(params) | {'value'}
  tokens = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
  out = vpolicy.apply(vparams, tokens, jnp.ones((2, 5), bool))
  assert out.values.shape == (2, 5)
  ref = policy.apply(params, tokens, jnp.ones((2, 5), bool)).logits
  np.testing.assert_allclose(out.logits, ref, rtol=1e-5, atol=1e-5)


def test_load_errors(tmp_path):
  _, params = _random()
  hf.save_pretrained(str(tmp_path), TINY, params)
  (tmp_path / 'model.safetensors').rename(tmp_path / 'x.bin')
  with pytest.raises(FileNotFoundError, match='safetensors'):
    hf.load_pretrained(str(tmp_path))
  small = hf.HFConfig(**dict(TINY.__dict__, num_layers=1))
  hf.save_pretrained(str(tmp_path), small, jax.tree.map(lambda x: x, params))
  (tmp_path / 'config.json').write_text((tmp_path / 'config.json').read_text())
  bigger = dict(hf.config_to_dict(TINY), num_hidden_layers=3)
  import json

  (tmp_path / 'config.json').write_text(json.dumps(bigger))
  with pytest.raises(ValueError, match='lacks tensors'):
    hf.load_pretrained(str(tmp_path))


def test_grouped_query_equals_repeated_heads():
  """GQA with Hkv heads == multi-head attention whose k/v heads are the repeated kv heads."""
  policy, params = _random()
  mha_cfg = hf.HFConfig(**dict(TINY.__dict__, num_kv_heads=TINY.num_heads))
  mha = hf.make_policy(mha_cfg)
  group, dh = TINY.num_heads // TINY.num_kv_heads, TINY.head_dim
  mha_params = jax.tree.map(lambda x: x, params)
  for i in range(TINY.num_layers):
    attn = mha_params[f'layer_{i}_attn']
    for name in ('k', 'v'):
      kern = attn[name]['kernel'].reshape(TINY.hidden_size, TINY.num_kv_heads, dh)
      attn[name] = dict(
        kernel=jnp.repeat(kern, group, axis=1).reshape(TINY.hidden_size, -1),
        bias=jnp.repeat(attn[name]['bias'].reshape(-1, dh), group, axis=0).reshape(-1),
      )
  tokens = jax.random.randint(jax.random.key(3), (3, 9), 0, TINY.vocab_size)
  valid = jnp.ones((3, 9), bool)
  np.testing.assert_allclose(
    policy.apply(params, tokens, valid).logits,
    mha.apply(mha_params, tokens, valid).logits,
    rtol=1e-5,
    atol=1e-5,
  )


def test_padding_invariance_and_attention_maps():
  policy, params = _random()
  tokens = jax.random.randint(jax.random.key(4), (1, 6), 1, TINY.vocab_size)
  base = policy.apply(params, tokens, jnp.ones((1, 6), bool)).logits
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), tokens, jnp.zeros((1, 2), jnp.int32)], 1)
  valid = jnp.arange(11)[None] >= 3
  valid = valid & (jnp.arange(11)[None] < 9)
  out = policy.apply(params, padded, valid, return_attention=True)
  np.testing.assert_allclose(out.logits[:, 3:9], base, rtol=1e-5, atol=1e-5)
  assert out.attention.shape == (1, TINY.num_layers, TINY.num_heads, 11, 11)
  np.testing.assert_allclose(out.attention.sum(-1), 1.0, rtol=1e-5)
  assert float(out.attention[0, :, :, 5, :3].max()) == 0.0  # never attends to padding


def test_cached_sampling_equals_full_recompute():
  policy, params = _random()
  prompts = jax.random.randint(jax.random.key(5), (2, 5), 1, TINY.vocab_size)
  mask = jnp.array([[True] * 5, [False, False, True, True, True]])
  run = lambda cache: sampling.sample(
    policy,
    params,
    jax.random.key(6),
    prompts,
    mask,
    num_samples=3,
    max_new_tokens=6,
    eos_id=1,
    pad_id=0,
    use_cache=cache,
  )
  a, b = run(True), run(False)
  np.testing.assert_array_equal(a.responses, b.responses)
  np.testing.assert_allclose(a.log_probs, b.log_probs, rtol=1e-4, atol=1e-5)
  re = transformer.response_log_probs(policy.apply(params, a.tokens, a.valid).logits, a.tokens, 5)
  np.testing.assert_allclose(jnp.where(a.mask, re, 0), a.log_probs, rtol=1e-4, atol=1e-5)


def test_bfloat16_compute_close_to_float32():
  policy, params = _random()
  bf = hf.make_policy(TINY, dtype='bfloat16', param_dtype='bfloat16')
  params_bf = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  tokens = jax.random.randint(jax.random.key(7), (2, 8), 0, TINY.vocab_size)
  valid = jnp.ones((2, 8), bool)
  ref = policy.apply(params, tokens, valid).logits
  out = bf.apply(params_bf, tokens, valid).logits
  assert out.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out - ref))) < 0.1 * float(jnp.max(jnp.abs(ref)))


def test_learner_update_runs_with_hf_policy():
  """The LM learner takes the HF policy unchanged (GRPO on arithmetic chains)."""
  task = arith.make_task(num_steps=1, modulus=5)
  cfg = hf.HFConfig(**dict(TINY.__dict__, vocab_size=task.vocab.size))
  policy = hf.make_policy(cfg)
  params = policy.init(jax.random.key(0))
  rollout = lm.make_rollout_fn(policy, task, estimators.make('grpo'), group_size=2)
  batch = {k: jnp.asarray(v) for k, v in task.generate(0, 3).items()}
  rb, metrics = jax.jit(functools.partial(rollout, ref_params=None))(
    params, batch=batch, key=jax.random.key(1)
  )
  assert rb.tokens.shape == (6, task.prompt_len + task.response_len)
  loss_fn = lm.make_ppo_loss(policy, prompt_len=task.prompt_len)
  loss, _ = loss_fn(params, rb)
  grads = jax.grad(lambda p: loss_fn(p, rb)[0])(params)
  assert np.isfinite(float(loss)) and set(grads) == set(params)
  assert np.isfinite(float(metrics['reward']))


def test_bfloat16_checkpoint_loads_exactly(tmp_path):
  """Released Qwen2.5 / Llama 3.2 files are BF16: read as such, then stored as asked."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top

  policy, params = _random(TINY)
  hf.save_pretrained(str(tmp_path), TINY, params, dtype='bfloat16')
  with safe_open(str(tmp_path / 'model.safetensors'), framework='numpy') as f:
    assert {f.get_tensor(k).dtype for k in f.keys()} == {np.dtype(ml_dtypes.bfloat16)}
  rounded = jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16), params)
  _, as_f32 = hf.load_pretrained(str(tmp_path), dtype='float32')
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(np.float32)), as_f32, rounded)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(as_f32))
  bf16_policy, as_bf16 = hf.load_pretrained(str(tmp_path), param_dtype='bfloat16')
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(as_bf16))
  jax.tree.map(np.testing.assert_array_equal, as_bf16, rounded)
  # BF16 weights and compute stay close to the float32 model.
  tokens = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
  mask = jnp.ones((2, 5), bool)
  ref = policy.apply(params, tokens, mask).logits
  out = bf16_policy.apply(as_bf16, tokens, mask).logits
  assert float(jnp.max(jnp.abs(out - ref))) < 0.05 * max(1.0, float(jnp.max(jnp.abs(ref))))
