"""The `jaxca.credit` kernel benchmark: inputs, baselines, rows, timing of a row, reports.

Host-side, like `jaxca.bench` (whose interleaved timing protocol it uses):
`experiments/bench_credit.py` composes these pieces and writes the files.

Every `Row` is one kernel at one shape with several contenders (jaxca, an rlax
baseline, a NumPy reference, optional extra references) given as zero-argument
thunks over inputs generated once per shape; no buffers are donated (every
contender reads the same arrays and allocates its outputs). A kernel that is
still a placeholder (NotImplementedError) gives an 'n/a' row. The NumPy
contenders are plain per-timestep loops, vectorised over the batch (float32), as
a NumPy user would write them; they are baselines to time against, the
correctness references of the kernels are in tests/reference/.

Every row names one contender as its baseline (`Row.baseline`): vmapped rlax for
GAE, discounted returns, the per-decision off-policy methods (and, as a yardstick,
the other standard kernels), jaxca's own per-decision `retrace` at the same
(batch, T) for the trajectory-aware traces, NumPy for the group estimators. Each
contender's record has its time divided by the baseline's (`time_vs_baseline`) and,
once the experiment has measured the copy bandwidth, its fraction of it
(`frac_copy_bw`). `targets` checks the performance targets of the GAE and
trajectory-aware kernels on those records (met / not met / n/a).
"""

from collections.abc import Callable
import csv
import dataclasses
import functools
import json
import math
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import bench
from jaxca import credit

try:
  import rlax
except ImportError:  # rlax is a test extra; its baseline rows are then skipped.
  rlax = None

TRAJECTORY_AWARE = ('truncated_is', 'recursive_retrace', 'rbis')
KERNELS = (
  'gae',
  'gae_masked',
  'discounted_returns',
  'group_relative',
  'min_form_returns',
  'min_form_rewards',
)
OFF_POLICY_METHODS = credit.OFF_POLICY_METHODS


@dataclasses.dataclass
class Row:
  """One kernel at one shape. `arrays`: float32 arrays of the row's shape moved (in + out)."""

  section: str
  kernel: str
  shape: tuple[int, ...]
  arrays: float
  thunks: dict[str, Callable]
  labels: dict[str, str]
  note: str = ''
  baseline: str = 'rlax'  # the contender every time in the row is divided by
  time_major: tuple[str, ...] = ()  # contenders whose outputs are [T, B] (compared transposed)


# ----------------------------------------------------------------------------- inputs


def make_inputs(key, shape, cfg):
  """Random float32 rollout arrays of `shape` (time last), generated once and reused."""
  k = jax.random.split(key, 8)
  terminated = jax.random.bernoulli(k[2], cfg.termination_prob, shape)
  pi = jax.random.uniform(k[5], shape, minval=0.05, maxval=1.0)
  mu = jax.random.uniform(k[6], shape, minval=0.05, maxval=1.0)
  out = {
    'rewards': jax.random.normal(k[0], shape),
    'values': jax.random.normal(k[1], shape),
    'discounts': cfg.gamma * (1.0 - terminated.astype(jnp.float32)),
    'bootstrap': jax.random.normal(k[3], shape[:-1]),
    'mask': jax.random.bernoulli(k[4], cfg.mask_keep_prob, shape),
    'expected_next_q': jax.random.normal(k[7], shape),
    'log_rhos': jnp.log(pi) - jnp.log(mu),
    'target_probs': pi,
  }
  out = jax.block_until_ready(out)
  return out, {name: np.asarray(x) for name, x in out.items()}


# ----------------------------------------------------------------------------- NumPy references
# Plain per-timestep loops, vectorised over the batch (float32), as a NumPy user would write them.


def _np_gae(r, v, d, bv, lam, mask=None):
  adv = np.zeros_like(r)
  carry = np.zeros_like(bv)
  v_next = bv.copy()
  for t in range(r.shape[-1] - 1, -1, -1):
    a = r[:, t] + d[:, t] * v_next - v[:, t] + d[:, t] * lam * carry
    if mask is None:
      adv[:, t], carry, v_next = a, a, v[:, t]
    else:
      m = mask[:, t]
      adv[:, t] = np.where(m, a, 0.0)
      carry = np.where(m, a, carry)
      v_next = np.where(m, v[:, t], v_next)
  returns = adv + v if mask is None else np.where(mask, adv + v, 0.0)
  return adv, returns


def _np_discounted_returns(r, d, bv):
  out = np.zeros_like(r)
  g = bv.copy()
  for t in range(r.shape[-1] - 1, -1, -1):
    g = r[:, t] + d[:, t] * g
    out[:, t] = g
  return out


def _np_min_form_returns(r):
  out = np.zeros_like(r)
  m = np.full(r.shape[:-1], np.inf, r.dtype)
  for t in range(r.shape[-1] - 1, -1, -1):
    m = np.minimum(m, r[:, t])
    out[:, t] = m
  return out


def _np_min_form_rewards(r, temperature):  # vectorised softmax (no recurrence)
  z = -r / temperature
  w = np.exp(z - z.max(-1, keepdims=True))
  return w / w.sum(-1, keepdims=True) * r


def _np_group_stats(mode, s, mean, std, count, eps):
  if mode == 'grpo':
    return np.where(count >= 2, (s - mean) / (std + eps), 0.0)
  if mode == 'dr_grpo':
    return np.where(count >= 2, s - mean, 0.0)
  others = (count * mean - s) / np.maximum(count - 1, 1)
  return np.where(count >= 2, s - others, 0.0)


def _np_group_last_axis(s, mode, eps=1e-6):  # vectorised over groups
  mean = s.mean(-1, keepdims=True)
  std = s.std(-1, ddof=1, keepdims=True) if s.shape[-1] > 1 else np.zeros_like(mean)
  return _np_group_stats(mode, s, mean, std, s.shape[-1], eps).astype(np.float32)


def _np_group_ids(s, ids, num_groups, mode, eps=1e-6):  # np.bincount, no loop over groups
  count = np.bincount(ids, minlength=num_groups).astype(np.float32)
  mean = (np.bincount(ids, s, minlength=num_groups) / np.maximum(count, 1)).astype(np.float32)
  dev = s - mean[ids]
  var = np.bincount(ids, dev * dev, minlength=num_groups) / np.maximum(count - 1, 1)
  std = np.sqrt(var).astype(np.float32)
  return _np_group_stats(mode, s, mean[ids], std[ids], count[ids], eps).astype(np.float32)


def _per_decision_c(method, lam, log_rhos, target_probs, xp):
  if method == 'is':
    return lam * xp.exp(log_rhos)
  if method == 'q_lambda':
    return lam * xp.ones_like(log_rhos)
  if method == 'tree_backup':
    return lam * target_probs
  return lam * xp.minimum(1.0, xp.exp(log_rhos))  # retrace


def _np_off_policy(q, eq, r, d, log_rhos, target_probs, lam, method):
  """O(T) reverse recurrence (per-decision methods) or O(T^2) loop (trajectory-aware ones)."""
  if method not in TRAJECTORY_AWARE:
    c = _per_decision_c(method, lam, log_rhos, target_probs, np)
    out = np.zeros_like(r)
    g = r[:, -1] + d[:, -1] * eq[:, -1]
    out[:, -1] = g
    for k in range(r.shape[-1] - 2, -1, -1):
      g = r[:, k] + d[:, k] * (eq[:, k] + c[:, k + 1] * (g - q[:, k + 1]))
      out[:, k] = g
    return out
  # Forward over t, vectorised over all start times k <= t (the official code's backward view).
  delta = r + d * eq - q
  bsz, length = r.shape
  beta, disc = np.zeros((bsz, length), np.float32), np.zeros((bsz, length), np.float32)
  lampow, logprod = np.zeros_like(beta), np.zeros_like(beta)
  upd = np.zeros_like(beta)
  for t in range(length):
    if t:
      rho = np.exp(log_rhos[:, t : t + 1])
      disc[:, :t] *= d[:, t - 1 : t]
      lampow[:, :t] *= lam
      if method == 'truncated_is':
        logprod[:, :t] += log_rhos[:, t : t + 1]
        beta[:, :t] = lampow[:, :t] * np.exp(np.minimum(0.0, logprod[:, :t]))
      elif method == 'recursive_retrace':
        beta[:, :t] = lam * np.minimum(1.0, rho * beta[:, :t])
      else:  # rbis
        beta[:, :t] = np.minimum(lampow[:, :t], rho * beta[:, :t])
    beta[:, t] = disc[:, t] = lampow[:, t] = 1.0
    upd[:, : t + 1] += disc[:, : t + 1] * beta[:, : t + 1] * delta[:, t : t + 1]
  return q + upd


# ----------------------------------------------------------------------------- JAX references


def _gae_time_major(r, v, d, bv, lam):
  """Plain GAE as one lax.scan over time-major [T, B] arrays (a reference, not a kernel)."""
  v_next = jnp.concatenate([v[1:], bv[None]], axis=0)
  delta = r + d * v_next - v

  def body(acc, xs):
    delta_t, c_t = xs
    acc = delta_t + c_t * acc
    return acc, acc

  _, adv = jax.lax.scan(body, jnp.zeros_like(bv), (delta, d * lam), reverse=True)
  return adv, adv + v


@functools.cache
def _rlax_gae(lam):
  def one(r, d, v_ext):
    adv = rlax.truncated_generalized_advantage_estimation(r, d, lam, v_ext)
    return adv, adv + v_ext[:-1]

  return jax.jit(jax.vmap(one))


@functools.cache
def _rlax_off_policy(method, lam):
  def one(q, eq, r, d, log_rhos, target_probs):
    c = _per_decision_c(method, lam, log_rhos, target_probs, jnp)
    return rlax.general_off_policy_returns_from_q_and_v(q[1:], eq, r, d, c[1:])

  return jax.jit(jax.vmap(one))


# ----------------------------------------------------------------------------- rows


def shapes(text):
  return [tuple(int(n) for n in item.split('x')) for item in items(text)]


def items(text):
  return [item.strip() for item in (text or '').split(',') if item.strip()]


def standard_rows(cfg, key):
  """Issue 2 item 7: every kernel at every [B, T] of cfg.shapes."""
  kernels = items(cfg.kernels)
  for shape in shapes(cfg.shapes):
    x, n = make_inputs(key, shape, cfg)
    lam = cfg.lambda_
    r, v, d, bv, m = (x[k] for k in ('rewards', 'values', 'discounts', 'bootstrap', 'mask'))
    nr, nv, nd, nbv, nm = (n[k] for k in ('rewards', 'values', 'discounts', 'bootstrap', 'mask'))
    # Time-major copies for the `time_major=True` contenders: transposed once, before timing.
    rt, vt, dt, mt = jax.block_until_ready(tuple(jnp.transpose(y) for y in (r, v, d, m)))
    thunks, labels = {}, {}
    if rlax is not None and cfg.rlax:
      v_ext = jnp.concatenate([v, bv[:, None]], axis=1)  # rlax's native values[T+1], built once
      rlax_gae = _rlax_gae(lam)
      thunks['rlax'] = lambda: rlax_gae(r, d, v_ext)
      labels['rlax'] = 'vmap(rlax GAE) (yardstick)'
    for kernel in kernels:
      row_thunks, row_labels = dict(thunks), dict(labels)
      if kernel in ('gae', 'gae_masked'):
        mask = m if kernel == 'gae_masked' else None
        f = jax.jit(lambda r, v, d, bv, mask: credit.gae(r, v, d, bv, lam, mask=mask))
        row_thunks['jaxca'] = lambda f=f, mask=mask: f(r, v, d, bv, mask)
        ftm = jax.jit(
          lambda r, v, d, bv, mask: credit.gae(r, v, d, bv, lam, mask=mask, time_major=True)
        )
        mask_tm = mt if mask is not None else None
        row_thunks['jaxca_tm'] = lambda ftm=ftm, mask_tm=mask_tm: ftm(rt, vt, dt, bv, mask_tm)
        row_labels['jaxca_tm'] = 'credit.gae(time_major=True), inputs already [T,B]'
        if kernel == 'gae_masked':  # T2c: the same calls without the mask, interleaved here
          row_thunks['jaxca_nomask'] = lambda f=f: f(r, v, d, bv, None)
          row_labels['jaxca_nomask'] = 'credit.gae without the mask (yardstick for T2c)'
          row_thunks['jaxca_tm_nomask'] = lambda ftm=ftm: ftm(rt, vt, dt, bv, None)
          row_labels['jaxca_tm_nomask'] = 'time_major=True without the mask (yardstick for T2c)'
        nmask = nm if kernel == 'gae_masked' else None
        row_thunks['numpy'] = lambda nmask=nmask: _np_gae(nr, nv, nd, nbv, lam, nmask)
        row_labels['numpy'] = 'NumPy loop over t'
        if kernel == 'gae':
          if 'rlax' in row_labels:
            row_labels['rlax'] = 'vmap(rlax GAE)'
          if cfg.gae_variants:
            tm = jax.jit(lambda r, v, d, bv: _gae_time_major(r, v, d, bv, lam))
            tr = jax.jit(lambda *a: jax.tree.map(jnp.transpose, tm(*[jnp.transpose(y) for y in a])))
            row_thunks['scan_tm_transpose'] = lambda: tr(r, v, d, bv)
            row_labels['scan_tm_transpose'] = 'lax.scan over [T,B] incl. transposes'
            row_thunks['scan_tm_native'] = lambda: tm(rt, vt, dt, bv)
            row_labels['scan_tm_native'] = 'lax.scan over [T,B], inputs already [T,B]'
        yield Row(
          'standard',
          kernel,
          shape,
          5 + (0.25 if mask is not None else 0),
          row_thunks,
          row_labels,
          'mask: 1 byte/step counted as 0.25 array' if mask is not None else '',
          time_major=('jaxca_tm', 'scan_tm_native', 'jaxca_tm_nomask'),
        )
      elif kernel == 'discounted_returns':
        f = jax.jit(credit.discounted_returns)
        row_thunks['jaxca'] = lambda: f(r, d, bv)
        ftm = jax.jit(functools.partial(credit.discounted_returns, time_major=True))
        row_thunks['jaxca_tm'] = lambda: ftm(rt, dt, bv)
        row_labels['jaxca_tm'] = 'credit.discounted_returns(time_major=True), inputs [T,B]'
        row_thunks['numpy'] = lambda: _np_discounted_returns(nr, nd, nbv)
        row_labels['numpy'] = 'NumPy loop over t'
        if 'rlax' in row_thunks:
          g = jax.jit(jax.vmap(rlax.discounted_returns))
          row_thunks['rlax'] = lambda: g(r, d, bv)
          row_labels['rlax'] = 'vmap(rlax.discounted_returns)'
        yield Row('standard', kernel, shape, 3, row_thunks, row_labels, time_major=('jaxca_tm',))
      elif kernel == 'group_relative':
        f = jax.jit(lambda s: credit.group_relative(s, mode='grpo'))
        row_thunks['jaxca'] = lambda: f(r)
        row_thunks['numpy'] = lambda: _np_group_last_axis(nr, 'grpo')
        row_labels['numpy'] = 'NumPy vectorised'
        yield Row(
          'standard', kernel, shape, 2, row_thunks, row_labels, f'grpo, group size {shape[-1]}'
        )
      elif kernel == 'min_form_returns':
        f = jax.jit(credit.min_form_returns)
        row_thunks['jaxca'] = lambda: f(r)
        row_thunks['numpy'] = lambda: _np_min_form_returns(nr)
        row_labels['numpy'] = 'NumPy loop over t'
        yield Row('standard', kernel, shape, 2, row_thunks, row_labels)
      elif kernel == 'min_form_rewards':
        f = jax.jit(lambda s: credit.min_form_rewards(s, cfg.temperature))
        row_thunks['jaxca'] = lambda: f(r)
        row_thunks['numpy'] = lambda: _np_min_form_rewards(nr, cfg.temperature)
        row_labels['numpy'] = 'NumPy vectorised'
        yield Row('standard', kernel, shape, 2, row_thunks, row_labels)
      else:
        raise ValueError(f'Unknown kernel {kernel!r} in config.kernels; choose from {KERNELS}.')


def group_rows(cfg, key):
  """Group estimators: shuffled int group ids over [N], and the contiguous [P, G] layout."""
  modes = items(cfg.group.modes)
  if not modes:
    return
  k1, k2 = jax.random.split(key)
  n, num_groups = cfg.group.n, cfg.group.num_groups
  scores = jax.random.normal(k1, (n,))
  ids = jax.random.permutation(k2, jnp.arange(n, dtype=jnp.int32) % num_groups)
  (contiguous,) = shapes(cfg.group.contiguous)
  grid = jax.random.normal(k1, contiguous)
  ns, nids, ngrid = np.asarray(scores), np.asarray(ids), np.asarray(grid)
  for mode in modes:
    f = jax.jit(
      lambda s, i, mode=mode: credit.group_relative(
        s, mode=mode, group_ids=i, num_groups=num_groups
      )
    )
    yield Row(
      'group',
      f'group_relative[{mode}] ids',
      (n,),
      3,
      {
        'jaxca': lambda f=f: f(scores, ids),
        'numpy': lambda mode=mode: _np_group_ids(ns, nids, num_groups, mode),
      },
      {'numpy': 'NumPy bincount'},
      f'{num_groups} shuffled groups via group_ids',
      baseline='numpy',
    )
    g = jax.jit(lambda s, mode=mode: credit.group_relative(s, mode=mode))
    yield Row(
      'group',
      f'group_relative[{mode}] contiguous',
      contiguous,
      2,
      {'jaxca': lambda g=g: g(grid), 'numpy': lambda mode=mode: _np_group_last_axis(ngrid, mode)},
      {'numpy': 'NumPy vectorised'},
      'groups on the last axis',
      baseline='numpy',
    )


def offpolicy_rows(cfg, key):
  """Issue 3: every method at batch cfg.offpolicy.batch and T in cfg.offpolicy.ts.

  Trajectory-aware rows also time jaxca's per-decision `retrace` at the same (batch, T), their
  baseline (issue 14), and the differentiable divide and conquer (`jaxca_dc`) next to the
  default forward-only path (`jaxca`: O(T) monotonic stack for 'rbis' and
  'recursive_retrace', O(T log T) sorted levels for 'truncated_is').
  """
  methods = items(cfg.offpolicy.methods)
  lam = cfg.offpolicy.lambda_

  def jitted(method, args, tp, differentiable=False):
    probs = tp if method == 'tree_backup' else None
    f = jax.jit(
      lambda *a: credit.off_policy_returns(
        *a, lam, method, target_probs=probs, differentiable=differentiable
      )
    )
    return lambda: f(*args)

  for length in [int(t) for t in items(cfg.offpolicy.ts)]:
    if not methods:
      return
    x, n = make_inputs(key, (cfg.offpolicy.batch, length), cfg)
    args = tuple(x[k] for k in ('values', 'expected_next_q', 'rewards', 'discounts', 'log_rhos'))
    nargs = tuple(n[k] for k in ('values', 'expected_next_q', 'rewards', 'discounts', 'log_rhos'))
    tp, ntp = x['target_probs'], n['target_probs']
    retrace = jitted('retrace', args, tp)  # compiled once per T, shared by the trajectory rows
    for method in methods:
      thunks = {'jaxca': jitted(method, args, tp)}
      labels = {}
      quadratic = method in TRAJECTORY_AWARE
      if quadratic:
        labels['jaxca'] = (
          'credit (O(T log T) sorted levels)' if method == 'truncated_is' else 'credit (O(T) stack)'
        )
        thunks['jaxca_dc'] = jitted(method, args, tp, differentiable=True)
        labels['jaxca_dc'] = 'credit, differentiable=True (divide and conquer)'
        thunks['jaxca_retrace'] = retrace
        labels['jaxca_retrace'] = 'credit retrace (yardstick)'
      if not quadratic or length <= cfg.offpolicy.numpy_quadratic_max_t:
        thunks['numpy'] = lambda method=method: _np_off_policy(*nargs, ntp, lam, method)
        labels['numpy'] = 'NumPy O(T^2) loop' if quadratic else 'NumPy loop over t'
      if rlax is not None and cfg.rlax:
        base = 'retrace' if quadratic else method
        g = _rlax_off_policy(base, lam)
        thunks['rlax'] = lambda g=g: g(*args, tp)
        labels['rlax'] = (
          'vmap(rlax retrace) (yardstick)'
          if quadratic
          else f'vmap(rlax general_off_policy, c={base})'
        )
      yield Row(
        'offpolicy',
        method,
        (cfg.offpolicy.batch, length),
        6 + (method == 'tree_backup'),
        thunks,
        labels,
        baseline='jaxca_retrace' if quadratic else 'rlax',
      )


# ----------------------------------------------------------------------------- running


def _try(thunk):
  """(None, seconds of the first call incl. compilation) if the thunk runs, else (reason, 0)."""
  start = time.perf_counter()
  try:
    jax.block_until_ready(thunk())
    return None, time.perf_counter() - start
  except NotImplementedError:
    return 'n/a (not implemented yet)', 0.0
  except Exception as e:  # noqa: BLE001 -- report and keep benchmarking the other kernels
    logging.warning('contender failed: %s: %s', type(e).__name__, e)
    return f'error: {type(e).__name__}: {str(e).splitlines()[0][:160]}', 0.0


def _max_rel_diff(out, ref, time_major=False):
  """max |out - ref| / max(1, max |ref|) over the outputs; `out` is [T, B] if `time_major`."""
  a, b = jax.tree.leaves(out), jax.tree.leaves(ref)
  if len(a) != len(b):
    a, b = a[:1], b[:1]
  worst = 0.0
  for x, y in zip(a, b):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if time_major:
      x = x.T
    if x.shape != y.shape:
      return float('nan')
    scale = max(1.0, float(np.max(np.abs(y), initial=0.0)))  # 'is' targets can be huge
    worst = max(worst, float(np.max(np.abs(x - y), initial=0.0)) / scale)
  return worst


def run_row(row, cfg):
  """Times one row; returns a list of CSV records (one per contender)."""
  thunks, notes, first_s = {}, {}, {}
  for name, thunk in row.thunks.items():
    if name == 'numpy':  # plain host code: nothing to compile, its first call is timed
      thunks[name] = thunk
      continue
    reason, first_s[name] = _try(thunk)
    if reason is None:
      thunks[name] = thunk
    else:
      notes[name] = reason
  outputs = {}
  timings = (
    bench.interleaved(
      thunks,
      cfg.reps,
      budget_s={'numpy': cfg.numpy_budget_s},
      no_warmup=('numpy',),
      outputs=outputs,
    )
    if thunks
    else {}
  )
  size = math.prod(row.shape)
  num_bytes = 4 * row.arrays * size
  records = []
  for name in ['jaxca'] + [k for k in row.thunks if k != 'jaxca']:
    if name not in row.thunks:
      continue
    rec = dict(
      section=row.section,
      kernel=row.kernel,
      shape='x'.join(map(str, row.shape)),
      contender=name,
      label=row.labels.get(name, 'jaxca.credit'),
      baseline=row.baseline,
      bytes=int(num_bytes),
      note='; '.join(filter(None, [notes.get(name), row.note])),
    )
    t = timings.get(name)
    if t is not None:
      rec.update(
        median_ms=t.median_ms,
        reps=t.reps,
        spread=t.spread,
        first_s=first_s.get(name, t.first_s),
        gbps=bench.gigabytes_per_second(num_bytes, t.median_s),
      )
      if 'jaxca' in timings:
        rec['jaxca_speedup'] = t.median_s / timings['jaxca'].median_s
      if row.baseline in timings:
        rec['time_vs_baseline'] = t.median_s / timings[row.baseline].median_s
      if 'numpy' in outputs and name != 'numpy' and 'yardstick' not in rec['label']:
        rec['max_rel_diff_vs_numpy'] = _max_rel_diff(
          outputs[name], outputs['numpy'], name in row.time_major
        )
    records.append(rec)
  return records


# ----------------------------------------------------------------------------- reports

CSV_FIELDS = (
  'section',
  'kernel',
  'shape',
  'contender',
  'label',
  'median_ms',
  'reps',
  'spread',
  'first_s',
  'bytes',
  'gbps',
  'frac_copy_bw',
  'baseline',
  'time_vs_baseline',
  'jaxca_speedup',
  'max_rel_diff_vs_numpy',
  'note',
)


def fmt(value, spec):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return 'n/a'
  return format(value, spec)


def summary_table(records, section):
  """One line per contender: its time, GB/s, % of the copy bandwidth, time / row baseline."""
  lines = [
    '| kernel | shape | contender | what | ms | reps | spread | GB/s | % copy BW '
    '| time / baseline | max rel diff vs NumPy | first call s | notes |',
    '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ]
  for rec in records:
    if rec['section'] != section:
      continue
    frac = rec.get('frac_copy_bw')
    ratio = fmt(rec.get('time_vs_baseline'), '.2f')
    if rec['contender'] == rec.get('baseline') and rec.get('median_ms'):
      ratio = '1 (baseline)'
    lines.append(
      f'| {rec["kernel"]} | {rec["shape"]} | {rec["contender"]} | {rec["label"]} '
      f'| {fmt(rec.get("median_ms"), ".3f")} | {rec.get("reps", 0)} '
      f'| {fmt(rec.get("spread"), ".2f")} | {fmt(rec.get("gbps"), ".2f")} '
      f'| {fmt(frac and 100 * frac, ".1f")} | {ratio} '
      f'| {fmt(rec.get("max_rel_diff_vs_numpy"), ".1e")} | {fmt(rec.get("first_s"), ".2f")} '
      f'| {rec.get("note", "")} |'
    )
  return '\n'.join(lines)


# Issue 14 targets (ratios of medians timed in the same run).
T1_MAX, T1_STRETCH = 20.0, 5.0  # slowest trajectory-aware trace / jaxca retrace, at [8, 4096]
T2A_MIN = 1.5  # vmapped rlax GAE / time-major credit.gae
T2B_MIN = 1.0  # vmapped rlax GAE / batch-major credit.gae
T2C_MAX = 1.3  # masked / unmasked credit.gae, same layout and shape
SCALING_MAX = 8.0  # trajectory-aware jaxca time at T1 / at T0 (T1 = 4 T0; quadratic = 16x)


def _verdict(ok):
  return 'n/a' if ok is None else ('met' if ok else 'not met')


def targets(records, cfg):
  """The issue 14 performance targets, checked on the records of one run.

  Shapes come from `cfg['targets']`. Returns one dict per target: `target` (id), `what`
  (the criterion), `value` (the measured ratios) and `verdict` ('met', 'not met', or 'n/a'
  when a row it needs was not timed).
  """
  ms = {
    (r['kernel'], r['shape'], r['contender']): r.get('median_ms')
    for r in records
    if r['section'] in ('standard', 'offpolicy')
  }

  def ratio(num, den):
    a, b = ms.get(num), ms.get(den)
    return a / b if a and b else None

  def show(pairs, spec='.2f'):
    return ', '.join(f'{k} ' + ('n/a' if v is None else f'{v:{spec}}x') for k, v in pairs)

  out = []
  # T1: trajectory-aware traces vs per-decision retrace, at the same (batch, T).
  shape = cfg['targets']['trace_shape']
  per = {m: ratio((m, shape, 'jaxca'), (m, shape, 'jaxca_retrace')) for m in TRAJECTORY_AWARE}
  dc = {
    f'{m} (differentiable)': ratio((m, shape, 'jaxca_dc'), (m, shape, 'jaxca_retrace'))
    for m in TRAJECTORY_AWARE
    if (m, shape, 'jaxca_dc') in ms
  }
  slowest = None if None in per.values() else max(per.values())
  stretch = (
    '' if slowest is None else f'; stretch <= {T1_STRETCH:g}: ' + _verdict(slowest <= T1_STRETCH)
  )
  out.append(
    dict(
      target='T1',
      what=f'slowest of jaxca {", ".join(TRAJECTORY_AWARE)} / jaxca retrace at {shape} '
      f'<= {T1_MAX:g} (stretch <= {T1_STRETCH:g})',
      value=f'{show(per.items())}; slowest {fmt(slowest, ".2f")}x{stretch}'
      + (f' (not in the target: {show(dc.items())})' if dc else ''),
      verdict=_verdict(None if slowest is None else slowest <= T1_MAX),
    )
  )
  # T2: GAE at the issue's shapes.
  gae_shapes = items(cfg['targets']['gae_shapes'])

  def check(what, pairs, ok):
    vals = [v for _, v in pairs]
    verdict = None if not vals or None in vals else all(ok(v) for v in vals)
    return dict(what=what, value=show(pairs), verdict=_verdict(verdict))

  out.append(
    dict(
      target='T2a',
      **check(
        f'vmap(rlax GAE) / credit.gae(time_major=True) >= {T2A_MIN:g}',
        [(s, ratio(('gae', s, 'rlax'), ('gae', s, 'jaxca_tm'))) for s in gae_shapes],
        lambda v: v >= T2A_MIN,
      ),
    )
  )
  out.append(
    dict(
      target='T2b',
      **check(
        f'vmap(rlax GAE) / credit.gae (batch-major) >= {T2B_MIN:g}',
        [(s, ratio(('gae', s, 'rlax'), ('gae', s, 'jaxca'))) for s in gae_shapes],
        lambda v: v >= T2B_MIN,
      ),
    )
  )
  out.append(
    dict(
      target='T2c',
      **check(
        f'masked / unmasked credit.gae <= {T2C_MAX:g}, batch-major (jaxca) and time-major '
        '(jaxca_tm), both calls interleaved in the gae_masked row',
        [
          (f'{c} {s}', ratio(('gae_masked', s, c), ('gae_masked', s, f'{c}_nomask')))
          for s in gae_shapes
          for c in ('jaxca', 'jaxca_tm')
        ],
        lambda v: v <= T2C_MAX,
      ),
    )
  )
  # Scaling of the trajectory-aware traces in T (issue 3).
  t0, t1 = (int(t) for t in items(cfg['targets']['scaling_ts']))
  batch = shape.split('x')[0]
  out.append(
    dict(
      target='scaling',
      **check(
        f'jaxca trajectory-aware time at T={t1} / at T={t0}, batch {batch}, '
        f'< {SCALING_MAX:g} (linear {t1 // t0}x, quadratic {(t1 // t0) ** 2}x)',
        [
          (m, ratio((m, f'{batch}x{t1}', 'jaxca'), (m, f'{batch}x{t0}', 'jaxca')))
          for m in TRAJECTORY_AWARE
        ],
        lambda v: v < SCALING_MAX,
      ),
    )
  )
  return out


def targets_table(checked):
  lines = ['| target | criterion | measured | verdict |', '|---|---|---|---|']
  lines += [f'| {c["target"]} | {c["what"]} | {c["value"]} | **{c["verdict"]}** |' for c in checked]
  return '\n'.join(lines)


def targets_lines(checked):
  """One printable line per target: 'T1 met: criterion: measured'."""
  return [f'{c["target"]} {c["verdict"]}: {c["what"]}: {c["value"]}' for c in checked]


def scaling_table(records, cfg):
  ts = [int(t) for t in items(cfg['offpolicy']['ts'])]
  if len(ts) < 2:
    return ''
  t0, t1 = ts[0], ts[1]
  ms = {
    (r['kernel'], int(r['shape'].split('x')[-1])): r.get('median_ms')
    for r in records
    if r['section'] == 'offpolicy' and r['contender'] == 'jaxca'
  }
  lines = [
    f'| method | ms @T={t0} | ms @T={t1} | ratio T={t1}/T={t0} | linear / quadratic |',
    '|---|---:|---:|---:|---|',
  ]
  for method in items(cfg['offpolicy']['methods']):
    a, b = ms.get((method, t0)), ms.get((method, t1))
    ratio = b / a if a and b else None
    lines.append(
      f'| {method} | {fmt(a, ".3f")} | {fmt(b, ".3f")} | {fmt(ratio, ".2f")} '
      f'| {t1 // t0}x / {(t1 // t0) ** 2}x |'
    )
  return '\n'.join(lines)


def report(records, summary):
  """The markdown report: environment, copy bandwidth, targets, one table per section."""
  env, cfg = summary['env'], summary['config']
  spreads = [
    r['spread'] for r in records if r.get('spread') is not None and not math.isnan(r['spread'])
  ]
  parts = [
    '# jaxca.credit kernel benchmark',
    '',
    f'Command: `{summary["command"]}`',
    '',
    'Environment: ' + ', '.join(f'{k}={v}' for k, v in env.items()),
    '',
    f'Copy bandwidth (jitted `x + 1` on {cfg["copy_mb"]} MB float32, read + write counted): '
    f'**{summary["copy_gbps"]:.2f} GB/s** (median of both probes; start '
    f'{summary["copy_gbps_start"]:.2f}, end {summary["copy_gbps_end"]:.2f}, spread '
    f'{fmt(summary["copy_spread"], ".2f")}).',
    '',
    f'Protocol: {cfg["reps"]} timed calls per contender after one warm-up, contenders interleaved '
    '(rotating A, B, C rounds), median reported; `jax.block_until_ready`; inputs generated once '
    'per shape, no donation. NumPy contenders: the first call is timed, at most '
    f'{cfg["reps"]} calls and stop after {cfg["numpy_budget_s"]} s (reps column). '
    'GB/s = 4 bytes x (float32 [B,T] input + output arrays) x B x T / median time (bootstrap [B] '
    'and scalars not counted); % copy BW = that GB/s / the copy bandwidth above. '
    "time / baseline = median ms / the row baseline's median ms (timed in the same interleaved "
    'rounds; < 1 = faster): vmapped rlax for GAE, discounted returns and the per-decision '
    'off-policy methods (the rlax GAE yardstick for the other standard kernels), jaxca '
    '`retrace` at the same (batch, T) for the trajectory-aware traces, NumPy for the group '
    'estimators. rlax baselines are jitted '
    '`jax.vmap` of the per-trajectory function, fed its native layout (values[T+1] built before '
    'timing); the GAE one also returns `adv + values`. `jaxca_tm` = the `time_major=True` '
    'kernel on inputs transposed to [T,B] once before timing (same bytes). "(yardstick)" = a '
    'contender computing a different quantity at the same shape (no rel diff). rel diff = '
    'max |out - NumPy| / max(1, max |NumPy|) over all outputs.',
    f'Noise: median spread (p90-p10)/median over all contenders '
    f'{fmt(float(np.median(spreads)) if spreads else None, ".2f")}, max '
    f'{fmt(max(spreads) if spreads else None, ".2f")}; load average at start '
    f'{env.get("loadavg_1_5_15")}, at end {env.get("loadavg_end")}.',
    '',
    '## Issue 14 targets',
    '',
    targets_table(summary['targets']) if 'targets' in summary else '(not computed)',
    '',
    '## Kernels at the standard shapes (issue 2)',
    '',
    summary_table(records, 'standard'),
    '',
    '## Group estimators',
    '',
    summary_table(records, 'group'),
    '',
    '## Off-policy traces, batch %d (issue 3)' % cfg['offpolicy']['batch'],
    '',
    summary_table(records, 'offpolicy'),
    '',
    scaling_table(records, cfg),
    '',
  ]
  return '\n'.join(parts)


def write(workdir, records, summary):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'bench_credit.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, CSV_FIELDS)
    writer.writeheader()
    writer.writerows(records)
  with open(os.path.join(workdir, 'bench_credit.json'), 'w') as f:
    json.dump(dict(summary, records=records), f, indent=1, default=str)
  with open(os.path.join(workdir, 'bench_credit.md'), 'w') as f:
    f.write(report(records, summary))


def row_count(cfg) -> int:
  """How many rows `standard_rows`, `group_rows` and `offpolicy_rows` yield for `cfg`."""
  return (
    len(shapes(cfg.shapes)) * len(items(cfg.kernels))
    + 2 * len(items(cfg.group.modes))
    + len(items(cfg.offpolicy.ts)) * len(items(cfg.offpolicy.methods))
  )
