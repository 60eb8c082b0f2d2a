"""Private engine: exact O(T log T) truncated IS targets from one sort (forward only).

`truncated_is(delta, d, x, mask, lam)` returns `U = G - q` for 'truncated_is' (Daley et al.,
ICML 2023, arXiv 2301.11321), the same quantity as `_divide_and_conquer.trajectory_aware`.

With `C_t = sum_{i<=t} log rho_i` and `w(k, t) = prod_{i=k}^{t-1} lambda d_i`,

  U_k = delta_k + sum_{t>k} w(k, t) min(1, exp(C_t - C_k)) delta_t,

a two-dimensional dominance sum over (time, C). Every pair k < t is counted at the one level
of the binary split of time where k lies in the left child and t in the right child of a
block; there `w(k, t) = f_k e_t / delta_t` with `f_k` the product of the links from k to the
end of the left child and `e_t` delta_t times those from the start of the right child
(sequential products of factors <= 1, as in the per-decision scan). In the block's
order by C, a left element s needs

  lower_s = sum_{right t before s} e_t exp(C_t - C_s)    (C_t <= C_s; ties give 1 either way)
  upper_s = sum_{right t after s} e_t,

the first a stable linear recurrence `z_p = exp(C_{p-1} - C_p) (z_{p-1} + [p-1 right]
e_{p-1})` (decays <= 1) and the second a suffix sum, both reset at block starts. The block
orders come from one sort: the order inside a parent block is split stably by the child bit
into the two children's orders (top-down; the counts by a small triangular matrix product,
then a scatter per level). All levels' recurrences run as `lax.scan`s over the positions
with levels x rows as lanes (XLA:CPU runs a scan with a multiply-add body far faster than
the same work as separate passes), and the results are scattered back to time order. The
lowest `DENSE_LEVELS` levels (pairs inside aligned blocks of 16 steps) are summed directly.
Work O(T log T). The sort of the float keys is a least-significant-digit radix of key-only
integer sorts (indices packed into the spare bits), which XLA:CPU sorts several times
faster than a sort with a payload.

C is a double-float prefix sum (hi + lo, compensated summation), so `C_t - C_s` keeps float32
relative accuracy however far the walk has gone; the order uses `hi` (ties broken by time;
pairs whose `hi` tie differ by less than one float32 ulp of |C|, and their decay is
clamped at 1). Exponents are <= 0 and every product is <= 1, so e^+-30 ratios cannot
overflow; rho = 0 and d = 0 enter as zero links. The scans and scatters are not meant for
autodiff: `offpolicy` returns these targets as stop-gradient constants and keeps the
divide and conquer for `differentiable=True`.
"""

import math

import jax
import jax.numpy as jnp

from jaxca.credit import _compaction


def truncated_is(delta, d, x, mask, lam):
  """U = G - q for truncated_is. Inputs [N, T] float32, masked steps zeroed."""
  t_len = delta.shape[1]
  if t_len == 0:
    return delta
  c = _compaction.compact(delta, d, x, mask)  # valid steps first, zero ratios cut the links
  delta_c, x_c = c.delta, c.x
  lam_zero = lam == 0.0
  lam_s = jnp.where(lam_zero, 1.0, lam).astype(jnp.float32)
  link = c.link * lam_s

  n_levels = max(0, math.ceil(math.log2(t_len)))
  p_len = 1 << n_levels
  pad = ((0, 0), (0, p_len - t_len))
  u = delta_c
  if n_levels:
    u = u + _pairs(jnp.pad(delta_c, pad), jnp.pad(link, pad), jnp.pad(x_c, pad))[:, :t_len]
  u = jnp.where(lam_zero, delta_c, u)
  return _compaction.restore(u, c)


def _prefix_sum2(x):
  """Compensated prefix sums of [N, P] float32, time-major: [P, N] (hi, lo), hi + lo = cumsum."""

  def step(carry, x_t):
    hi, lo = carry
    s = hi + x_t
    bp = s - hi
    lo = lo + ((hi - (s - bp)) + (x_t - bp))  # TwoSum error of hi + x_t
    hi = s + lo
    lo = lo - (hi - s)
    return (hi, lo), (hi, lo)

  zeros = jnp.zeros(x.shape[:1], x.dtype)
  _, (hi, lo) = jax.lax.scan(step, (zeros, zeros), x.T)
  return hi, lo


def _take0(a, idx):
  """`jnp.take_along_axis(a, idx, 0)` (idx broadcast against a's trailing axes) as a gather
  from the flattened array, which XLA:CPU runs about 1.5x faster than the batched gather."""
  inner = math.prod(a.shape[1:])
  return a.reshape(-1)[idx * inner + jnp.arange(inner).reshape((1,) + a.shape[1:])]


def _put0(idx, vals):
  """The inverse of `_take0` for a permutation `idx` along axis 0: out[idx[p, ...], ...] =
  vals[p, ...], one flat scatter with unique indices."""
  inner = math.prod(vals.shape[1:])
  flat = (idx * inner + jnp.arange(inner).reshape((1,) + vals.shape[1:])).reshape(-1)
  out = jnp.zeros(vals.size, vals.dtype).at[flat].set(vals.reshape(-1), unique_indices=True)
  return out.reshape(vals.shape)


def _sortable_bits(x):
  """uint32 keys with the order of the float32 values (-0.0 < 0.0; no NaN here)."""
  b = jax.lax.bitcast_convert_type(x, jnp.uint32)
  return jnp.where(b >> 31 == 1, ~b, b | jnp.uint32(1 << 31))


def argsort(keys):
  """Stable ascending argsort of [N, P] float32 along the last axis (-0.0 before 0.0).

  Least-significant-digit radix over the 32 key bits in digits of 32 - ceil(log2 P) bits
  (two passes up to P = 2**16, three up to 2**21): every pass sorts plain uint32 words
  (digit above, position in the previous pass's order below), which are distinct, so no
  payload and no stable sort are needed.
  """
  p_len = keys.shape[-1]
  b = max(1, (p_len - 1).bit_length())
  if b > 24:
    raise ValueError(f'argsort supports at most 2**24 positions; got {p_len}.')
  width = 32 - b
  bits = _sortable_bits(keys)
  low_mask = jnp.uint32((1 << b) - 1)
  rank = jnp.broadcast_to(jnp.arange(p_len, dtype=jnp.uint32), keys.shape)
  perm = None  # order so far (None: the identity, so the first pass gathers nothing)
  for shift in range(0, 32, width):
    ordered = bits if perm is None else jnp.take_along_axis(bits, perm, -1)
    digit = (ordered >> shift) & jnp.uint32((1 << min(width, 32 - shift)) - 1)
    words = jax.lax.sort((digit << b) | rank, dimension=-1)
    step = (words & low_mask).astype(jnp.int32)
    perm = step if perm is None else jnp.take_along_axis(perm, step, -1)
  return perm


def _count_before(bit, size):
  """Exclusive count of ones before each position inside aligned blocks of `size`: [P, N] int.

  Chunks of up to 64 positions are counted by a matrix product with a triangular matrix
  (exact: small integers in float32), the chunks of a block by a short cumsum.
  """
  p_len, n_rows = bit.shape
  chunk = min(size, 64)
  tri = jnp.tril(jnp.ones((chunk, chunk), jnp.float32), -1)
  b = bit.astype(jnp.float32).reshape(-1, chunk, n_rows)
  local = jnp.einsum('ij,bjn->bin', tri, b).astype(jnp.int32)  # ones before, inside the chunk
  if chunk == size:
    return local.reshape(p_len, n_rows)
  totals = (local[:, -1] + bit.reshape(-1, chunk, n_rows)[:, -1]).reshape(-1, size // chunk, n_rows)
  offsets = jnp.cumsum(totals, 1) - totals
  return (local.reshape(-1, size // chunk, chunk, n_rows) + offsets[:, :, None]).reshape(
    p_len, n_rows
  )


# Levels whose pairs (inside aligned blocks of 2**DENSE_LEVELS steps) are summed directly.
# Loaded A/B at [8, 4096]: 4 took 0.89x the time of 3 (compile +1.5 s); 5 as fast as 4 with
# twice the compile time.
DENSE_LEVELS = 4


def _dense_pairs(delta, link, hi, lo, size):
  """The pairs k < t inside aligned blocks of `size` steps, directly: [P, N] (time-major).

  Blocked as [P / size, size, N], one start offset at a time (XLA:CPU fuses this into a few
  passes; shifting whole [P, N] arrays cost ~8x more)."""
  p_len, n_rows = delta.shape
  d, f, h, o = (a.reshape(p_len // size, size, n_rows) for a in (delta, link, hi, lo))
  out = []
  for k in range(size):
    w = f[:, k]  # links k .. t - 1
    acc = jnp.zeros_like(w)
    for t in range(k + 1, size):
      gap = jnp.minimum((h[:, t] - h[:, k]) + (o[:, t] - o[:, k]), 0.0)
      acc = acc + w * jnp.exp(gap) * d[:, t]
      w = w * f[:, t]
    out.append(acc)
  return jnp.stack(out, 1).reshape(p_len, n_rows)


def _pairs(delta, link, x):
  """sum_{t>k} w(k, t) min(1, exp(C_t - C_k)) delta_t for [N, P], P = 2**L >= 2.

  Works time-major ([P, N], and [P, L, N] with L the levels): the per-position work runs
  inside `lax.scan`s over the positions with levels x rows as lanes, which XLA:CPU executes
  much faster than the same elementwise work as separate [P, L, N] passes.
  """
  n_rows, p_len = delta.shape
  n_levels = p_len.bit_length() - 1
  delta, link = delta.T, link.T  # [P, N]
  hi, lo = _prefix_sum2(x)  # [P, N]
  n_dense = min(DENSE_LEVELS, n_levels)
  near = _dense_pairs(delta, link, hi, lo, 1 << n_dense)
  if n_dense == n_levels:
    return near.T
  pos = jnp.arange(p_len)
  lv = jnp.arange(n_dense, n_levels)  # the sorted levels
  n_sorted = n_levels - n_dense
  masks = ((1 << lv) - 1)[:, None]  # [L, 1]: s - 1, s = 2**l the child size

  # fs[p, l]: links from p to the end of its child at level l; es[p, l]: delta_p times the
  # links from the start of its child. Sequential products, as in the per-decision scan.
  def suffix(f, inp):
    p, link_p = inp
    f = jnp.where((p & masks) == masks, 1.0, f) * link_p[None]
    return f, f

  def prefix(e, inp):
    p, link_prev = inp
    e = jnp.where((p & masks) == 0, 1.0, e * link_prev[None])
    return e, e

  ones = jnp.ones((n_sorted, n_rows), link.dtype)
  _, fs = jax.lax.scan(suffix, ones, (pos, link), reverse=True)  # [P, L, N]
  link_prev = jnp.concatenate([jnp.zeros_like(link[:1]), link[:-1]], 0)
  _, es = jax.lax.scan(prefix, ones, (pos, link_prev))
  es = es * delta[:, None]

  # Orders inside the parent blocks (size 2s) of every level, top-down from one sort.
  perm = argsort(hi.T).T  # [P, N]
  perms = [None] * n_sorted
  idx = pos[:, None]
  for level in reversed(range(n_dense, n_levels)):
    perms[level - n_dense] = perm
    if level > n_dense:
      s = 1 << level
      bit = (perm >> level) & 1
      ones_before = _count_before(bit, 2 * s)
      within = idx % (2 * s)
      new = idx - within + jnp.where(bit == 1, s + ones_before, within - ones_before)
      perm = _put0(new, perm)
  perms = jnp.stack(perms, 1)  # [P, L, N]

  # Each level's order: C and e of the element at each position, and whether it is right.
  g_hi = _take0(hi[:, None], perms)
  g_lo = _take0(lo[:, None], perms)
  levels = lv[None, :, None]
  right = ((perms >> levels) & 1) == 1
  g_re = jnp.where(right, _take0(es, perms), 0.0)
  parent = 2 * masks + 1  # 2s - 1
  # Decays exp(C_{p-1} - C_p) <= 1 in every parent block, 0 at its start: vectorised here,
  # the scans below only multiply and add (XLA:CPU runs small scan bodies much faster).
  first = (idx[:, :, None] & parent[None]) == 0  # [P, L, 1]
  gap = jnp.concatenate([jnp.zeros_like(g_hi[:1]), (g_hi[:-1] - g_hi[1:]) + (g_lo[:-1] - g_lo[1:])])
  alpha = jnp.where(first, 0.0, jnp.exp(jnp.where(first, 0.0, jnp.minimum(gap, 0.0))))

  def lower(carry, inp):
    # z_p = alpha_p (z_{p-1} + re_{p-1}): right elements before p, decayed to C_p.
    z, re0 = carry
    a, re = inp
    z = a * (z + re0)
    return (z, re), z

  def upper(carry, inp):
    # u_p = sum of re after p in its parent block.
    u, re0 = carry
    p, re = inp
    u = jnp.where((p & parent) == parent, 0.0, u + re0)
    return (u, re), u

  zeros = jnp.zeros((n_sorted, n_rows), hi.dtype)
  _, z = jax.lax.scan(lower, (zeros,) * 2, (alpha, g_re))
  _, u = jax.lax.scan(upper, (zeros,) * 2, (pos, g_re), reverse=True)
  total = jnp.where(right, 0.0, z + u)
  back = _put0(perms, total)
  return (near + jnp.sum(fs * back, 1)).T
