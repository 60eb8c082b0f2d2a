"""mc_credit's value probe (Table B): how well each estimator's values predict the truth.

The probe of VinePPO (arXiv 2410.01679; McGill-NLP/VinePPO
`analyzers/`): on held-out on-policy samples, the PPO-GAE critic's values and MC-K values of
boundary states against MC truth V* (mean absolute error, Pearson and Spearman), the ranking
of sampled next steps by Q* (`report.pairwise_accuracy`) and the step-error AUC of -A_i at the
first wrong step (`report.auc`). `experiments/mc_credit.py` runs it on PPO-GAE's checkpoints
of its first seed.
"""

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import lm
from jaxca import prefixes
from jaxca import report
from jaxca import runs
from jaxca import sampling
from jaxca.credit import mc
from jaxca.lm import providers as providers_lib


def _f(x, pct=False, digits=2):
  return report.fmt(x, None if pct else digits, pct)


def _last_valid(mask):
  mask = np.asarray(mask)
  return mask.shape[-1] - 1 - np.argmax(mask[..., ::-1], axis=-1)


class Prober:
  """MC values (chunked, one compile per sample count) and critic values of states."""

  def __init__(self, config, task, policy, critic):
    self.task, self.policy, self.critic, self.cfg = task, policy, critic, config.probe
    self.fns = {}
    self.critic_fn = jax.jit(critic.apply)
    self.temperature = config.rl.temperature

  def mc(self, params, key, tokens, mask, rows, n):
    """[U] MC-n values of U prefixes (rows: per-prefix batch data)."""
    if n not in self.fns:
      fn = functools.partial(
        providers_lib.mc_complete_and_score,
        self.policy,
        self.task,
        num_samples=n,
        max_new_tokens=self.task.response_len,
        temperature=self.temperature,
      )
      self.fns[n] = jax.jit(fn)
    u, c = len(tokens), self.cfg.chunk
    out = []
    for s in range(0, u, c):
      sl = np.arange(s, s + c) % u
      r, f, _ = self.fns[n](
        params,
        jax.random.fold_in(key, s),
        tokens[sl],
        mask[sl],
        {k: v[sl] for k, v in rows.items()},
      )
      out.append(np.asarray(mc.mc_values(r, f, n)))
    return np.concatenate(out)[:u]

  def critic_values(self, cparams, tokens, mask):
    v = np.asarray(self.critic_fn(cparams, jnp.asarray(tokens), jnp.asarray(mask)))
    return v[np.arange(len(v)), _last_valid(mask)]


def probe_checkpoint(config, task, policy, prober, params, cparams, test, key):
  """Table B rows of one checkpoint (critic, MC-K) and counts."""
  pc = config.probe
  voc = task.vocab
  lp, n = task.prompt_len, task.response_len
  keys = iter(jax.random.split(key, 64))
  sample = jax.jit(
    functools.partial(
      sampling.sample,
      policy,
      num_samples=pc.samples,
      max_new_tokens=n,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
    )
  )

  def on_policy(num_prompts):
    b = {k: v[:num_prompts] for k, v in test.items()}
    pm = lm.prompt_mask(task, jnp.asarray(b['prompts']))
    s = sample(params, next(keys), jnp.asarray(b['prompts']), pm)
    rows = {k: np.repeat(v, pc.samples, axis=0) for k, v in b.items()}
    return s, rows

  def grid(s, rows):
    steps = task.parse_steps(s.responses, s.mask)
    return (
      jax.device_get(
        mc.step_prefixes(s.tokens[:, :lp], s.valid[:, :lp], s.responses, s.mask, steps.step_ids, n)
      ),
      steps,
    )

  # --- value prediction: 256 deduplicated boundary states, stratified by depth.
  s, rows = on_policy(pc.prompts)
  (tokens, smask, exists), _ = grid(s, rows)
  p = prefixes.plan(tokens, smask, exists)
  u = p.num_unique
  depth = np.zeros(u, int)
  flat_inv = p.inverse.reshape(-1)
  for i, v in enumerate(flat_inv):
    if v >= 0:
      depth[v] = i % n
  rng = np.random.default_rng(0)
  chosen = []
  by_depth = [rng.permutation(np.flatnonzero(depth == d)).tolist() for d in range(n)]
  while len(chosen) < min(pc.states, u):
    for lst in by_depth:
      if lst and len(chosen) < min(pc.states, u):
        chosen.append(lst.pop())
  chosen = np.array(sorted(chosen))
  st_tok, st_mask = p.tokens[chosen], p.mask[chosen]
  st_rows = {k: v[p.rows[chosen]] for k, v in rows.items()}
  truth = prober.mc(params, next(keys), st_tok, st_mask, st_rows, pc.truth_samples)
  preds = {'critic': prober.critic_values(cparams, st_tok, st_mask)}
  for k in pc.mc_ks:
    preds[f'MC-{k}'] = prober.mc(params, next(keys), st_tok, st_mask, st_rows, k)
  out = {
    name: dict(mae=float(np.mean(np.abs(v - truth))), pearson=report.pearson(v, truth))
    for name, v in preds.items()
  }
  for name, v in preds.items():
    out[name]['spearman'] = report.spearman(v, truth)
  # --- ranking of alternative next steps.
  m = min(pc.rank_states, len(chosen))
  rsel = rng.choice(len(chosen), m, replace=False)
  cand_fn = jax.jit(
    functools.partial(
      sampling.sample_from_prefixes,
      policy,
      num_samples=pc.rank_candidates,
      max_new_tokens=2,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
    )
  )
  cs = jax.device_get(cand_fn(params, next(keys), st_tok[rsel], st_mask[rsel]))
  truth_q, pred_q = [], {name: [] for name in preds}
  kept = 0
  sa_tok, sa_mask, sa_rows, groups = [], [], [], []
  for j in range(m):
    acts = {}
    for c in range(pc.rank_candidates):
      row = j * pc.rank_candidates + c
      valid = cs.mask[row]
      act = tuple(int(t) for t in cs.responses[row][valid])
      # One step: the value token and its separator (STEP or EOS); cut after a separator.
      for cut, t in enumerate(act):
        if t in (voc.step_id, voc.eos_id):
          act = act[: cut + 1]
          break
      acts.setdefault(act, row)
    values = {a[0] for a in acts if a}
    if len(values) < pc.min_alternatives:
      continue
    kept += 1
    members = []
    for act, row in acts.items():
      if not act:
        continue
      members.append(len(sa_tok))
      sa_tok.append(cs.tokens[row][: st_tok.shape[1] + len(act)])
      sa_mask.append(cs.valid[row][: st_tok.shape[1] + len(act)])
      sa_rows.append(rsel[j])
    groups.append(members)
  rank = {}
  if kept:
    width = st_tok.shape[1] + 2
    pad = lambda a, fill: np.stack(  # noqa: E731
      [np.concatenate([x, np.full(width - len(x), fill, x.dtype)]) for x in a]
    )
    sa_t, sa_m = pad(sa_tok, voc.pad_id), pad(sa_mask, False)
    sa_r = {k: v[np.array(sa_rows)] for k, v in st_rows.items()}
    q_true = prober.mc(params, next(keys), sa_t, sa_m, sa_r, pc.truth_samples)
    q_pred = {'critic': prober.critic_values(cparams, sa_t, sa_m)}
    for k in pc.mc_ks:
      q_pred[f'MC-{k}'] = prober.mc(params, next(keys), sa_t, sa_m, sa_r, k)
    truth_q = [q_true[g] for g in groups]
    for name in preds:
      pred_q[name] = [q_pred[name][g] for g in groups]
      a1, n1 = report.pairwise_accuracy(truth_q, pred_q[name], min_gap=0.1)
      a2, n2 = report.pairwise_accuracy(truth_q, pred_q[name], ties_wrong=True)
      rank[name] = dict(rank_acc=a1, rank_pairs=n1, rank_acc_paper=a2, rank_pairs_paper=n2)
  for name in preds:
    out[name].update(rank.get(name, dict(rank_acc=float('nan'), rank_acc_paper=float('nan'))))
    out[name]['rank_states'] = kept
  # --- step-error AUC on on-policy responses: detect the first wrong step from -A_i.
  s, rows = on_policy(pc.auc_prompts)
  (tokens, smask, exists), steps = grid(s, rows)
  correct = np.asarray(task.step_correct(s.responses, s.mask, rows)) > 0
  exists = np.asarray(exists)
  outcome = np.asarray(task.outcome(s.responses, s.mask, rows))
  labels, keep = [], []
  for b in range(exists.shape[0]):
    nb = int(exists[b].sum())
    wrong = [i for i in range(nb) if not correct[b, i]]
    last = wrong[0] if wrong else nb - 1
    for i in range(last + 1):
      labels.append(bool(wrong) and i == last)
      keep.append((b, i))
  p = prefixes.plan(tokens, smask, exists)
  prow = {k: v[p.rows] for k, v in rows.items()}
  state_vals = {'critic': prober.critic_values(cparams, p.tokens, p.mask)}
  for k in pc.mc_ks:
    state_vals[f'MC-{k}'] = prober.mc(params, next(keys), p.tokens, p.mask, prow, k)
  for name, v in state_vals.items():
    grid_v = p.scatter(v)
    scores = []
    for b, i in keep:
      nb = int(exists[b].sum())
      after = outcome[b] if i == nb - 1 else grid_v[b, i + 1]
      scores.append(-(after - grid_v[b, i]))
    out[name]['step_error_auc'] = report.auc(scores, labels)
    out[name]['completions'] = int(name.split('-')[1]) if name.startswith('MC') else 0
  out['_counts'] = dict(states=len(chosen), rank_states=kept, auc_steps=len(labels))
  out['_counts']['auc_first_errors'] = int(np.sum(labels))
  return out


def probe_all(config, task, policy, critic, snaps, test, workdir):
  """`probe_checkpoint` on each snapshot {iteration: (params, critic params)} (key 500 +
  iteration) when `probe.enabled`; writes `probe.json`; returns {iteration: rows} ({} off)."""
  probe = {}
  if not config.probe.enabled:
    return probe
  prober = Prober(config, task, policy, critic)
  for it in sorted(snaps):
    params, cparams = snaps[it]
    t_ck = time.time()
    probe[it] = probe_checkpoint(
      config, task, policy, prober, params, cparams, test, jax.random.key(500 + it)
    )
    probe[it]['_counts']['seconds'] = round(time.time() - t_ck, 1)
    runs.note(f'probe at PPO-GAE iteration {it}: {time.time() - t_ck:.0f} s')
  with open(os.path.join(workdir, 'probe.json'), 'w') as f:
    json.dump({str(k): v for k, v in probe.items()}, f, indent=1)
  return probe


def claim(probe):
  """The value-quality claim on the last probed checkpoint (`report.Verdict`): consistent with
  VinePPO if the critic ranks next steps poorly while MC-9 ranks them well."""
  last = list(probe)[-1]
  crit = probe[last]['critic']['rank_acc']
  mc9 = probe[last].get('MC-9', {}).get('rank_acc', float('nan'))
  if np.isfinite(crit) and crit >= 0.8:
    outcome, note = 'REFUTED', 'at this scale: the critic ranks next steps well'
  elif np.isfinite(crit) and crit <= 0.6 and np.isfinite(mc9) and mc9 >= 0.8:
    outcome, note = 'CONFIRMED', 'consistent with VinePPO'
  else:
    outcome, note = 'INCONCLUSIVE', 'between the thresholds, or too few ranked states'
  return report.Verdict(
    'Value quality',
    outcome,
    'consistent with VinePPO if the critic rank-accuracy <= 0.6 with MC-9 >= 0.8; critic '
    '>= 0.8 refutes the claim at this scale (|ΔQ*| >= 0.1 pairs)',
    {'checkpoint': last, 'critic rank-acc': crit, 'MC-9 rank-acc': mc9},
    note,
  )


def describe(config) -> str:
  """How the probe draws its states and scores them, for results.md."""
  pc = config.probe
  return f"""\
V\\* and Q\\* are MC-{pc.truth_samples} at T=1. States: {pc.prompts} held-out
prompts x {pc.samples} on-policy samples, boundary states de-duplicated, up to
{pc.states} drawn stratified by depth. Ranking: up to {pc.rank_states}
states x {pc.rank_candidates} sampled next steps (distinct steps kept), states with
at least {pc.min_alternatives} distinct next values. Step-error AUC: first wrong step
(from the verifier) vs the correct steps before it, scored by -A_i, over
{pc.auc_prompts * pc.samples} on-policy responses."""


def section(config, probe) -> str:
  """Table B's section of results.md: the method, the table, the figure and the counts."""
  counts = json.dumps({str(k): v['_counts'] for k, v in probe.items()})
  return f"""\
{describe(config)}

{table_b(probe) if probe else '(probe disabled)'}

{'![probe](f_probe.png)' if probe else ''}

Counts per checkpoint: {counts}
"""


def table_b(probe):
  lines = [
    '| estimator | ckpt iter | MAE | Pearson | Spearman | rank-acc (\\|ΔQ\\*\\|≥0.1) | '
    'rank-acc (paper, ties wrong) | states with ≥3 alternatives | step-error AUC | '
    'completions per state |',
    '|---' * 10 + '|',
  ]
  for ck, res in probe.items():
    for name, r in res.items():
      if name.startswith('_'):
        continue
      lines.append(
        f'| {name} | {ck} | {_f(r["mae"], digits=3)} | {_f(r["pearson"])} | '
        f'{_f(r["spearman"])} | {_f(r["rank_acc"])} | {_f(r["rank_acc_paper"])} | '
        f'{r["rank_states"]} | {_f(r["step_error_auc"])} | {r["completions"] or "0 (critic)"} |'
      )
  return '\n'.join(lines)


def plot_probe(probe, path):
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  cks = list(probe)
  names = [n for n in probe[cks[0]] if not n.startswith('_')]
  for ax, key, lab in zip(
    axes,
    ('mae', 'rank_acc', 'step_error_auc'),
    ('MAE vs V*', 'rank accuracy (|dQ*|>=0.1)', 'step-error AUC'),
  ):
    for j, name in enumerate(names):
      ax.bar(
        np.arange(len(cks)) + j * 0.8 / len(names),
        [probe[c][name][key] for c in cks],
        width=0.8 / len(names),
        label=name,
      )
    ax.set_xticks(np.arange(len(cks)) + 0.4 - 0.4 / len(names))
    ax.set_xticklabels([f'iter {c}' for c in cks])
    ax.set_title(lab)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
