"""`networks.hf` against Hugging Face `transformers` on tiny random checkpoints saved locally.

The references need torch and transformers (`pip install -e ".[crosscheck]"`; the CPU build
of torch suffices). Without them every test here is skipped with the reason.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
  'torch', reason='cross-check reference: pip install -e ".[crosscheck]" (CPU torch suffices)'
)
transformers = pytest.importorskip(
  'transformers', reason='cross-check reference: pip install -e ".[crosscheck]"'
)

from jaxca import sampling  # noqa: E402
from jaxca.networks import hf  # noqa: E402

_COMMON = dict(
  vocab_size=97,
  hidden_size=64,
  intermediate_size=96,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  max_position_embeddings=64,
  initializer_range=0.2,
  bos_token_id=1,
  eos_token_id=2,
  pad_token_id=0,
)
MODELS = {
  'llama': lambda: transformers.LlamaConfig(
    rms_norm_eps=1e-5, rope_theta=5_000.0, tie_word_embeddings=False, **_COMMON
  ),
  'llama_bias_tied_llama3_rope': lambda: transformers.LlamaConfig(
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    attention_bias=True,
    mlp_bias=True,
    head_dim=8,
    rope_scaling=dict(
      rope_type='llama3',
      rope_theta=500_000.0,
      factor=8.0,
      low_freq_factor=1.0,
      high_freq_factor=4.0,
      original_max_position_embeddings=16,
    ),
    **_COMMON,
  ),
  'qwen2': lambda: transformers.Qwen2Config(
    rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=True, **_COMMON
  ),
  'qwen2_untied_mha': lambda: transformers.Qwen2Config(
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    **dict(_COMMON, num_key_value_heads=4),
  ),
}


def _save(name, directory):
  torch.manual_seed(0)
  config = MODELS[name]()
  config._attn_implementation = 'eager'
  cls = transformers.LlamaForCausalLM if name.startswith('llama') else transformers.Qwen2ForCausalLM
  model = cls(config).eval()
  with torch.no_grad():  # non-trivial norms and biases
    for pname, p in model.named_parameters():
      if 'norm' in pname or pname.endswith('bias'):
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(directory, safe_serialization=True)
  return model


@pytest.fixture(scope='module', params=sorted(MODELS))
def pair(request, tmp_path_factory):
  directory = tmp_path_factory.mktemp(request.param)
  model = _save(request.param, directory)
  return request.param, model, str(directory)


def test_config_is_read(pair):
  name, model, path = pair
  cfg = hf.read_config(path)
  assert cfg.family == ('llama' if name.startswith('llama') else 'qwen2')
  assert cfg.num_kv_heads == model.config.num_key_value_heads
  assert cfg.tie_embeddings == model.config.tie_word_embeddings
  assert cfg.qkv_bias == (name != 'llama')


def test_logits_match_on_right_padded_batch(pair):
  _, model, path = pair
  policy, params = hf.load_pretrained(path, dtype='float32')
  rng = np.random.default_rng(0)
  lengths = np.array([12, 7, 1, 12, 4])
  tokens = rng.integers(3, 97, size=(5, 12))
  valid = np.arange(12)[None] < lengths[:, None]
  tokens = np.where(valid, tokens, 0)
  with torch.no_grad():
    ref = model(
      input_ids=torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64))
    ).logits.numpy()
  ours = np.asarray(policy.apply(params, jnp.asarray(tokens), jnp.asarray(valid)).logits)
  err = np.abs(ours - ref)[valid]
  scale = np.abs(ref)[valid]
  assert scale.max() > 1.0  # the check can fail: logits are far from zero
  np.testing.assert_array_less(err, 1e-4 * np.maximum(scale, 1.0))
  # And the check is sharp enough to see a wrong rotary base.
  assert np.max(err) < 1e-3 * np.max(scale)


def test_greedy_decoding_matches_generate(pair):
  _, model, path = pair
  policy, params = hf.load_pretrained(path, dtype='float32')
  rng = np.random.default_rng(1)
  prompts = rng.integers(3, 97, size=(3, 6))
  mask = np.ones((3, 6), bool)
  mask[1, :2] = False  # left padding
  mask[2, :4] = False
  prompts = np.where(mask, prompts, 0)
  new = 10
  with torch.no_grad():
    ref = model.generate(
      input_ids=torch.tensor(prompts),
      attention_mask=torch.tensor(mask.astype(np.int64)),
      max_new_tokens=new,
      min_new_tokens=new,
      do_sample=False,
      pad_token_id=0,
      eos_token_id=None,
    ).numpy()[:, 6:]
  fn = jax.jit(
    functools.partial(
      sampling.sample,
      policy,
      num_samples=1,
      max_new_tokens=new,
      eos_id=2,
      pad_id=0,
      greedy=True,
    )
  )
  out = fn(params, jax.random.key(0), jnp.asarray(prompts), jnp.asarray(mask))
  ours = np.asarray(out.responses)
  # Compare up to and including the first EOS (jaxca pads after it, generate goes on).
  for row in range(3):
    n = int(out.lengths[row])
    np.testing.assert_array_equal(ours[row, :n], ref[row, :n])
  assert out.lengths.min() >= 3


def test_bfloat16_checkpoint_logits_match_transformers(tmp_path):
  """A BF16 file (as Qwen2.5 and Llama 3.2 are released) read by both, computed in BF16."""
  _save('qwen2', tmp_path / 'f32').to(torch.bfloat16).save_pretrained(tmp_path / 'bf16')
  policy, params = hf.load_pretrained(str(tmp_path / 'bf16'), dtype='bfloat16')
  rng = np.random.default_rng(1)
  tokens = rng.integers(3, 97, size=(3, 10))
  valid = np.ones_like(tokens, bool)

  def reference(dtype):  # transformers reads the BF16 file into `dtype`
    model = transformers.Qwen2ForCausalLM.from_pretrained(
      tmp_path / 'bf16', dtype=dtype, attn_implementation='eager'
    ).eval()
    assert model.model.embed_tokens.weight.dtype == dtype
    with torch.no_grad():
      return model(input_ids=torch.tensor(tokens)).logits.float().numpy()

  ref = reference(torch.bfloat16)
  exact = reference(torch.float32)  # the BF16 weights in float32: only compute rounding differs
  ours = np.asarray(policy.apply(params, jnp.asarray(tokens), jnp.asarray(valid)).logits)
  policy32, params32 = hf.load_pretrained(str(tmp_path / 'bf16'), dtype='float32')
  ours32 = np.asarray(policy32.apply(params32, jnp.asarray(tokens), jnp.asarray(valid)).logits)
  scale = np.abs(exact).max()
  assert scale > 1.0
  np.testing.assert_allclose(ours32, exact, atol=1e-4 * scale, rtol=0)
  # BF16 compute on both sides: within BF16 rounding of the logits' scale (8 mantissa bits).
  assert np.abs(ours - ref).max() < 0.05 * scale, np.abs(ours - ref).max() / scale
  assert np.abs(ours - exact).max() < 0.05 * scale
