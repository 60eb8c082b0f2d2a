"""Decoder-only transformer policy (Flax linen) with an explicit KV-cache pytree.

Architecture: token embedding -> `depth` pre-norm blocks (RMSNorm, causal multi-head
self-attention with rotary positions, RMSNorm, GELU MLP) -> final RMSNorm -> float32 logits
head (and an optional float32 value head). Parameters are float32; `dtype` is the compute
dtype of the trunk (float32 or bfloat16). Logits and values are always float32, and attention
logits/softmax are computed in float32.

Padding convention. Every call takes `tokens [B, L]` and `valid [B, L]` (True for real
tokens). Prompts are LEFT-padded and responses right-padded, so a row looks like
`pad pad p0 p1 p2 r0 r1 EOS pad pad`. Rotary positions are `cumsum(valid) - 1` (clipped at 0),
so a real token's position does not depend on how much padding precedes it. Invalid tokens
attend only to themselves and are attended to by no other token: the logits of real tokens
are independent of the padding (up to float rounding), while outputs at invalid positions are
finite and causal but meaningless.

KV cache. Instead of Flax's mutable 'cache' collection the cache is an explicit pytree,
`KVCache`, passed in and returned by `Transformer.__call__`. Column `j` of the cache holds
the keys/values of column `j` of the full token sequence (prompt columns first, then one
column per decoding step), so a cached decode sees exactly the attention pattern of the full
forward pass over the concatenated tokens. All rows advance in lockstep (`index` is a scalar);
`count [B]` tracks the number of real tokens per row, from which new positions follow.
Build one with `init_cache(module, batch_size, size)`.

Attention maps. The non-cached forward can also return its attention probabilities
(`return_attention=True`): `[B, depth, H, L, L]` float32, post-softmax, with the causal and
padding mask applied exactly as the forward uses them (for a real query the row is a
distribution over the real keys at or before it; an invalid query's row is one-hot on itself).
They are the float32 softmax before the cast to the compute dtype. With the default
`return_attention=False` nothing extra is computed or kept.
"""

from typing import Any
from typing import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class PolicyOutput(NamedTuple):
  """Outputs of the policy network.

  Attributes:
    logits: [B, T, V] float32; `logits[:, t]` is the distribution of token `t + 1` (None for
      a critic built without a logits head).
    values: [B, T] float32 value of the state after token `t`, or None without a value head.
    attention: [B, layers, heads, T, T] float32 attention probabilities (query, key) of the
      non-cached forward when called with `return_attention=True`, else None.
  """

  logits: jax.Array
  values: jax.Array | None
  attention: jax.Array | None = None


class LayerCache(NamedTuple):
  """Keys and values of one attention layer.

  Attributes:
    keys: [B, S, H, Dh] compute dtype, rotary positions already applied.
    values: [B, S, H, Dh] compute dtype.
  """

  keys: jax.Array
  values: jax.Array


class KVCache(NamedTuple):
  """Explicit KV cache for incremental decoding.

  Attributes:
    layers: tuple with one `LayerCache` per transformer block.
    valid: [B, S] bool, True for the real tokens written so far.
    index: [] int32, the next column to write (shared by all rows).
    count: [B] int32, number of real tokens written so far (the next token's position).
  """

  layers: tuple
  valid: jax.Array
  index: jax.Array
  count: jax.Array


def init_cache(module: 'Transformer', batch_size: int, size: int) -> KVCache:
  """An empty cache with room for `size` columns (prompt length + new tokens).

  Args:
    module: the `Transformer` whose keys/values will be cached, or any module with the same
      cache layout (`depth`, `max_len`, `dtype`, and `num_kv_heads`/`head_dim` where they
      differ from `num_heads`/`width // num_heads`, as in `networks.hf`).
    batch_size: number of rows B.
    size: number of columns S; at most `module.max_len`.

  Returns:
    A `KVCache` of zeros in the module's compute dtype, keys/values `[B, S, Hkv, Dh]`.
  """
  if size > module.max_len:
    raise ValueError(f'cache `size` {size} exceeds the model `max_len` {module.max_len}.')
  head_dim = getattr(module, 'head_dim', None) or module.width // module.num_heads
  kv_heads = getattr(module, 'num_kv_heads', None) or module.num_heads
  shape = (batch_size, size, kv_heads, head_dim)
  layers = tuple(
    LayerCache(jnp.zeros(shape, module.dtype), jnp.zeros(shape, module.dtype))
    for _ in range(module.depth)
  )
  return KVCache(
    layers=layers,
    valid=jnp.zeros((batch_size, size), jnp.bool_),
    index=jnp.zeros((), jnp.int32),
    count=jnp.zeros((batch_size,), jnp.int32),
  )


def _rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
  """Rotary position embedding (half-split form) of `x [B, L, H, Dh]` at `positions [B, L]`."""
  half = x.shape[-1] // 2
  freq = 1.0 / (10_000.0 ** (jnp.arange(half, dtype=jnp.float32) / half))
  angle = positions.astype(jnp.float32)[:, :, None] * freq[None, None, :]  # [B, L, half]
  sin = jnp.sin(angle)[:, :, None, :]
  cos = jnp.cos(angle)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class _Attention(nn.Module):
  """Multi-head self-attention with rotary positions and an optional cache."""

  num_heads: int
  head_dim: int
  dtype: Any

  @nn.compact
  def __call__(self, x, positions, mask, cache: LayerCache | None, index):
    """x: [B, L, W]; positions: [B, L] int32; mask: [B, L, K] bool; index: [] int32."""
    width = x.shape[-1]
    dense = lambda name: nn.DenseGeneral(
      (self.num_heads, self.head_dim), use_bias=False, dtype=self.dtype, name=name
    )
    q = _rotary(dense('query')(x), positions)
    k = _rotary(dense('key')(x), positions)
    v = dense('value')(x)
    new_cache = None
    if cache is not None:
      start = (0, index, 0, 0)
      k = jax.lax.dynamic_update_slice(cache.keys, k.astype(cache.keys.dtype), start)
      v = jax.lax.dynamic_update_slice(cache.values, v.astype(cache.values.dtype), start)
      new_cache = LayerCache(k, v)
    q = q * jnp.asarray(self.head_dim**-0.5, q.dtype)
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32)
    logits = jnp.where(mask[:, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)  # [B, H, L, K] float32
    out = jnp.einsum('bhqk,bkhd->bqhd', probs.astype(self.dtype), v.astype(self.dtype))
    out = nn.DenseGeneral(width, axis=(-2, -1), use_bias=False, dtype=self.dtype, name='out')(out)
    return out, new_cache, probs


class Transformer(nn.Module):
  """Decoder-only pre-norm transformer with rotary positions (see the module docstring).

  Attributes:
    vocab_size: number of token ids V.
    width: model width W (divisible by `num_heads`, head dim even).
    depth: number of blocks.
    num_heads: attention heads H.
    max_len: longest supported sequence (prompt + response); bounds the KV cache.
    mlp_ratio: MLP hidden width is `mlp_ratio * width`.
    dtype: compute dtype of the trunk; parameters stay float32, heads are float32.
    value_head: also output a float32 scalar value per position.
    logits_head: output the logits (False for a separate critic, see `networks.critic`:
      `PolicyOutput.logits` is then None).
  """

  vocab_size: int
  width: int
  depth: int
  num_heads: int
  max_len: int
  mlp_ratio: int = 4
  dtype: Any = jnp.float32
  value_head: bool = False
  logits_head: bool = True

  @nn.compact
  def __call__(
    self,
    tokens: jax.Array,
    valid: jax.Array,
    cache: KVCache | None = None,
    return_attention: bool = False,
    logits_from: int = 0,
  ) -> tuple[PolicyOutput, KVCache | None]:
    """Runs the model on `tokens`, optionally appending them to `cache`.

    Args:
      tokens: [B, L] int32 token ids.
      valid: [B, L] bool, True for real tokens.
      cache: optional `KVCache` with room for L more columns. Without it the call is the
        full causal forward pass over `tokens`; with it, `tokens` are the next L columns
        after the ones already cached and attend to those too.
      return_attention: static Python bool; also return the attention probabilities
        `[B, depth, H, L, L]` float32 in `PolicyOutput.attention` (non-cached pass only).
      logits_from: static int; the logits are computed for columns >= `logits_from` only
        (`[B, L - logits_from, V]`): a learner scoring a response skips the prompt's share of
        the output projection, forward and backward.

    Returns:
      (PolicyOutput with logits [B, L - logits_from, V] float32, values [B, L] float32 or None and
       attention or None, the updated cache or None).
    """
    if return_attention and cache is not None:
      raise ValueError('`return_attention=True` is only supported without a `cache`.')
    batch, length = tokens.shape
    valid = valid.astype(jnp.bool_)
    steps = jnp.cumsum(valid.astype(jnp.int32), axis=1)
    if cache is None:
      positions = jnp.maximum(steps - 1, 0)
      key_valid = valid
      q_col = jnp.arange(length)
      k_col = jnp.arange(length)
    else:
      positions = jnp.maximum(cache.count[:, None] + steps - 1, 0)
      key_valid = jax.lax.dynamic_update_slice(cache.valid, valid, (0, cache.index))
      q_col = cache.index + jnp.arange(length)
      k_col = jnp.arange(cache.valid.shape[1])
    # [B, L, K]: causal, and only between real tokens; an invalid token attends only to
    # itself (keeps its output finite and causal), and no other token attends to it.
    causal = k_col[None, None, :] <= q_col[None, :, None]
    itself = k_col[None, None, :] == q_col[None, :, None]
    mask = causal & ((key_valid[:, None, :] & valid[:, :, None]) | itself)

    x = nn.Embed(
      self.vocab_size,
      self.width,
      embedding_init=nn.initializers.normal(stddev=1.0),
      dtype=self.dtype,
      name='embed',
    )(tokens)
    new_layers = []
    maps = []
    for i in range(self.depth):
      layer_cache = None if cache is None else cache.layers[i]
      y = nn.RMSNorm(dtype=self.dtype, name=f'attn_norm_{i}')(x)
      y, layer_cache, probs = _Attention(
        self.num_heads, self.width // self.num_heads, self.dtype, name=f'attn_{i}'
      )(y, positions, mask, layer_cache, None if cache is None else cache.index)
      if return_attention:
        maps.append(probs)
      x = x + y
      new_layers.append(layer_cache)
      y = nn.RMSNorm(dtype=self.dtype, name=f'mlp_norm_{i}')(x)
      y = nn.Dense(self.mlp_ratio * self.width, dtype=self.dtype, name=f'mlp_in_{i}')(y)
      y = nn.Dense(self.width, dtype=self.dtype, name=f'mlp_out_{i}')(nn.gelu(y))
      x = x + y
    x = nn.RMSNorm(dtype=jnp.float32, name='final_norm')(x.astype(jnp.float32))
    logits = None
    if self.logits_head:
      logits = nn.Dense(self.vocab_size, dtype=jnp.float32, name='logits')(x[:, logits_from:])
    values = nn.Dense(1, dtype=jnp.float32, name='value')(x)[..., 0] if self.value_head else None
    new_cache = None
    if cache is not None:
      new_cache = KVCache(
        layers=tuple(new_layers),
        valid=key_valid,
        index=cache.index + length,
        count=cache.count + steps[:, -1],
      )
    del batch
    attention = jnp.stack(maps, axis=1) if return_attention else None
    return PolicyOutput(logits, values, attention), new_cache


class Policy(NamedTuple):
  """Functional view of a `Transformer`.

  Attributes:
    init: (key) -> params, an explicit float32 pytree.
    apply: (params, tokens [B, L] int32, valid [B, L] bool, return_attention=False,
      logits_from=0) -> PolicyOutput (full causal pass; positions are cumsum(valid) - 1;
      invalid tokens neither attend nor are attended to; with the static
      `return_attention=True` its `attention` is the `[B, depth, H, L, L]` float32 attention
      probabilities; logits only for columns >= the static `logits_from`, `[B, L -
      logits_from, V]`).
    module: the `Transformer` (for cached decoding: `module.apply({'params': params},
      tokens, valid, cache=cache)`, see `jaxca.sampling`).
    vocab_size: V.
    max_len: longest supported sequence.
  """

  init: Callable
  apply: Callable
  module: Transformer
  vocab_size: int
  max_len: int


_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f'policy config `{name}` must be a positive int; got {value!r}.')
  return int(value)


DTYPES = tuple(_DTYPES)


def check_apply_args(tokens, valid, max_len: int, logits_from: int) -> None:
  """Raises ValueError on `Policy.apply` arguments of the wrong shape."""
  if tokens.ndim != 2 or tuple(valid.shape) != tuple(tokens.shape):
    raise ValueError(
      f'`tokens` must be [B, L] and `valid` the same shape; got {tokens.shape} and {valid.shape}.'
    )
  if tokens.shape[1] > max_len:
    raise ValueError(f'`tokens` length {tokens.shape[1]} exceeds policy max_len {max_len}.')
  if not (isinstance(logits_from, (int, np.integer)) and 0 <= logits_from < tokens.shape[1]):
    raise ValueError(
      f'`logits_from` must be a static int in [0, L={tokens.shape[1]}); got {logits_from!r}.'
    )


def check_config(cfg) -> None:
  """Checks a `policy` section: `width`, `depth`, `num_heads` and `max_len` (those present)
  positive ints, the heads dividing the width, `dtype` one of DTYPES. Raises ValueError naming
  the `field`."""
  for key in ('width', 'depth', 'num_heads', 'max_len'):
    if key in cfg:
      v = cfg[key]
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f'`{key}` must be a positive int; got {v!r}.')
  if 'width' in cfg and 'num_heads' in cfg and cfg['width'] % cfg['num_heads']:
    raise ValueError(f'`width`={cfg["width"]} must be divisible by `num_heads`={cfg["num_heads"]}.')
  if 'dtype' in cfg and cfg['dtype'] not in DTYPES:
    raise ValueError(f'Unknown `dtype`={cfg["dtype"]!r}; choose from {DTYPES}.')


def make_policy(cfg, *, vocab_size: int) -> Policy:
  """Builds a `Policy` from a config.

  Args:
    cfg: ConfigDict (or any attribute/`get` mapping) with `width`, `depth`, `num_heads`,
      `max_len`, `dtype` ('float32' | 'bfloat16'), `value_head` (bool) and optional
      `mlp_ratio` (default 4).
    vocab_size: number of token ids V.

  Returns:
    A `Policy`.

  Raises:
    ValueError: on an unknown dtype (listing the choices) or inconsistent sizes.
  """
  dtype_name = cfg.dtype
  if dtype_name not in _DTYPES:
    raise ValueError(f'Unknown policy dtype {dtype_name!r}; choices: {sorted(_DTYPES)}.')
  width = _positive_int('width', cfg.width)
  depth = _positive_int('depth', cfg.depth)
  num_heads = _positive_int('num_heads', cfg.num_heads)
  max_len = _positive_int('max_len', cfg.max_len)
  mlp_ratio = _positive_int('mlp_ratio', cfg.get('mlp_ratio', 4))
  vocab_size = _positive_int('vocab_size', vocab_size)
  if width % num_heads or (width // num_heads) % 2:
    raise ValueError(
      f'policy config `width` ({width}) must be divisible by `num_heads` ({num_heads}) '
      'with an even head dimension (rotary embeddings).'
    )
  value_head = cfg.value_head
  if not isinstance(value_head, bool):
    raise ValueError(f'policy config `value_head` must be a bool; got {value_head!r}.')
  module = Transformer(
    vocab_size=vocab_size,
    width=width,
    depth=depth,
    num_heads=num_heads,
    max_len=max_len,
    mlp_ratio=mlp_ratio,
    dtype=_DTYPES[dtype_name],
    value_head=value_head,
  )

  def init(key):
    tokens = jnp.zeros((1, 1), jnp.int32)
    return module.init(key, tokens, jnp.ones((1, 1), jnp.bool_))['params']

  def apply(params, tokens, valid, return_attention=False, logits_from=0):
    check_apply_args(tokens, valid, max_len, logits_from)
    return module.apply(
      {'params': params}, tokens, valid, return_attention=return_attention, logits_from=logits_from
    )[0]

  return Policy(init=init, apply=apply, module=module, vocab_size=vocab_size, max_len=max_len)


def response_log_probs(
  logits: jax.Array, tokens: jax.Array, prompt_len: int, *, temperature: float = 1.0
) -> jax.Array:
  """Log-probabilities of the response tokens under the policy.

  Args:
    logits: [B, L, V] float logits from `Policy.apply` on `tokens`.
    tokens: [B, L] int32, prompt (columns < prompt_len) followed by the response.
    prompt_len: number of prompt columns Lp (>= 1).
    temperature: logits are divided by it first; use the sampling temperature so that the
      result matches `sampling.Samples.log_probs` (default 1, the untempered policy).

  Returns:
    [B, L - prompt_len] float32: `log softmax(logits[:, t - 1] / temperature)[tokens[:, t]]`
    for t >= prompt_len. Entries at padding are finite but meaningless; mask them.
  """
  if not 1 <= prompt_len < tokens.shape[1]:
    raise ValueError(f'`prompt_len` must be in [1, L); got {prompt_len} with L={tokens.shape[1]}.')
  if tuple(logits.shape[:2]) != tuple(tokens.shape):
    raise ValueError(f'`logits` {logits.shape} must be [B, L, V] for `tokens` {tokens.shape}.')
  return target_log_probs(logits[:, prompt_len - 1 : -1], tokens[:, prompt_len:], temperature)


def target_log_probs(logits: jax.Array, targets: jax.Array, temperature: float = 1.0) -> jax.Array:
  """[..., N] float32 `log softmax(logits / temperature)[targets]` of `logits` [..., N, V]
  already aligned with `targets` [..., N] (the logits that predict each target)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature)
  return jnp.take_along_axis(logp, targets.astype(jnp.int32)[..., None], axis=-1)[..., 0]


def response_values(values: jax.Array, prompt_len: int) -> jax.Array:
  """Values of the states before each response token.

  Args:
    values: [B, L] float32 values from `Policy.apply` (value after token t).
    prompt_len: number of prompt columns Lp (>= 1).

  Returns:
    [B, L - prompt_len] float32: `values[:, t - 1]` for t >= prompt_len, i.e. V(s_t) of the
    state from which response token t is emitted.
  """
  if values is None:
    raise ValueError('`values` is None: build the policy with `value_head=True`.')
  if not 1 <= prompt_len < values.shape[1]:
    raise ValueError(f'`prompt_len` must be in [1, L); got {prompt_len} with L={values.shape[1]}.')
  return values[:, prompt_len - 1 : -1].astype(jnp.float32)
