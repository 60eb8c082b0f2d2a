"""An obviously correct NumPy forward of jaxca.networks.Transformer. No jax import.

Float64, one row and one (head, query, key) at a time. Used to check the attention maps that
`Policy.apply(..., return_attention=True)` returns and the logits computed from them.
"""

import math

import numpy as np

_RMS_EPS = 1e-6  # flax.linen.RMSNorm default


def _rms_norm(x, scale):
  return x / np.sqrt(np.mean(x * x) + _RMS_EPS) * scale


def _gelu(x):  # tanh approximation (flax.linen.gelu default)
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _rotary(vec, position):
  """Half-split rotary embedding of one head vector `vec [Dh]` at an integer position."""
  half = len(vec) // 2
  out = np.empty_like(vec)
  for i in range(half):
    angle = position / (10_000.0 ** (i / half))
    c, s = math.cos(angle), math.sin(angle)
    out[i] = vec[i] * c - vec[half + i] * s
    out[half + i] = vec[half + i] * c + vec[i] * s
  return out


def forward(params, tokens, valid, num_heads):
  """Full causal forward of one batch.

  Args:
    params: the flax params pytree (nested dicts of arrays).
    tokens: [B, L] int token ids.
    valid: [B, L] bool, True for real tokens.
    num_heads: H.

  Returns:
    (logits [B, L, V], attention [B, depth, H, L, L]) in float64. A real query attends to the
    real keys at or before it; an invalid query attends only to itself.
  """

  def p(module, name):
    return np.asarray(params[module][name], np.float64)

  tokens, valid = np.asarray(tokens), np.asarray(valid, bool)
  batch, length = tokens.shape
  depth = sum(1 for k in params if k.startswith('attn_norm_'))
  emb = p('embed', 'embedding')
  vocab, width = emb.shape
  dh = width // num_heads
  logits = np.zeros((batch, length, vocab))
  attn = np.zeros((batch, depth, num_heads, length, length))
  for b in range(batch):
    positions = np.maximum(np.cumsum(valid[b]) - 1, 0)
    x = np.stack([emb[tokens[b, t]] for t in range(length)])  # [L, W]
    for layer in range(depth):
      a = {
        n: np.asarray(params[f'attn_{layer}'][n]['kernel'], np.float64)
        for n in ('query', 'key', 'value', 'out')
      }
      y = np.stack([_rms_norm(x[t], p(f'attn_norm_{layer}', 'scale')) for t in range(length)])
      q = np.einsum('lw,whd->lhd', y, a['query'])
      k = np.einsum('lw,whd->lhd', y, a['key'])
      v = np.einsum('lw,whd->lhd', y, a['value'])
      mixed = np.zeros((length, num_heads, dh))
      for h in range(num_heads):
        for t in range(length):
          keys = [s for s in range(t + 1) if (valid[b, t] and valid[b, s]) or s == t]
          qt = _rotary(q[t, h], positions[t])
          scores = np.array([qt @ _rotary(k[s, h], positions[s]) / math.sqrt(dh) for s in keys])
          w = np.exp(scores - scores.max())
          w /= w.sum()
          for s, ws in zip(keys, w):
            attn[b, layer, h, t, s] = ws
            mixed[t, h] += ws * v[s, h]
      x = x + np.einsum('lhd,hdw->lw', mixed, a['out'])
      y = np.stack([_rms_norm(x[t], p(f'mlp_norm_{layer}', 'scale')) for t in range(length)])
      hid = _gelu(y @ p(f'mlp_in_{layer}', 'kernel') + p(f'mlp_in_{layer}', 'bias'))
      x = x + hid @ p(f'mlp_out_{layer}', 'kernel') + p(f'mlp_out_{layer}', 'bias')
    for t in range(length):
      z = _rms_norm(x[t], p('final_norm', 'scale'))
      logits[b, t] = z @ p('logits', 'kernel') + p('logits', 'bias')
  return logits, attn
