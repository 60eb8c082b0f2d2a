"""token_credit's Part A: per-token signals and oracle credit of one checkpoint (no training).

A probe of arXiv 2508.04349 (GTPO / GRPO-S: entropy), 2509.03646 (HICRA: planning tokens)
and 2510.13554 (FAI / WAAD: attention, our operationalisation): on-policy samples of held-out
prompts, each token's entropy, probability, FAI and WAAD, and the oracle credit A* of every
token (`credit.mc.vineppo_advantages` with one "step" per token, from MC values at every token
boundary: `credit.mc.step_prefixes`, `prefixes.mc_step_values`,
`providers_lib.mc_complete_and_score`). Tables C (per token class) and D (credit-map quality),
the per-head split and figure F7. `experiments/token_credit.py` runs it on the warm start and,
by rule, on GRPO's trained checkpoint.
"""

import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import bench
from jaxca import lm
from jaxca import prefixes
from jaxca import report
from jaxca import runs
from jaxca import sampling
from jaxca.credit import mc
from jaxca.credit import token_credit as tc
from jaxca.lm import providers as providers_lib
from jaxca.networks import transformer
from jaxca.objectives import losses

# ----------------------------------------------------------------------------- token classes


def token_classes(task, responses, mask):
  """[B, N] int: 1..K value token of step k, K+1 STEP, K+2 EOS, K+3 other; 0 masked."""
  voc, k = task.vocab, task.num_steps
  responses, mask = np.asarray(responses), np.asarray(mask)
  step_ids = np.asarray(task.parse_steps(jnp.asarray(responses), jnp.asarray(mask)).step_ids)
  cls = np.full(responses.shape, k + 3)
  num = (responses >= voc.num_offset) & (responses < voc.size)
  cls = np.where(num & (step_ids >= 0) & (step_ids < k), step_ids + 1, cls)
  cls = np.where(responses == voc.step_id, k + 1, cls)
  cls = np.where(responses == voc.eos_id, k + 2, cls)
  return np.where(mask, cls, 0)


def class_names(k):
  return [f'value step {i}' for i in range(1, k + 1)] + ['STEP', 'EOS', 'other']


def first_error(task, responses, mask, batch, correct):
  """[B] int position of the first wrong value token of a wrong response (-1 otherwise)."""
  ok, _ = task_step_correct(task, responses, mask, batch)
  step_ids = np.asarray(task.parse_steps(jnp.asarray(responses), jnp.asarray(mask)).step_ids)
  mask = np.asarray(mask)
  out = np.full(len(mask), -1)
  for b in range(len(mask)):
    if correct[b] or not mask[b].any():
      continue
    bad = np.flatnonzero(ok[b] < 0.5)
    step = bad[0] if len(bad) else task.num_steps
    pos = np.flatnonzero((step_ids[b] == step) & mask[b])
    out[b] = pos[0] if len(pos) else np.flatnonzero(mask[b])[-1]
  return out


def task_step_correct(task, responses, mask, batch):
  """[B, S] per-step correctness through the Task interface (steps >= K read 0)."""
  rows = {k: jnp.asarray(v) for k, v in batch.items()}
  ok = task.step_correct(jnp.asarray(responses), jnp.asarray(mask), rows)
  return np.asarray(ok), None


def _complete(policy, task, n, temperature, params, key, tokens, mask, rows):
  return providers_lib.mc_complete_and_score(
    policy, task, params, key, tokens, mask, rows,
    num_samples=n, max_new_tokens=task.response_len, temperature=temperature,
  )  # fmt: skip


class Diagnoser:
  """Part A: per-token signals and oracle credit of on-policy samples (jitted once)."""

  def __init__(self, config, task, policy):
    self.cfg, self.task, self.policy = config.part_a, task, policy
    voc = task.vocab
    self.temperature = config.rl.temperature
    self.sample = jax.jit(
      functools.partial(
        sampling.sample,
        policy,
        num_samples=self.cfg.samples,
        max_new_tokens=task.response_len,
        eos_id=voc.eos_id,
        pad_id=voc.pad_id,
      )
    )
    self.forward = jax.jit(functools.partial(self._forward, policy, task.prompt_len))
    self.complete = bench.Aot(functools.partial(_complete, policy, task, self.cfg.mc_samples, 1.0))
    self.windows = tuple(float(w) for w in self.cfg.windows)

  @staticmethod
  def _forward(policy, lp, params, tokens, valid, windows):
    out = policy.apply(params, tokens, valid, return_attention=True)
    logits = out.logits.astype(jnp.float32)
    ent = losses.entropy_from_logits(logits[:, lp - 1 : -1])
    logp = transformer.response_log_probs(logits, tokens, lp)
    response = valid & (jnp.arange(valid.shape[-1]) >= lp)[None, :]
    metrics = [providers_lib.attention_metrics(out.attention, valid, response, w) for w in windows]
    return dict(
      entropy=ent,
      log_prob=logp,
      distance=metrics[0].distance,
      global_heads=metrics[0].global_heads,
      fai_global=metrics[0].fai_global,
      fai_all=metrics[0].fai_all,
      waad=jnp.stack([m.waad for m in metrics], axis=0),
    )

  def run(self, params, test, key):
    task, cfg = self.task, self.cfg
    voc, lp, n = task.vocab, task.prompt_len, task.response_len
    k_sample, k_mc = jax.random.split(key)
    batch = {k: np.asarray(v[: cfg.prompts]) for k, v in test.items()}
    prompts = jnp.asarray(batch['prompts'])
    s = self.sample(params, k_sample, prompts, lm.prompt_mask(task, prompts))
    rep = {k: np.repeat(v, cfg.samples, axis=0) for k, v in batch.items()}
    f = jax.device_get(self.forward(params, s.tokens, s.valid, self.windows))
    responses, mask = np.asarray(s.responses), np.asarray(s.mask)
    correct = np.asarray(task.outcome(s.responses, s.mask, rep)) > 0.5
    b = len(mask)
    ids = np.arange(b) // cfg.samples
    ent = np.where(mask, f['entropy'], 0.0)
    # GTPO token rewards and GRPO-S sequence rewards; weights = the entropy bonus |r~ - r|.
    r_gtpo = np.asarray(tc.gtpo_rewards(ent, correct, mask, jnp.asarray(ids), cfg.prompts))
    sign = np.where(correct, 1.0, -1.0)[:, None]
    w_gtpo = np.where(mask, np.abs(r_gtpo - sign), 0.0)
    r_grpo_s = np.asarray(tc.grpo_s_rewards(ent, correct, mask, jnp.asarray(ids), cfg.prompts))
    # Oracle A*: MC values at every token boundary (one "step" per token).
    step_ids = np.where(mask, np.arange(n)[None, :], -1).astype(np.int32)
    pmask = np.asarray(s.valid)[:, :lp]
    tokens, smask, exists = jax.device_get(
      mc.step_prefixes(np.asarray(s.tokens)[:, :lp], pmask, responses, mask, step_ids, n)
    )
    calls = [0]

    def complete(t, m, rows):
      calls[0] += 1
      kk = jax.random.fold_in(k_mc, calls[0])
      return jax.device_get(self.complete(params, kk, t, m, rows))

    t0 = time.time()
    res = prefixes.mc_step_values(
      complete,
      tokens,
      smask,
      exists,
      rep,
      num_samples=cfg.mc_samples,
      minimum_bucket=min(cfg.mc_chunk, 64),
      chunk=cfg.mc_chunk,
    )
    mc_s = time.time() - t0
    a_star = np.asarray(
      mc.vineppo_advantages(step_ids, res.values, correct.astype(np.float32), mask)
    )
    err = first_error(task, responses, mask, rep, correct)
    return dict(
      prompts=np.asarray(s.tokens)[:, :lp],
      responses=responses,
      mask=mask,
      correct=correct,
      group=ids,
      entropy=ent,
      prob=np.where(mask, np.exp(f['log_prob']), 0.0),
      fai_global=f['fai_global'][:, lp:],
      fai_all=f['fai_all'][:, lp:],
      fai_prompt=f['fai_global'][:, :lp],
      fai_prompt_all=f['fai_all'][:, :lp],
      waad=f['waad'][:, :, lp:],
      distance=f['distance'],
      global_heads=f['global_heads'],
      gtpo_reward=r_gtpo,
      gtpo_weight=w_gtpo,
      grpo_s_reward=r_grpo_s,
      a_star=a_star,
      values=res.values,
      first_error=err,
      classes=token_classes(task, responses, mask),
      mc_states=np.int64(res.num_unique),
      mc_slots=np.int64(np.asarray(exists).sum()),
      mc_seconds=np.float64(mc_s),
    ), voc


def _soft_top(w, m, fraction):
  """Expected top-k indicator with random tie-breaking: k = ceil(fraction * n)."""
  v = w[m]
  n = len(v)
  k = math.ceil(fraction * n - 1e-3)
  out = np.zeros(n)
  if k == 0:
    return out, 0
  order = np.sort(v)[::-1]
  thr = order[k - 1]
  above = v > thr
  tied = v == thr
  out[above] = 1.0
  out[tied] = (k - above.sum()) / tied.sum()
  return out, k


def credit_maps(d, config):
  """{method: [B, N] weights} of Table D."""
  alpha = config.credit.hicra_alpha
  mask, k = d['mask'], config.task.num_steps
  frac = config.part_a.top_fraction
  fai_top = np.asarray(tc.top_fraction_mask(d['fai_global'], mask, frac))
  waad_top = np.asarray(tc.top_fraction_mask(d['waad'][1], mask, frac))
  ent_top = np.asarray(tc.top_fraction_mask(d['entropy'], mask, config.credit.hicra_top_fraction))
  sep = d['classes'] == k + 1
  # HICRA acts on GRPO's advantage sign: (1 + alpha) on S where A > 0, (1 - alpha) where A < 0.
  grp = d['group']
  mean = np.array([d['correct'][grp == g].mean() for g in grp])
  a_sign = np.sign(d['correct'] - mean)[:, None]
  lengths = mask.sum(1)
  long = lengths > np.array([lengths[grp == g].mean() for g in grp])
  one = mask.astype(np.float64)
  maps = {
    'GRPO': one,
    'entropy': d['entropy'],
    'GTPO': d['gtpo_weight'],
    'FAI-top-20%': one + alpha * fai_top,
    'HICRA-sep': one + alpha * a_sign * sep,
    'HICRA-FAI': one + alpha * a_sign * fai_top,
    'HICRA-official': one + alpha * (ent_top & (a_sign > 0) & long[:, None]),
    'WAAD-peak': one + alpha * waad_top,
    'oracle': np.abs(d['a_star']),
  }
  return {name: np.where(mask, w, 0.0) for name, w in maps.items()}


def table_d_rows(d, config):
  maps = credit_maps(d, config)
  mask, target = d['mask'], np.abs(d['a_star'])
  fmt = d['classes'] >= config.task.num_steps + 1
  frac = config.part_a.top_fraction
  rows = {}
  for name, w in maps.items():
    rho, hits, prec, extra_fmt, extra_all = [], [], [], 0.0, 0.0
    for b in range(len(mask)):
      m = mask[b]
      if m.sum() < 2:
        continue
      wb, tb = w[b][m], target[b][m]
      if m.sum() >= 3:
        r = report.spearman(wb, tb)
        if np.isfinite(r):
          rho.append(r)
      e = d['first_error'][b]
      if e >= 0:
        top = np.flatnonzero(wb == wb.max())
        pos = np.flatnonzero(m)
        hits.append(float(np.flatnonzero(pos == e)[0] in top) / len(top))
      sw, kk = _soft_top(w[b], m, frac)
      st, _ = _soft_top(target[b], m, frac)
      if kk:
        prec.append(float((sw * st).sum() / kk))
      excess = np.maximum(wb - wb.mean(), 0.0)
      extra_fmt += float(excess[fmt[b][m]].sum())
      extra_all += float(excess.sum())
    rows[name] = dict(
      spearman=float(np.mean(rho)) if rho else float('nan'),
      spearman_n=len(rho),
      hit1=float(np.mean(hits)) if hits else float('nan'),
      hit_n=len(hits),
      precision=float(np.mean(prec)) if prec else float('nan'),
      format_share=extra_fmt / extra_all if extra_all > 0 else float('nan'),
    )
  rows['_chance_hit1'] = rows['GRPO']['hit1']  # uniform weights: 1/L in expectation
  return rows


def table_c_rows(d, config):
  k = config.task.num_steps
  names = class_names(k)
  cls, mask = d['classes'], d['mask']
  abs_a = np.abs(d['a_star'])
  total = abs_a[mask].sum()
  errs = [(b, d['first_error'][b]) for b in range(len(mask)) if d['first_error'][b] >= 0]
  rows = []
  for c, name in enumerate(names, start=1):
    sel = cls == c
    cnt = int(sel.sum())
    err_in = sum(cls[b, e] == c for b, e in errs)

    def mean(x, sel=sel, cnt=cnt):
      return float(x[sel].mean()) if cnt else float('nan')

    rows.append(
      dict(
        name=name,
        count=cnt,
        entropy=mean(d['entropy']),
        prob=mean(d['prob']),
        fai_global=mean(d['fai_global']),
        fai_all=mean(d['fai_all']),
        waad=mean(d['waad'][1]),
        abs_a=mean(abs_a),
        share_a=float(abs_a[sel].sum() / total) if total > 0 else float('nan'),
        p_err=err_in / len(errs) if errs else float('nan'),
      )
    )
  return rows


def prompt_fai_rows(d, task):
  voc = task.vocab
  p = d['prompts']
  ops = (p == voc.add_id) | (p == voc.sub_id) | (p == voc.mul_id)
  operands = np.zeros_like(ops)
  operands[:, 1:] = ops[:, :-1]
  out = {}
  for name, sel in (('prompt op', ops), ('prompt operand', operands)):
    out[name] = (
      int(sel.sum()),
      float(d['fai_prompt'][sel].mean()),
      float(d['fai_prompt_all'][sel].mean()),
    )
  return out


# ----------------------------------------------------------------------------- output


def _f(x, digits=2, pct=False):
  return report.fmt(x, None if pct else digits, pct)


def table_c(rows, prompt_rows):
  out = [
    '| class | count | mean H | mean p | FAI (global heads) | FAI (all heads) | WAAD (W=4) | '
    'mean \\|A*\\| | share of Σ\\|A*\\| | P(first error ∈ class \\| wrong) |',
    '|---' * 10 + '|',
  ]
  for r in rows:
    out.append(
      f'| {r["name"]} | {r["count"]} | {_f(r["entropy"], 3)} | {_f(r["prob"], 3)} | '
      f'{_f(r["fai_global"], 3)} | {_f(r["fai_all"], 3)} | {_f(r["waad"], 3)} | '
      f'{_f(r["abs_a"], 3)} | {_f(r["share_a"], 3)} | {_f(r["p_err"], 3)} |'
    )
  for name, (cnt, fg, fa) in prompt_rows.items():
    out.append(f'| {name} (FAI only) | {cnt} | - | - | {_f(fg, 3)} | {_f(fa, 3)} | - | - | - | - |')
  return '\n'.join(out)


def table_d(rows):
  out = [
    '| method | mean per-response Spearman(w, \\|A*\\|) (n) | first-error hit@1 (n; chance '
    f'{_f(rows["_chance_hit1"], 3)}) | precision of top-20% vs top-20% \\|A*\\| | '
    'share of extra credit on format tokens |',
    '|---' * 5 + '|',
  ]
  for name, r in rows.items():
    if name.startswith('_'):
      continue
    out.append(
      f'| {name} | {_f(r["spearman"], 3)} ({r["spearman_n"]}) | {_f(r["hit1"], 3)} '
      f'({r["hit_n"]}) | {_f(r["precision"], 3)} | {_f(r["format_share"], 3)} |'
    )
  return '\n'.join(out)


def head_table(d, config):
  h = config.policy.num_heads
  out = [
    '| layer | head | mean attention distance (response queries) | split |',
    '|---|---|---|---|',
  ]
  for i, (dist, glob) in enumerate(zip(d['distance'], d['global_heads'])):
    out.append(f'| {i // h} | {i % h} | {dist:.2f} | {"global" if glob else "local"} |')
  return '\n'.join(out)


def waad_sweep(d, config):
  out = []
  target = np.abs(d['a_star'])
  for j, w in enumerate(config.part_a.windows):
    rho = []
    for b in range(len(d['mask'])):
      m = d['mask'][b]
      if m.sum() >= 3:
        r = report.spearman(d['waad'][j][b][m], target[b][m])
        if np.isfinite(r):
          rho.append(r)
    out.append(f'W={w}: {_f(float(np.mean(rho)) if rho else float("nan"), 3)}')
  return ', '.join(out)


def plot_f7(d, task, config, path):
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  wrong = [b for b in range(len(d['mask'])) if d['first_error'][b] >= 0]
  right = [b for b in range(len(d['mask'])) if d['correct'][b]]
  n_ex = config.part_a.examples
  picks = (wrong[: (3 * n_ex) // 4] + right)[:n_ex]
  cols = 2
  rows = max(1, math.ceil(len(picks) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(12, 2.2 * rows), squeeze=False)
  names = ['H', 'FAI', 'WAAD', 'GTPO w', 'A*']
  for ax, b in zip(axes.ravel(), picks):
    m = d['mask'][b]
    n = int(m.sum())
    mat = np.stack(
      [d['entropy'][b], d['fai_global'][b], d['waad'][1][b], d['gtpo_weight'][b], d['a_star'][b]]
    )[:, :n]
    scale = np.maximum(np.abs(mat).max(axis=1, keepdims=True), 1e-9)
    ax.imshow(mat / scale, cmap='RdBu_r', vmin=-1, vmax=1, aspect='auto')
    ax.set_yticks(range(5))
    ax.set_yticklabels(names, fontsize=7)
    words = task.vocab.decode(d['responses'][b][:n], skip_pad=False).split()
    ax.set_xticks(range(n))
    ax.set_xticklabels(words, fontsize=8)
    e = d['first_error'][b]
    if e >= 0:
      ax.add_patch(plt.Rectangle((e - 0.5, -0.5), 1, 5, fill=False, ec='lime', lw=2))
    ax.set_title(f'{"correct" if d["correct"][b] else "wrong"} (row-normalised)', fontsize=8)
  for ax in axes.ravel()[len(picks) :]:
    ax.axis('off')
  fig.suptitle('F7: per-token signals (rows scaled to max |x|; green box: first wrong value token)')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def diagnose(diagnoser, config, params, test, key, name, workdir):
  d, _ = diagnoser.run(params, test, key)
  np.savez_compressed(os.path.join(workdir, f'part_a_{name}.npz'), **d)
  rows_d = table_d_rows(d, config)
  fai_rho = []
  for b in range(len(d['mask'])):
    m = d['mask'][b]
    if m.sum() >= 3:
      r = report.spearman(d['fai_global'][b][m], np.abs(d['a_star'][b][m]))
      if np.isfinite(r):
        fai_rho.append(r)
  return dict(
    d=d,
    rows_c=table_c_rows(d, config),
    rows_d=rows_d,
    prompt=prompt_fai_rows(d, diagnoser.task),
    fai_spearman=float(np.mean(fai_rho)) if fai_rho else float('nan'),
  )


def diagnose_all(config, task, policy, checkpoints, test, workdir):
  """`diagnose` on each (name, params) of `checkpoints` (key 900 + its index); returns the
  `Diagnoser` (its compile seconds are reported) and {name: diagnosis}."""
  diagnoser, diags = Diagnoser(config, task, policy), {}
  for i, (name, params) in enumerate(checkpoints):
    diags[name] = diagnose(diagnoser, config, params, test, jax.random.key(900 + i), name, workdir)
    runs.note(f'Part A ({name}): {diags[name]["d"]["mc_states"]} MC states')
  return diagnoser, diags


def claims(diag):
  """Part A's own claims on one checkpoint's diagnosis: FAI marks the answer-determining tokens,
  and FAI is a credit signal, not concentrated on separators (`report.Verdict`s)."""
  d_rows = diag['rows_d']
  fai, chance_p = d_rows['FAI-top-20%'], d_rows['GRPO']['precision']
  fai_rho = diag['fai_spearman']
  ok = fai_rho > 0.3 and fai['precision'] >= 2 * chance_p
  out = [
    report.Verdict(
      'FAI marks the answer-determining tokens',
      'CONFIRMED' if ok else 'INCONCLUSIVE',
      'confirmed if Spearman(FAI, |A*|) > 0.3 and FAI top-20% precision >= 2x chance',
      {'Spearman': fai_rho, 'precision': fai['precision'], 'chance': chance_p},
      '' if ok else 'not confirmed',
    )
  ]
  c_rows = diag['rows_c']
  best = max(c_rows, key=lambda r: -1 if not np.isfinite(r['fai_global']) else r['fai_global'])
  sep = fai['format_share'] > 0.5 or best['name'] in ('STEP', 'EOS')
  out.append(
    report.Verdict(
      'FAI is a credit signal, not concentrated on separators',
      'REFUTED' if sep else 'INCONCLUSIVE',
      'refuted if FAI-top-20% puts > 50% of its extra credit on STEP/EOS tokens or STEP/EOS '
      'is the class with the highest mean FAI',
      {
        'share of extra credit on STEP/EOS': fai['format_share'],
        'highest mean FAI class': f'{best["name"]} ({report.fmt(best["fai_global"], 3)})',
      },
      'FAI is concentrated on separators' if sep else 'not refuted: not on separators',
    )
  )
  return out


def readings(config) -> str:
  """Part A's readings of FAI / WAAD and the oracle credit, for results.md (Markdown items)."""
  pa = config.part_a
  return f"""\
- FAI / WAAD (arXiv 2510.13554; no official code found; **our operationalisation**): heads =
  every (layer, head) pair; global heads = mean backward attention distance over response
  queries above the median; FAI_s = mean attention from later response tokens to token s
  (global heads; also all heads); WAAD_t = Σ_s Ā^loc_(t,s) min(t−s, W) with the local heads,
  W=4 in the tables (sweep {tuple(pa.windows)}); "WAAD-peak" = the top-20% WAAD tokens.
  Response token t sits at column Lp+t (FAI/WAAD read there); its entropy and probability
  come from the logits at column Lp+t−1.
- Oracle A*_t = V(y≤t) − V(y<t), V = MC-{pa.mc_samples} at T=1 from every token boundary
  (identical states de-duplicated; unfinished completions score 0), the last token R − V."""


def sections(diags, config, titles, trained):
  """The Markdown of each checkpoint of `titles` ((name, title)): its `section` if diagnosed,
  else UNTESTABLE by `trained`'s rule (`token_credit.trained_side`: runs?, rule, numbers)."""
  out = []
  for name, title in titles:
    if name in diags:
      out.append(section(diags[name], config, title))
      continue
    numbers = '; '.join(f'{k} {v}' for k, v in trained[2].items())
    out.append(
      f"""### Checkpoint: {title}

Not diagnosed: **UNTESTABLE** by rule. Rule: {trained[1]}. Numbers:
{numbers}.
"""
    )
  return out


def _mean(x, sel):
  return float(x[sel].mean()) if sel.any() else float('nan')


def section(dg, config, title):
  """The Markdown of one diagnosed checkpoint: counts, Tables C and D, sweeps, head split."""
  pa = config.part_a
  d = dg['d']
  return f"""### Checkpoint: {title}

{len(d['mask'])} responses ({pa.prompts} held-out prompts x {pa.samples}), accuracy
{100 * d['correct'].mean():.1f}%; MC-{pa.mc_samples} at {int(d['mc_slots'])} token boundaries,
{int(d['mc_states'])} distinct states after de-duplication ({d['mc_seconds']:.0f} s).

**Table C** (per token class; FAI/WAAD = our operationalisation):

{table_c(dg['rows_c'], dg['prompt'])}

**Table D** (credit-map quality; hit@1 with ties counted fractionally, precision with ties
broken at random in expectation; "extra credit" = the weight above the response's mean):

{table_d(dg['rows_d'])}

Spearman(FAI global, \\|A*\\|) per response, mean: {_f(dg['fai_spearman'], 3)}. WAAD window
sweep, mean per-response Spearman(WAAD, \\|A*\\|): {waad_sweep(d, config)}. GRPO-S sequence
rewards: mean {_f(_mean(d['grpo_s_reward'], d['correct']), 3)} (correct),
{_f(_mean(d['grpo_s_reward'], ~d['correct'] & d['mask'].any(1)), 3)} (wrong).

Per-head split (mean backward attention distance over response queries; global = above the
median):

{head_table(d, config)}
"""
