"""Pretrained Llama / Qwen2 decoder models from local Hugging Face-format checkpoints.

`load_pretrained(path)` reads `config.json` and the `*.safetensors` weights of a checkpoint
directory (e.g. a downloaded Qwen2.5-0.5B or Llama-3.2-1B) and returns `(Policy, params)`:
the same `networks.transformer.Policy` interface as `make_policy`, so `sampling.sample`, the
estimators and the LM learner (`jaxca.lm`) use it unchanged. `make_policy(config)` builds the
same architecture at random (benchmarks, smoke tests).

Architecture (Llama: Touvron et al. 2023, arXiv 2302.13971 and Grattafiori et al. 2024,
arXiv 2407.21783; Qwen2: Yang et al. 2024, arXiv 2407.10671): token embedding -> pre-norm
blocks [RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467, Eq. 4) -> grouped-query attention
(Ainslie et al. 2023, arXiv 2305.13245) with rotary positions (Su et al. 2021, arXiv
2104.09864, Eq. 34, half-split form) -> residual -> RMSNorm -> SwiGLU MLP (Shazeer 2020,
arXiv 2002.05202, Eq. 6: `down(silu(gate(x)) * up(x))`) -> residual] -> RMSNorm -> logits
(the embedding matrix when tied). Qwen2 adds biases to the q/k/v projections; Llama's
optional `attention_bias` / `mlp_bias` are honoured. Rotary frequencies use `rope_theta`
from the config, with the 'linear' and 'llama3' frequency scalings (the latter from Llama 3,
arXiv 2407.21783, Sec. 3.3 and its released code).

Conventions are those of `networks.transformer` (read its module docstring): `tokens`/`valid`
`[B, L]`, positions `cumsum(valid) - 1`, invalid tokens attend only to themselves, the
explicit `KVCache` pytree (keys/values `[B, S, Hkv, Dh]`, Hkv the key/value heads), float32
logits and value head, attention softmax in float32. `dtype` is the compute dtype of the
trunk; `param_dtype` the storage dtype of the parameters (float32 by default, as for
`make_policy`; 'bfloat16' halves the memory of a large model).

Parameter tree: `embed/embedding [V, W]`, `layer_{i}/{input_norm,post_norm}/scale [W]`,
`layer_{i}/attn/{q,k,v,o}/kernel [in, out]` (+ `bias`), `layer_{i}/mlp/{gate,up,down}/kernel`,
`final_norm/scale`, `lm_head/kernel [W, V]` (untied only), `value/{kernel,bias}` (value head
only). Kernels are the transposed Hugging Face `weight`s.

`load_pretrained` and `read_config` are host-side (they read files); the Flax module and
`make_policy` are pure.
"""

import dataclasses
import glob
import json
import math
import os
from typing import Any
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes  # registers bfloat16 with NumPy: safetensors reads BF16 files as it
import numpy as np

from jaxca.networks import transformer

FAMILIES = ('llama', 'qwen2')
ROPE_TYPES = ('default', 'linear', 'llama3')
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class HFConfig:
  """Architecture of a Llama / Qwen2 checkpoint (the fields of its `config.json` we use).

  Attributes:
    family: 'llama' | 'qwen2' (`model_type`).
    vocab_size: V.
    hidden_size: W.
    intermediate_size: SwiGLU hidden width.
    num_layers: blocks.
    num_heads: query heads H.
    num_kv_heads: key/value heads Hkv (H % Hkv == 0; grouped-query attention).
    head_dim: Dh (default W // H).
    rms_eps: RMSNorm epsilon.
    rope_theta: rotary base.
    rope_scaling: None or a sorted tuple of (key, value) pairs with `rope_type` in ROPE_TYPES.
    tie_embeddings: the logits use the embedding matrix.
    qkv_bias: biases on q/k/v (Qwen2; Llama with `attention_bias`).
    o_bias: bias on the output projection (Llama with `attention_bias`).
    mlp_bias: biases in the MLP (Llama with `mlp_bias`).
    max_position_embeddings: the checkpoint's context length (default `max_len`).
  """

  family: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_eps: float = 1e-6
  rope_theta: float = 10_000.0
  rope_scaling: tuple | None = None
  tie_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  max_position_embeddings: int = 2048

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f'Unsupported model family {self.family!r}; choices: {FAMILIES}.')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f'`num_heads` ({self.num_heads}) must be a multiple of `num_kv_heads` '
        f'({self.num_kv_heads}).'
      )
    if self.head_dim % 2:
      raise ValueError(f'`head_dim` must be even (rotary); got {self.head_dim}.')
    rope_type = dict(self.rope_scaling or ()).get('rope_type', 'default')
    if rope_type not in ROPE_TYPES:
      raise ValueError(f'Unsupported rope_type {rope_type!r}; choices: {ROPE_TYPES}.')


def config_from_dict(d: dict) -> HFConfig:
  """An `HFConfig` from a Hugging Face `config.json` dict (transformers 4.x or 5.x layout).

  Raises:
    ValueError: an unsupported `model_type`, activation, rope type or sliding window.
  """
  family = d.get('model_type')
  if family not in FAMILIES:
    raise ValueError(f'Unsupported model_type {family!r}; choices: {FAMILIES}.')
  act = d.get('hidden_act', 'silu')
  if act != 'silu':
    raise ValueError(f'Unsupported hidden_act {act!r}; only SwiGLU with silu is implemented.')
  if d.get('use_sliding_window'):
    raise ValueError('Sliding-window attention (`use_sliding_window=True`) is not implemented.')
  heads = int(d['num_attention_heads'])
  # transformers 5 nests the rotary settings in `rope_parameters`; 4.x has `rope_theta` and
  # `rope_scaling` at the top level (what downloaded checkpoints usually carry).
  rope = dict(d.get('rope_parameters') or {})
  if not rope:
    rope = dict(d.get('rope_scaling') or {})
    if 'rope_theta' in d:
      rope['rope_theta'] = d['rope_theta']
  theta = float(rope.pop('rope_theta', 10_000.0))
  if 'type' in rope and 'rope_type' not in rope:
    rope['rope_type'] = rope.pop('type')
  rope_type = rope.get('rope_type', 'default')
  scaling = None if rope_type == 'default' else tuple(sorted(rope.items()))
  attention_bias = bool(d.get('attention_bias', False))
  qwen = family == 'qwen2'
  return HFConfig(
    family=family,
    vocab_size=int(d['vocab_size']),
    hidden_size=int(d['hidden_size']),
    intermediate_size=int(d['intermediate_size']),
    num_layers=int(d['num_hidden_layers']),
    num_heads=heads,
    num_kv_heads=int(d.get('num_key_value_heads') or heads),
    head_dim=int(d.get('head_dim') or d['hidden_size'] // heads),
    rms_eps=float(d.get('rms_norm_eps', 1e-6)),
    rope_theta=theta,
    rope_scaling=scaling,
    tie_embeddings=bool(d.get('tie_word_embeddings', qwen)),
    qkv_bias=qwen or attention_bias,
    o_bias=attention_bias and not qwen,
    mlp_bias=bool(d.get('mlp_bias', False)),
    max_position_embeddings=int(d.get('max_position_embeddings', 2048)),
  )


def read_config(path: str) -> HFConfig:
  """Host side: the `HFConfig` of the checkpoint directory `path` (its `config.json`)."""
  with open(os.path.join(path, 'config.json')) as f:
    return config_from_dict(json.load(f))


def inv_frequencies(cfg: HFConfig) -> np.ndarray:
  """[Dh / 2] float32 rotary inverse frequencies `theta^(-2i / Dh)`, scaled as configured.

  'linear' divides them by `factor` (position interpolation, Chen et al. 2023, arXiv
  2306.15595); 'llama3' divides the low frequencies by `factor`, keeps the high ones and
  interpolates between (Llama 3, arXiv 2407.21783).
  """
  dim = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  rope = dict(cfg.rope_scaling or ())
  kind = rope.get('rope_type', 'default')
  if kind == 'linear':
    inv = inv / float(rope['factor'])
  elif kind == 'llama3':
    factor = float(rope['factor'])
    low, high = float(rope['low_freq_factor']), float(rope['high_freq_factor'])
    old_len = float(rope['original_max_position_embeddings'])
    wavelen = 2 * math.pi / inv
    smooth = (old_len / wavelen - low) / (high - low)
    mid = (1 - smooth) * inv / factor + smooth * inv
    kept = np.where(wavelen < old_len / high, inv, mid)
    inv = np.where(wavelen > old_len / low, inv / factor, kept)

  return inv.astype(np.float32)


def _rotary(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Half-split rotary embedding of `x [B, L, H, Dh]` at `positions [B, L]`."""
  angle = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
  sin = jnp.sin(angle)[:, :, None, :]
  cos = jnp.cos(angle)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class _RMSNorm(nn.Module):
  """`scale * x / sqrt(mean(x^2) + eps)`, normalised in float32 (arXiv 1910.07467, Eq. 4)."""

  eps: float
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return y.astype(self.dtype) * scale.astype(self.dtype).reshape((1,) * (x.ndim - 1) + (-1,))


class _Attention(nn.Module):
  """Grouped-query attention with rotary positions and an optional cache."""

  cfg: HFConfig
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x, positions, mask, inv_freq, cache, index):
    """x: [B, L, W]; positions: [B, L]; mask: [B, L, K] bool; index: [] int32 or None."""
    cfg = self.cfg
    b, length, width = x.shape
    h, hkv, dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    dense = lambda n, bias, name: nn.Dense(
      n, use_bias=bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    q = dense(h * dh, cfg.qkv_bias, 'q')(x).reshape(b, length, h, dh)
    k = dense(hkv * dh, cfg.qkv_bias, 'k')(x).reshape(b, length, hkv, dh)
    v = dense(hkv * dh, cfg.qkv_bias, 'v')(x).reshape(b, length, hkv, dh)
    q, k = _rotary(q, positions, inv_freq), _rotary(k, positions, inv_freq)
    new_cache = None
    if cache is not None:
      start = (0, index, 0, 0)
      k = jax.lax.dynamic_update_slice(cache.keys, k.astype(cache.keys.dtype), start)
      v = jax.lax.dynamic_update_slice(cache.values, v.astype(cache.values.dtype), start)
      new_cache = transformer.LayerCache(k, v)
    group = h // hkv
    q = q.reshape(b, length, hkv, group, dh)  # query head kv * group + g reads kv head kv
    logits = jnp.einsum('bqhgd,bkhd->bhgqk', q, k, preferred_element_type=jnp.float32)
    logits = logits * (dh**-0.5)
    logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)  # [B, Hkv, G, L, K] float32
    out = jnp.einsum('bhgqk,bkhd->bqhgd', probs.astype(self.dtype), v.astype(self.dtype))
    out = dense(width, cfg.o_bias, 'o')(out.reshape(b, length, h * dh))
    return out, new_cache, probs.reshape(b, h, length, -1)


class _MLP(nn.Module):
  """SwiGLU: `down(silu(gate(x)) * up(x))` (arXiv 2002.05202, Eq. 6)."""

  cfg: HFConfig
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dense = lambda n, name: nn.Dense(
      n, use_bias=cfg.mlp_bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    y = nn.silu(dense(cfg.intermediate_size, 'gate')(x)) * dense(cfg.intermediate_size, 'up')(x)
    return dense(x.shape[-1], 'down')(y)


class HFTransformer(nn.Module):
  """Llama / Qwen2 decoder with the call signature of `transformer.Transformer`.

  Attributes:
    cfg: the `HFConfig`.
    max_len: longest supported sequence (bounds the KV cache).
    dtype: compute dtype of the trunk (logits, values and softmax are float32).
    param_dtype: storage dtype of the parameters.
    value_head: also output a float32 scalar value per position.
    logits_head: output the logits.
  """

  cfg: HFConfig
  max_len: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  value_head: bool = False
  logits_head: bool = True

  # The cache layout `transformer.init_cache` reads.
  @property
  def depth(self) -> int:
    return self.cfg.num_layers

  @property
  def num_heads(self) -> int:
    return self.cfg.num_heads

  @property
  def num_kv_heads(self) -> int:
    return self.cfg.num_kv_heads

  @property
  def head_dim(self) -> int:
    return self.cfg.head_dim

  @property
  def width(self) -> int:
    return self.cfg.hidden_size

  @nn.compact
  def __call__(self, tokens, valid, cache=None, return_attention: bool = False, logits_from=0):
    """As `transformer.Transformer.__call__`: (PolicyOutput, updated cache or None)."""
    if return_attention and cache is not None:
      raise ValueError('`return_attention=True` is only supported without a `cache`.')
    cfg = self.cfg
    length = tokens.shape[1]
    valid = valid.astype(jnp.bool_)
    steps = jnp.cumsum(valid.astype(jnp.int32), axis=1)
    if cache is None:
      positions = jnp.maximum(steps - 1, 0)
      key_valid, q_col, k_col = valid, jnp.arange(length), jnp.arange(length)
    else:
      positions = jnp.maximum(cache.count[:, None] + steps - 1, 0)
      key_valid = jax.lax.dynamic_update_slice(cache.valid, valid, (0, cache.index))
      q_col = cache.index + jnp.arange(length)
      k_col = jnp.arange(cache.valid.shape[1])
    causal = k_col[None, None, :] <= q_col[None, :, None]
    itself = k_col[None, None, :] == q_col[None, :, None]
    mask = causal & ((key_valid[:, None, :] & valid[:, :, None]) | itself)
    inv_freq = jnp.asarray(inv_frequencies(cfg))

    embed = nn.Embed(
      cfg.vocab_size,
      cfg.hidden_size,
      embedding_init=nn.initializers.normal(stddev=0.02),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='embed',
    )
    x = embed(tokens)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    new_layers, maps = [], []
    for i in range(cfg.num_layers):
      layer_cache = None if cache is None else cache.layers[i]
      y = _RMSNorm(cfg.rms_eps, name=f'layer_{i}_input_norm', **kw)(x)
      y, layer_cache, probs = _Attention(cfg, name=f'layer_{i}_attn', **kw)(
        y, positions, mask, inv_freq, layer_cache, None if cache is None else cache.index
      )
      x = x + y
      y = _RMSNorm(cfg.rms_eps, name=f'layer_{i}_post_norm', **kw)(x)
      x = x + _MLP(cfg, name=f'layer_{i}_mlp', **kw)(y)
      new_layers.append(layer_cache)
      if return_attention:
        maps.append(probs)
    x = _RMSNorm(cfg.rms_eps, dtype=jnp.float32, param_dtype=self.param_dtype, name='final_norm')(
      x.astype(jnp.float32)
    )
    logits = None
    if self.logits_head:
      head = x[:, logits_from:]  # `transformer.Transformer`'s `logits_from`
      if cfg.tie_embeddings:
        logits = head @ embed.embedding.astype(jnp.float32).T
      else:
        logits = nn.Dense(
          cfg.vocab_size,
          use_bias=False,
          dtype=jnp.float32,
          param_dtype=self.param_dtype,
          name='lm_head',
        )(head)
    values = None
    if self.value_head:
      values = nn.Dense(1, dtype=jnp.float32, name='value')(x)[..., 0]
    new_cache = None
    if cache is not None:
      new_cache = transformer.KVCache(
        layers=tuple(new_layers),
        valid=key_valid,
        index=cache.index + length,
        count=cache.count + steps[:, -1],
      )
    attention = jnp.stack(maps, axis=1) if return_attention else None
    return transformer.PolicyOutput(logits, values, attention), new_cache


def make_policy(
  cfg: HFConfig,
  *,
  dtype: str = 'float32',
  param_dtype: str = 'float32',
  value_head: bool = False,
  max_len: int | None = None,
) -> transformer.Policy:
  """A `transformer.Policy` over `HFTransformer(cfg)`; `init(key)` draws random weights.

  Args:
    cfg: the architecture.
    dtype: compute dtype, 'float32' | 'bfloat16'.
    param_dtype: parameter dtype, 'float32' | 'bfloat16'.
    value_head: add a float32 value head.
    max_len: longest sequence (prompt + response); default `cfg.max_position_embeddings`.
  """
  for name, value in (('dtype', dtype), ('param_dtype', param_dtype)):
    if value not in _DTYPES:
      raise ValueError(f'Unknown {name} {value!r}; choices: {sorted(_DTYPES)}.')
  max_len = cfg.max_position_embeddings if max_len is None else int(max_len)
  if max_len < 1:
    raise ValueError(f'`max_len` must be positive; got {max_len}.')
  module = HFTransformer(
    cfg=cfg,
    max_len=max_len,
    dtype=_DTYPES[dtype],
    param_dtype=_DTYPES[param_dtype],
    value_head=bool(value_head),
  )

  def init(key):
    tokens = jnp.zeros((1, 1), jnp.int32)
    return module.init(key, tokens, jnp.ones((1, 1), jnp.bool_))['params']

  def apply(params, tokens, valid, return_attention=False, logits_from=0):
    transformer.check_apply_args(tokens, valid, max_len, logits_from)
    return module.apply(
      {'params': params}, tokens, valid, return_attention=return_attention, logits_from=logits_from
    )[0]

  return transformer.Policy(
    init=init, apply=apply, module=module, vocab_size=cfg.vocab_size, max_len=max_len
  )


def _hf_names(cfg: HFConfig) -> dict:
  """{our parameter path (tuple): (Hugging Face tensor name, transpose)}."""
  names = {('embed', 'embedding'): ('model.embed_tokens.weight', False)}
  for i in range(cfg.num_layers):
    pre = f'model.layers.{i}.'
    names[(f'layer_{i}_input_norm', 'scale')] = (pre + 'input_layernorm.weight', False)
    names[(f'layer_{i}_post_norm', 'scale')] = (pre + 'post_attention_layernorm.weight', False)
    biases = dict(q=cfg.qkv_bias, k=cfg.qkv_bias, v=cfg.qkv_bias, o=cfg.o_bias)
    for ours, bias in biases.items():
      names[(f'layer_{i}_attn', ours, 'kernel')] = (pre + f'self_attn.{ours}_proj.weight', True)
      if bias:
        names[(f'layer_{i}_attn', ours, 'bias')] = (pre + f'self_attn.{ours}_proj.bias', False)
    for ours in ('gate', 'up', 'down'):
      names[(f'layer_{i}_mlp', ours, 'kernel')] = (pre + f'mlp.{ours}_proj.weight', True)
      if cfg.mlp_bias:
        names[(f'layer_{i}_mlp', ours, 'bias')] = (pre + f'mlp.{ours}_proj.bias', False)
  names[('final_norm', 'scale')] = ('model.norm.weight', False)
  if not cfg.tie_embeddings:
    names[('lm_head', 'kernel')] = ('lm_head.weight', True)
  return names


def load_pretrained(
  path: str,
  *,
  dtype: str = 'bfloat16',
  param_dtype: str = 'float32',
  value_head: bool = False,
  max_len: int | None = None,
  key: jax.Array | None = None,
):
  """Host side: a Llama / Qwen2 checkpoint directory -> `(Policy, params)`.

  Args:
    path: a local Hugging Face-format directory: `config.json` and one or more
      `*.safetensors` files (read with the `safetensors` library).
    dtype: compute dtype, 'bfloat16' | 'float32'.
    param_dtype: storage dtype of the returned parameters, 'float32' | 'bfloat16'.
    value_head: add a freshly initialised float32 value head (drawn with `key`).
    max_len: longest sequence; default the checkpoint's `max_position_embeddings`.
    key: PRNG key of the value head (default `jax.random.key(0)`).

  Returns:
    (Policy, params): params is a pytree of host NumPy arrays (place or shard them with
    `jax.device_put`; see `jaxca.parallel`).

  Raises:
    ValueError: unsupported architecture, or missing / misshapen tensors.
    FileNotFoundError: no config.json or no safetensors file.
  """
  from safetensors import safe_open  # host-side dependency, only needed to load

  cfg = read_config(path)
  policy = make_policy(
    cfg, dtype=dtype, param_dtype=param_dtype, value_head=value_head, max_len=max_len
  )
  files = sorted(glob.glob(os.path.join(path, '*.safetensors')))
  if not files:
    raise FileNotFoundError(f'No *.safetensors file in {path!r}.')
  np_dtype = np.dtype(jnp.dtype(_DTYPES[param_dtype]))
  names = _hf_names(cfg)
  wanted = {hf: (ours, t) for ours, (hf, t) in names.items()}
  found = {}
  for file in files:
    with safe_open(file, framework='numpy') as f:
      for name in f.keys():
        if name in wanted:
          ours, transpose = wanted[name]
          x = f.get_tensor(name)
          found[ours] = np.ascontiguousarray(x.T if transpose else x).astype(np_dtype)
  missing = sorted(hf for ours, (hf, _) in names.items() if ours not in found)
  if missing:
    more = '...' if len(missing) > 8 else ''
    raise ValueError(f'Checkpoint {path!r} lacks tensors: {missing[:8]}{more}')
  # Shapes from an abstract init; the value head (the only fresh parameter) is drawn here.
  shapes = jax.eval_shape(policy.init, jax.random.key(0))
  params = {}
  for ours_path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    ours = tuple(p.key for p in ours_path)
    if ours[0] == 'value':
      continue
    if ours not in found:
      raise ValueError(f'Parameter {"/".join(ours)} has no tensor in the checkpoint.')
    if found[ours].shape != leaf.shape:
      raise ValueError(
        f'Tensor {names[ours][0]} has shape {found[ours].shape} (after transposing); '
        f'the config implies {leaf.shape}.'
      )
    node = params
    for part in ours[:-1]:
      node = node.setdefault(part, {})
    node[ours[-1]] = found[ours]
  if value_head:
    key = jax.random.key(0) if key is None else key
    head = nn.Dense(1, dtype=jnp.float32)
    params['value'] = jax.tree.map(
      np.asarray, head.init(key, jnp.zeros((1, cfg.hidden_size), jnp.float32))['params']
    )
  return policy, params


def config_to_dict(cfg: HFConfig) -> dict:
  """The Hugging Face `config.json` dict of `cfg` (transformers 4.x layout; inverse of
  `config_from_dict`)."""
  d = dict(
    architectures=['LlamaForCausalLM' if cfg.family == 'llama' else 'Qwen2ForCausalLM'],
    model_type=cfg.family,
    vocab_size=cfg.vocab_size,
    hidden_size=cfg.hidden_size,
    intermediate_size=cfg.intermediate_size,
    num_hidden_layers=cfg.num_layers,
    num_attention_heads=cfg.num_heads,
    num_key_value_heads=cfg.num_kv_heads,
    head_dim=cfg.head_dim,
    hidden_act='silu',
    rms_norm_eps=cfg.rms_eps,
    rope_theta=cfg.rope_theta,
    rope_scaling=None if cfg.rope_scaling is None else dict(cfg.rope_scaling),
    tie_word_embeddings=cfg.tie_embeddings,
    max_position_embeddings=cfg.max_position_embeddings,
    torch_dtype='float32',
  )
  if cfg.family == 'llama':
    if cfg.qkv_bias != cfg.o_bias:
      raise ValueError('A Llama config has biases on all of q/k/v/o or on none.')
    d.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
  elif not cfg.qkv_bias or cfg.o_bias or cfg.mlp_bias:
    raise ValueError('A Qwen2 config has q/k/v biases and no other biases.')
  return d


def save_pretrained(path: str, cfg: HFConfig, params, dtype: Optional[str] = None) -> None:
  """Host side: writes `config.json` and `model.safetensors` that `load_pretrained` (and
  `transformers`) read back; a value head is not saved. Used to build tiny local checkpoints
  for smoke runs and tests. `dtype` 'bfloat16' stores BF16 tensors, as released Qwen2.5
  and Llama 3.2 checkpoints are; 'float32' float32; None (default) the parameters' own."""
  if dtype is not None and dtype not in _DTYPES:
    raise ValueError(f'save_pretrained: dtype={dtype!r}; expected one of {sorted(_DTYPES)}.')
  np_dtype = {None: None, 'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16}[dtype]
  from safetensors.numpy import save_file

  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(config_to_dict(cfg), f, indent=2)
  tensors = {}
  for ours, (name, transpose) in _hf_names(cfg).items():
    node = params
    for part in ours:
      node = node[part]
    x = np.asarray(node) if np_dtype is None else np.asarray(node).astype(np_dtype)
    tensors[name] = np.ascontiguousarray(x.T if transpose else x)
  save_file(tensors, os.path.join(path, 'model.safetensors'), metadata={'format': 'pt'})
