"""Private engine: exact divide and conquer for the trajectory-aware traces.

`trajectory_aware(delta, d, x, mask, lam, method)` returns `U = G - q` for
'truncated_is', 'recursive_retrace' and 'rbis' (Daley et al., ICML 2023,
arXiv 2301.11321) in O(T log^2 T) work with no data-dependent loops; the
algorithm is described in `jaxca.credit.offpolicy`'s module docstring.
"""

import math

import jax
import jax.numpy as jnp

from jaxca.credit import _compaction


def trajectory_aware(delta, d, x, mask, lam, method):
  """U = G - q for truncated_is / recursive_retrace / rbis. Inputs [N, T], masked steps zeroed."""
  t_len = delta.shape[1]
  # Valid steps first (masked ones become trailing padding), zero ratios folded into links.
  c = _compaction.compact(delta, d, x, mask)
  delta_c, link_d, x_c = c.delta, c.link, c.x

  # lambda = 0: the general branch runs with a harmless lambda and is discarded (double where).
  lam_zero = lam == 0.0
  lam_s = jnp.where(lam_zero, 1.0, lam)
  log_lam = jnp.log(lam_s)
  if method == 'rbis':
    inc, link = x_c - log_lam, link_d * lam_s
  elif method == 'recursive_retrace':
    inc, link = x_c + log_lam, link_d
  else:  # truncated_is
    inc, link = x_c, link_d * lam_s

  p_len = 1 << max(0, math.ceil(math.log2(t_len)))
  pad = ((0, 0), (0, p_len - t_len))
  inc, link, dlt = jnp.pad(inc, pad), jnp.pad(link, pad), jnp.pad(delta_c, pad)
  n_levels = p_len.bit_length() - 1

  def body(level, u):
    return u + _level(inc, link, dlt, level, n_levels, method, log_lam)

  # One level body, looped: the program (and its compile time) does not grow with log T.
  u = jax.lax.fori_loop(0, n_levels, body, dlt) if n_levels else dlt
  u = u[:, :t_len]
  u = jnp.where(lam_zero, delta_c, u)
  return _compaction.restore(u, c)


def _seg_scan(combine, values, within, size, n_bits, reverse=False):
  """Inclusive scans inside aligned segments of length `size` (a power of 2), last axis.

  Hillis-Steele doubling: `n_bits` static steps of (roll, op, select), so the program is
  small and does not depend on the traced `size`; steps with 2**j >= size change nothing.

  Args:
    combine: associative fn(earlier, later) on tuples of arrays.
    values: tuple of [N, P] arrays.
    within: [P] int, position inside the segment.
    size: traced int, the segment length.
    n_bits: static int, log2 of the largest segment length.
    reverse: scan from the end of each segment.
  """
  values = tuple(values)
  for j in range(n_bits):
    shift = 1 << j
    if reverse:
      other = tuple(jnp.roll(v, -shift, axis=-1) for v in values)
      ok = size - 1 - within >= shift
      new = combine(values, other)
    else:
      other = tuple(jnp.roll(v, shift, axis=-1) for v in values)
      ok = within >= shift
      new = combine(other, values)
    values = tuple(jnp.where(ok, n, v) for n, v in zip(new, values))
  return values


def _elementwise(*ops):
  return lambda a, b: tuple(op(x, y) for op, x, y in zip(ops, a, b))


def _shift(a, amount, fill, edge):
  """a[i - amount] within segments (`fill` where that leaves the segment; `edge` marks it)."""
  return jnp.where(edge, fill, jnp.roll(a, amount, axis=-1))


def _level(inc, link, delta, level, n_levels, method, log_lam):
  """Contributions of all pairs (k in a left half-block, t in the matching right half).

  Level `level` pairs blocks of size s = 2**level: positions [j*2s, j*2s + s) (left half) and
  [j*2s + s, (j+1)*2s) (right half). Arrays are [N, P]; every scan restarts at half boundaries.
  """
  p_len = inc.shape[-1]
  size = jnp.left_shift(1, level)
  idx = jnp.arange(p_len)
  within = idx % size
  first, last = within == 0, within == size - 1
  is_right = (idx // size) % 2 == 1
  add, mul, mx = jnp.add, jnp.multiply, jnp.maximum

  def scan(combine, values, reverse=False):
    return _seg_scan(combine, values, within, size, n_levels, reverse)

  # Everything relative to C_{m-1}, m the first step of the right half.
  # Left: C_k - C_{m-1} = -sum_{i=k+1}^{m-1} inc_i.  Right: C_t - C_{m-1} = sum_{i=m}^{t} inc_i.
  # f_k = prod_{i=k}^{m-1} link_i (left);  e_t = delta_t prod_{i=m}^{t-1} link_i (right); <= 1.
  (suffix, f) = scan(_elementwise(add, mul), (_shift(inc, -1, 0.0, last), link), reverse=True)
  (prefix, pre) = scan(_elementwise(add, mul), (inc, _shift(link, 1, 1.0, first)))
  c = jnp.where(is_right, prefix, -suffix)
  e = pre * delta

  if method == 'truncated_is':
    big_e = big_f = c
  else:
    (run_f,) = scan(_elementwise(mx), (c,))
    if method == 'rbis':
      (big_e,) = scan(_elementwise(mx), (c,), reverse=True)
      big_f = run_f
    else:  # recursive_retrace: E_k = max(C_k, max_{(k, m-1]} C - log lambda)
      (run_e,) = scan(_elementwise(mx), (_shift(c, -1, -jnp.inf, last),), reverse=True)
      big_e = jnp.maximum(c, run_e - log_lam)
      big_f = run_f - log_lam
  h = jnp.where(is_right, e * jnp.exp(c - big_f), 0.0)  # exponent <= 0
  if method == 'truncated_is':
    # Order each right half by F (left halves keep their order: equal keys, stable sort).
    seg = jnp.broadcast_to(idx // size, c.shape)
    key = jnp.where(is_right, big_f, 0.0)
    _, big_f_sorted, h = jax.lax.sort((seg, key, h), num_keys=2, is_stable=True)
    big_f = jnp.where(is_right, big_f_sorted, big_f)

  # t with F_t >= E_k: sum of h (a suffix in F order).  t with F_t < E_k: sum of
  # h_t exp(F_t - E_k) = S_{p-1} exp(F_{p-1} - E_k), S_i = sum_{j<=i} h_j exp(F_j - F_i).
  # alpha_i = exp(F_{i-1} - F_i) <= 1 inside right halves (sorted), 0 at their starts; the
  # exponent is selected before exp so that no unused branch overflows (finite gradients).
  alpha = jnp.exp(jnp.where(is_right & ~first, jnp.roll(big_f, 1, -1) - big_f, -jnp.inf))
  _, s_pref = scan(lambda a, b: (a[0] * b[0], a[1] * b[0] + b[1]), (alpha, h))
  (suf,) = scan(_elementwise(add), (h,), reverse=True)

  # cnt_k = #{t in the matching right half: F_t < E_k}, by binary search (static log2 P steps).
  base = jnp.broadcast_to((idx // size) * size + size, c.shape)  # right half of k's pair
  cnt = jnp.zeros(c.shape, jnp.int32)
  for bit in reversed(range(n_levels)):
    step = 1 << bit
    probe = jnp.minimum(base + cnt + step - 1, p_len - 1)
    ok = (cnt + step <= size) & (jnp.take_along_axis(big_f, probe, -1) < big_e)
    cnt = jnp.where(ok, cnt + step, cnt)
  at = lambda a, i: jnp.take_along_axis(a, jnp.clip(i, 0, p_len - 1), -1)  # noqa: E731
  clipped = jnp.where(cnt < size, at(suf, base + cnt), 0.0)
  gap = jnp.where(cnt > 0, at(big_f, base + cnt - 1) - big_e, 0.0)  # < 0 where used
  unclipped = jnp.where(cnt > 0, at(s_pref, base + cnt - 1) * jnp.exp(gap), 0.0)
  return jnp.where(is_right, 0.0, f * (clipped + unclipped))
