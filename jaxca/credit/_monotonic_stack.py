"""Private engine: exact O(T) trajectory-aware traces with a monotonic stack (forward only).

`trajectory_aware(delta, d, x, mask, lam, method)` returns `U = G - q` for 'rbis' and
'recursive_retrace' (Daley et al., ICML 2023, arXiv 2301.11321), the same quantity as
`_divide_and_conquer.trajectory_aware`, in O(T) amortised work per row.

Both traces are a maximum over "anchor" points (see `jaxca.credit.offpolicy`):

  beta_{k,t} = w(k, t) * exp(C_t - max(S_k, max_{k<j<=t} K_j)),

with `C` a prefix sum of per-step log increments, the start key `S_k` and anchor keys `K_j`
  rbis:               C = cumsum(log rho - log lambda), S_k = C_k, K_j = C_j,
                      w(k, t) = prod_{i=k}^{t-1} lambda d_i;
  recursive_retrace:  C = cumsum(log rho + log lambda), S_k = C_k, K_j = C_j - log lambda,
                      w(k, t) = prod_{i=k}^{t-1} d_i.
For a fixed start k the maximising anchor is piecewise constant in t: it changes at the
"next greater" keys k -> j_1 -> j_2 -> ..., which are exactly the contents of a monotonic
stack when the starts are swept backwards in time. Each stack entry j holds the segment sum
`G_j = sum_{t in seg(j)} w(j, t) exp(C_t - K_j) delta_t` (every exponent <= 0), the gap to
the key below it, the weight `w` to the entry below it, and the total of the stack from j
down. Pushing a start pops (and merges into its own segment, with factors <= 1) every
entry whose key does not exceed the new key; `U_k` is the new segment plus the weighted
total of the remaining stack. Keys are only ever compared relative to the current start
(sums of local increments along the popped chain), so no global prefix sum of log ratios
is formed, and every product of ratios that is evaluated is <= 1.

The sweep is one `lax.while_loop` over the starts, all rows of a group in lockstep, with the
stack kept as a linked list through per-start records (see `_sweep_group`): O(T) loop
iterations per group whatever the batch size inside it. The loop is not
reverse-differentiable; `offpolicy` returns these targets as constants (stop-gradient) and
keeps the divide-and-conquer engine for gradients.
"""

import jax
import jax.numpy as jnp

from jaxca.credit import _compaction

METHODS = ('recursive_retrace', 'rbis')


def trajectory_aware(delta, d, x, mask, lam, method):
  """U = G - q for recursive_retrace / rbis. Inputs [N, T] float32, masked steps zeroed."""
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}; got {method!r}.')
  t_len = delta.shape[1]
  if t_len == 0:
    return delta
  c = _compaction.compact(delta, d, x, mask)  # valid steps first, zero ratios cut the links
  delta_c, link, x_c = c.delta, c.link, c.x

  # lambda = 0: the general branch runs with a harmless lambda and is discarded (double where).
  lam_zero = lam == 0.0
  lam_s = jnp.where(lam_zero, 1.0, lam).astype(jnp.float32)
  log_lam = jnp.log(lam_s)
  if method == 'rbis':
    inc, link, theta, scale = x_c - log_lam, link * lam_s, jnp.float32(0.0), jnp.float32(1.0)
  else:  # recursive_retrace: anchor keys sit -log(lambda) above the start keys.
    inc, theta, scale = x_c + log_lam, -log_lam, lam_s

  # Per start k: delta_k, link_k to k + 1 and the key of k + 1 relative to the start key of
  # k (k + 1 enters the stack as an anchor); the last one is never used.
  r0 = jnp.pad(inc[:, 1:], ((0, 0), (0, 1))) + theta
  u = _sweep(jnp.stack([delta_c, link, r0], axis=-1), theta, scale, method != 'rbis')
  u = jnp.where(lam_zero, delta_c, u)
  return _compaction.restore(u, c)


# Rows swept together in one loop; more rows go group by group. On XLA:CPU a loop iteration
# costs about the same for 8 rows as for 1, and grows slowly beyond (measured under load at
# [64, 1024]: groups of 8 / 16 / 32 / 64 rows took 19 / 13 / 10 / 7 ms); the per-row reads
# are unrolled, so larger groups compile longer.
GROUP_ROWS = 32
# Per-row reads fused per XLA operation.
READ_CHUNK = 8
# Pop attempts per loop iteration (a start whose pops all fit takes one iteration). Loaded
# interleaved A/B at [8, 4096] against 2: 4 took 0.82-0.91x the time for rbis and 0.74x for
# recursive_retrace (6: 0.92x / 0.68x, with a larger program).
UNROLLED_POPS = 4


def _sweep(packed, theta, scale, anchored):
  """All rows. packed: [N, T, 3] (delta_k, link_k, key of k+1 relative to start k). [N, T]."""
  n_rows, t_len, _ = packed.shape
  if n_rows <= GROUP_ROWS:
    return _sweep_group(packed, theta, scale, anchored)
  n_groups = -(-n_rows // GROUP_ROWS)
  pad = n_groups * GROUP_ROWS - n_rows
  packed = jnp.pad(packed, ((0, pad), (0, 0), (0, 0))).reshape(n_groups, GROUP_ROWS, t_len, 3)
  u = jax.lax.map(lambda a: _sweep_group(a, theta, scale, anchored), packed)
  return u.reshape(-1, t_len)[:n_rows]


def _sweep_group(packed, theta, scale, anchored):
  """A few rows in lockstep over the starts k = T-1 .. 0. packed: [n, T, 3]. Returns [n, T].

  The stack is a linked list through per-start records `R[k] = (G_k, key gap to the entry
  below, weight to it, total from k down, index of the entry below, U_k)`, kept time-major
  in one [T + 1, 6, n] buffer (row T: the empty stack, and a dump). One `while_loop`
  iteration makes `UNROLLED_POPS` pop attempts for every row; once no row popped in its
  last attempt, `R[k]` is written for all rows with one `dynamic_update_slice` and the
  sweep moves to k - 1. The per-row state is one [5, n] (rbis) or [8, n] array and the reads are
  unrolled `dynamic_slice`s, which keeps the loop body to a few XLA:CPU operations and the
  buffer updated in place (batched gathers from it were measured to cost a copy per step).
  """
  n_rows, t_len, _ = packed.shape
  records = jnp.zeros((t_len + 1, 6, n_rows), jnp.float32)
  empty = float(t_len)
  packed_tm = jnp.moveaxis(packed, 1, 0)  # [T, n, 3]

  def read(records, top):
    """records[top[i], :5, i] for every row i: [5, n]."""
    rows = [
      jax.lax.dynamic_slice(records, (top[i].astype(jnp.int32), 0, i), (1, 5, 1))[0]
      for i in range(n_rows)
    ]
    # XLA:CPU fuses up to about 8 such slices into one operation; more become one each.
    chunks = [
      jax.lax.optimization_barrier(jnp.concatenate(rows[i : i + READ_CHUNK], axis=1))
      for i in range(0, n_rows, READ_CHUNK)
    ]
    return jnp.concatenate(chunks, axis=1)

  def attempt(state, records):
    """One pop attempt for every row. State rows: top (as float), key of the top relative to
    the start key, weight from the start to the top, weighted total below the top, the
    start-segment sum and, with anchored keys only, the anchor-segment sum, U_k and whether
    U_k is known."""
    top, r, w, _, gs = state[:5]
    g_top, gap, w_below, total, below = read(records, top)
    has = top < empty
    rest = jnp.where(has, w * total, 0.0)
    pop = has & (r <= theta)
    # Merge the top's segment (factors <= 1: the exponents are <= 0 where used).
    wg = w * jnp.exp(jnp.minimum(r - theta, 0.0)) * g_top
    new = [jnp.where(pop, below, top), jnp.where(pop, r + gap, r), jnp.where(pop, w * w_below, w)]
    if not anchored:  # theta = 0: the start segment is the anchor segment, U_k = gs + rest.
      return jnp.stack(new + [rest, gs + jnp.where(pop, wg, 0.0)])
    ga, u, known = state[5:]
    # U_k is fixed once the start-segment pops are over (r only grows along the stack).
    boundary = (known == 0.0) & ~(has & (r <= 0.0))
    u = jnp.where(boundary, gs + rest, u)
    known = jnp.where(boundary, 1.0, known)
    # One exponential: exp(r) = exp(r - theta) / scale where r <= 0 (scale = exp(-theta)).
    gs = gs + jnp.where(pop & (r <= 0.0), wg / scale, 0.0)
    return jnp.stack(new + [rest, gs, ga + jnp.where(pop, wg, 0.0), u, known])

  def start(k):
    """State for the start k: k + 1 (its record just written) on top unless cut."""
    delta, link, r0 = jax.lax.dynamic_index_in_dim(packed_tm, k, keepdims=False).T
    top = jnp.where(link == 0.0, empty, (k + 1).astype(jnp.float32))
    zeros = jnp.zeros_like(delta)
    extra = [scale * delta, zeros, zeros] if anchored else []
    return jnp.stack([top, r0, link, zeros, delta] + extra)

  def body(carry):
    k, state, records = carry
    for _ in range(UNROLLED_POPS):
      last = state
      state = attempt(state, records)
    top, r, w, rest, gs = state[:5]
    ga, u = (state[5], state[6]) if anchored else (gs, gs + rest)
    # Every row done popping (no top moved in the last attempt): write R[k] and move to
    # k - 1. Otherwise keep popping (the write then goes to the dump row T).
    done = jnp.all(top == last[0])
    record = jnp.stack([ga, r - theta, w, ga + rest, top, u])
    records = jax.lax.dynamic_update_slice(records, record[None], (jnp.where(done, k, t_len), 0, 0))
    new_k = jnp.where(done, k - 1, k)
    state = jnp.where(done, start(jnp.maximum(new_k, 0)), state)
    return new_k, state, records

  init = (jnp.int32(t_len - 1), start(jnp.int32(t_len - 1)), records)
  _, _, records = jax.lax.while_loop(lambda c: c[0] >= 0, body, init)
  return records[:t_len, 5].T
