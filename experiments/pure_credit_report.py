"""PURE (arXiv 2504.15275) reproduction's report: per-seed statistics, the H1-H4 rules and
results.md, figures F1-F3 and greedy samples of `experiments/pure_credit.py`'s runs.

Host-side and NumPy only: the records are `metrics.jsonl`'s (`arm`, `seed`, `iteration`,
training metrics, `eval_*` at evaluations); the claims are judged behind the VR-only baseline
gate of `jaxca.report` (`judge`). The tables and curves use `jaxca.report_arms`.
"""

import collections
import json
import os

import jax
import numpy as np

from configs import pure_credit as config_mod
from jaxca import lm
from jaxca import report
from jaxca import report_arms as ra

NAME = 'pure_credit'
# The gate's VR-only baseline, in order of preference (see configs/pure_credit.py): with one-token
# steps, masking the closers leaves stop/continue without a gradient and the VR-only learner
# drifts to malformed endings (the masked A1 collapsed in 3 of 4 seeds after ~100 iterations).
BASELINE_ARMS = ('A1n_vr_only_nomask', 'A1_vr_only')


def make_greedy(parts):
  """A jitted greedy sampler of a few responses (compiled once, shared by every arm)."""
  sample = lm.make_sampler(parts.policy, parts.task)
  return jax.jit(lambda p, b: sample(p, b['prompts'], jax.random.key(0), greedy=True))


def write_samples(workdir, parts, greedy, params, test_b, arm_name, seed):
  """A few greedy responses of the final policy, decoded (samples.json)."""
  small = {k: v[:4] for k, v in test_b.items()}
  voc = parts.task.vocab
  s = jax.device_get(greedy(params, small))
  path = os.path.join(workdir, 'samples.json')
  data = json.load(open(path)) if os.path.exists(path) else {}
  data[f'{arm_name}/seed{seed}'] = [
    f'{voc.decode(p)}  ->  {voc.decode(r[m])}'
    for p, r, m in zip(np.asarray(small['prompts']), s.responses, s.mask)
  ]
  with open(path, 'w') as f:
    json.dump(data, f, indent=1)


COLS = (
  'accuracy',
  'malformed_steps',
  'prm_sum',
  'prm_min',
  'think_steps',
  'value_steps',
  'length',
  'truncated',
  'kl_seq',
  'step1_global',
)


def arm_stats(rows, arm, walls, warm, tail=5):
  """Per-seed numbers for the results table (training metrics averaged over the last `tail`)."""
  out = collections.defaultdict(list)
  its, acc = ra.seed_curves(rows, arm, 'eval_accuracy')
  _, exact = ra.seed_curves(rows, arm, 'eval_exact_match')
  for si, seed in enumerate(sorted({r['seed'] for r in rows if r.get('arm') == arm})):
    out['final_acc'].append(acc[si, -1])
    out['final_exact'].append(exact[si, -1])
    best = int(np.argmax(acc[si]))
    out['best_acc'].append(acc[si, best])
    out['best_iter'].append(its[best])
    for c in COLS:
      _, v = ra.seed_curves(rows, arm, c, seed, start=1)
      out[c].append(float(np.mean(v[0, -tail:])))
    _, th = ra.seed_curves(rows, arm, 'think_steps', seed, start=1)
    over = np.flatnonzero(th[0] > 2)
    out['think_gt2_iter'].append(int(over[0]) + 1 if len(over) else None)
    _, th_eval = ra.seed_curves(rows, arm, 'eval_think_steps')
    out['eval_think'].append(th_eval[si, -1])
    _, ps = ra.seed_curves(rows, arm, 'prm_sum', seed, start=1)
    out['prm_sum_first'].append(float(np.mean(ps[0, :tail])))
    _, s1 = ra.seed_curves(rows, arm, 'step1_global', seed, start=1)
    out['step1_first'].append(float(np.mean(s1[0, :tail])))
    out['wall'].append(walls.get((arm, seed), float('nan')))
    out['collapsed'].append(acc[si, -1] < 0.5 * warm)
  return out


def _fmt(vals, pct=False, digits=2):
  return report.fmt_range(vals, digits, pct, empty='never')


METRICS = (
  ('final_exact', 'greedy exact match %'),
  ('final_acc', 'greedy final answer %'),
  ('accuracy', 'sampled accuracy % (last 5 it.)'),
)


def metrics_table(stats, arms, warm_exact, warm):
  """Markdown: per arm, the three held-out / training metrics per seed and mean [95% CI]."""
  lines = [
    '| arm | ' + ' | '.join(f'{t} per seed | {t} mean ± sd [95% CI]' for _, t in METRICS) + ' |',
    '|' + '---|' * (1 + 2 * len(METRICS)),
    f'| warm start | {100 * warm_exact:.1f} | - | {100 * warm:.1f} | - | - | - |',
  ]
  for a in arms:
    cells = []
    for key, _ in METRICS:
      vals = stats[a][key]
      cells += [', '.join(report.fmt(v, pct=True) for v in vals), report.fmt_ci(vals, pct=True)]
    lines.append(f'| {a} | ' + ' | '.join(cells) + ' |')
  return lines


def mask_line(stats):
  """The separator-masking ablation (A3 vs A3n), reported, not judged."""
  a, b = stats.get('A3_min_prm'), stats.get('A3n_min_nomask')
  if not (a and b):
    return []
  return [
    '- **Separator masking** (reported, no rule): A3_min_prm (closers masked, the official '
    "code's default) vs A3n_min_nomask (closers keep their advantage): final greedy accuracy "
    f'{_fmt(a["final_acc"], True, 1)}% vs {_fmt(b["final_acc"], True, 1)}%, value steps / '
    f'response {_fmt(a["value_steps"])} vs {_fmt(b["value_steps"])}, length '
    f'{_fmt(a["length"], digits=1)} vs {_fmt(b["length"], digits=1)} tokens, malformed steps '
    f'/ response {_fmt(a["malformed_steps"])} vs {_fmt(b["malformed_steps"])}.'
  ]


def baseline_arm(arms):
  """The VR-only arm the gate reads: without separator masking if run, else the masked one."""
  return next((a for a in BASELINE_ARMS if a in arms), BASELINE_ARMS[0])


def _h2(a3, warm, label):
  """H2 (min-PRM is not hacked and improves accuracy) for one min-PRM arm's stats."""
  ok = (
    all(t < 0.5 for t in a3['think_steps'])
    and all(t < 0.05 for t in a3['truncated'])
    and all(f >= warm + 0.10 for f in a3['final_acc'])
  )
  bad = any(ln > 12 for ln in a3['length']) or any(f < warm for f in a3['final_acc'])
  outcome = 'CONFIRMED' if ok else ('REFUTED' if bad else 'INCONCLUSIVE')
  return report.Verdict(
    f'H2 (min-PRM not hacked, improves accuracy; {label})',
    outcome,
    'confirmed if THINK/resp < 0.5, trunc. < 5% and final accuracy >= warm + 10 points in '
    'every seed; refuted by length inflation or accuracy below warm',
    {
      'THINK/resp': _fmt(a3['think_steps']),
      'truncation %': _fmt(a3['truncated'], True, 1),
      'final accuracy %': _fmt(a3['final_acc'], True, 1),
      'warm %': f'{100 * warm:.1f}',
    },
    '' if ok or bad else 'not confirmed: no inflation, gain < 10 points',
  )


def judge(stats, warm, have, smoke=False):
  """The H1-H3 confirm / refute rules (REPRODUCTIONS-style criteria, stated in full), judged
  behind the VR-only (GRPO) baseline gate of `jaxca.report`; returns markdown lines."""
  claims = []
  a1, a2, a3, a4 = (stats.get(k) for k in have)
  a3n = stats.get('A3n_min_nomask')
  if a2:
    hacked = all(t > 3 for t in a2['think_steps'])
    collapsed = all(a2['collapsed'])
    rises = all(b > a for a, b in zip(a2['prm_sum_first'], a2['prm_sum']))
    note = ''
    if hacked and collapsed and rises:
      outcome = 'CONFIRMED'
    elif all(t < 1 for t in a2['think_steps']) and all(f >= warm for f in a2['final_acc']):
      outcome = 'REFUTED'
    elif any(t > 1 for t in a2['think_steps']) or any(ln > 10 for ln in a2['length']):
      outcome = 'INCONCLUSIVE'
      note = 'partial: hacked but not collapsed' if not collapsed else 'partial'
    else:
      outcome = 'INCONCLUSIVE'
    claims.append(
      report.Verdict(
        'H1 (sum-PRM is hacked and collapses)',
        outcome,
        'confirmed if in every seed THINK/resp > 3, final greedy accuracy < 0.5 x warm start '
        'and PRM-sum rising; refuted if THINK/resp < 1 and accuracy >= warm in every seed; '
        '"hacked but not collapsed" is partial',
        {
          'THINK/resp': _fmt(a2['think_steps']),
          'final accuracy %': _fmt(a2['final_acc'], True, 1),
          'warm %': f'{100 * warm:.1f}',
          'PRM-sum': f'{_fmt(a2["prm_sum_first"])} -> {_fmt(a2["prm_sum"])}',
        },
        note,
      )
    )
  for arm, label in ((a3, 'closers masked, the official code'), (a3n, 'closers not masked')):
    if arm:
      claims.append(_h2(arm, warm, label))
  if a3 and a4:
    diff = [b - a for a, b in zip(a3['final_acc'], a4['final_acc'])]
    s1_4 = all(b > a for a, b in zip(a4['step1_first'], a4['step1_global']))
    s1_3 = all(b > a for a, b in zip(a3['step1_first'], a3['step1_global']))
    note = ''
    if all(d >= 0.10 for d in diff) and s1_4 and not s1_3:
      outcome = 'CONFIRMED'
    elif np.mean(diff) <= 0:
      outcome = 'REFUTED'
    else:
      outcome, note = 'INCONCLUSIVE', 'not confirmed: A4 > A3 but below the bar'
    claims.append(
      report.Verdict(
        'H3 (10% VR helps min-PRM)',
        outcome,
        "confirmed if A4 - A3 >= +10 points final accuracy and A4's step-1 accuracy rises while "
        "A3's does not; refuted if A4 <= A3",
        {
          'A4 - A3 points': _fmt(diff, True, 1),
          'step-1 accuracy A3 %': f'{_fmt(a3["step1_first"], True, 1)} -> '
          f'{_fmt(a3["step1_global"], True, 1)}',
          'step-1 accuracy A4 %': f'{_fmt(a4["step1_first"], True, 1)} -> '
          f'{_fmt(a4["step1_global"], True, 1)}',
        },
        note,
      )
    )
  gate = None
  if a1:
    noise = stats.get(report.NOISE_FLOOR_ARM)
    gate = report.gate(
      a1['final_acc'], warm, noise['final_acc'] if noise else None, baseline=have[0]
    )
  return [report.expected_vs_observed(claims, gate, smoke)]


def h4_line(rows, stats, have):
  a1, _, a3, _ = have
  if not (stats.get(a1) and stats.get(a3)):
    return []
  target = 0.9 * np.mean(stats[a1]['final_acc'])
  out = []
  for arm in (a1, a3):
    its, acc = ra.seed_curves(rows, arm, 'eval_accuracy')
    first = []
    for s in range(acc.shape[0]):
      hit = np.flatnonzero(acc[s] >= target)
      first.append(int(its[hit[0]]) if len(hit) else None)
    out.append(f'{arm}: {first}')
  return [
    f"- **H4** (measured, not pass/fail at K=3): first evaluated iteration reaching 90% of A1's "
    f'final accuracy ({100 * target:.1f}%), per seed: ' + '; '.join(out) + '.'
  ]


F1_PANELS = tuple(
  ra.Panel(
    'iteration', key, ylabel='', title=title, where=lambda r: r['iteration'] > 0, marker=False
  )
  for key, title in (
    ('accuracy', 'true accuracy (sampled)'),
    ('prm_sum', 'PRM sum'),
    ('think_steps', 'THINK steps / response'),
    ('length', 'length (tokens)'),
    ('truncated', 'truncation rate'),
    ('kl_seq', 'KL / sequence (k3)'),
  )
)


def write_results(workdir, config, rows, walls, info):
  """results.md, the figures F1-F3; returns the summary line."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  warm = info['warmstart']['greedy_accuracy']
  arms = list(config.arms)
  stats = {a: arm_stats(rows, a, walls, warm) for a in arms}
  have = (baseline_arm(arms), 'A2_sum_prm', 'A3_min_prm', 'A4_min_prm_vr10')
  with open(os.path.join(workdir, 'stats.json'), 'w') as f:
    json.dump(dict(stats=stats, info=info), f, indent=1, default=float)

  seeds = list(config.seeds)
  ra.curves_figure(  # F1: training metrics, mean over seeds, shaded between min and max
    os.path.join(workdir, 'f1_curves.png'), ra.by_run(rows, arms, seeds), arms, seeds,
    F1_PANELS, mean_over_seeds=True, band=True, ncols=3, dpi=90,
  )  # fmt: skip
  # F2
  fig, ax = plt.subplots(figsize=(6, 5))
  for a in arms:
    _, x = ra.seed_curves(rows, a, 'prm_sum', start=1)
    _, y = ra.seed_curves(rows, a, 'accuracy', start=1)
    ax.plot(x.mean(0), y.mean(0), '-o', ms=2, label=a)
    ax.plot(x.mean(0)[-1:], y.mean(0)[-1:], 'k*')
  ax.set(
    xlabel='PRM reward (sum over steps)', ylabel='true accuracy (sampled)', title='Goodhart plot'
  )
  ax.legend(fontsize=7)
  fig.savefig(os.path.join(workdir, 'f2_goodhart.png'), dpi=90, bbox_inches='tight')
  plt.close(fig)
  # F3
  fig, ax = plt.subplots(figsize=(6, 4))
  for a, style in (('A3_min_prm', '-'), ('A4_min_prm_vr10', '--')):
    if a not in arms:
      continue
    for j in range(config.task.num_steps):
      its, v = ra.seed_curves(rows, a, f'global_ok_{j + 1}', start=1)
      ax.plot(its, v.mean(0), style, label=f'{a} step {j + 1}')
  ax.set(xlabel='iteration', ylabel='step correct (vs truth)', title='Per-step accuracy')
  ax.legend(fontsize=7)
  fig.savefig(os.path.join(workdir, 'f3_step_accuracy.png'), dpi=90, bbox_inches='tight')
  plt.close(fig)

  ws = info['warmstart']
  lines = [
    '# PURE reproduction: sum-form vs min-form PRM credit (arXiv 2504.15275)',
    '',
    ra.run_header(
      ra.command_line(f'experiments.{NAME}'),
      info['commit'],
      platform=info['cpu'],
      load_start=info['load_start'],
      load_end=info['load_end'],
      total_s=info['wall_s'],
      cores=info['cpus'],
      note='Results are deterministic given the config (in `config.json`). Compile of the RL '
      'chunk (first call, per PRM variant): '
      + ', '.join(f'PRM-{k} {v:.0f} s' for k, v in info['compile_s'].items())
      + '; every arm of a PRM variant reuses it (the arm is traced).',
    ),
    '',
    f'Task: K={config.task.num_steps}, M={config.task.modulus}, invertible ops, filler_rate '
    f'{config.task.filler_rate}, L_max {config.task.max_response_len}. PRM c={config.prm.c}, '
    f'w={config.prm.w}, f={config.prm.f}, noise {config.prm.noise}. G={config.rl.group_size}, '
    f'{config.rl.prompts_per_iter} prompts/iteration, {config.rl.iterations} iterations, seeds '
    f'{list(config.seeds)}, PPO-clip 0.2, {config.rl.num_epochs} epoch(s) x '
    f'{config.rl.num_minibatches} minibatches, Adam {config.optim.lr} (grad-norm clip 1), entropy '
    f'bonus {config.loss.ent_coef}, KL-in-reward k1 beta={config.credit.kl_coef}, softmin T='
    f'{config.credit.temperature}; held-out evaluation every {config.eval.every} iterations.',
    '',
    f'Warm start: {ws["steps"]} SFT steps ({ws["seconds"]:.0f} s), stopped at the first '
    f'validation greedy accuracy >= {report.percent_target(config.warmstart.target_low)} '
    '(validation '
    f'{100 * ws.get("validation_accuracy", float("nan")):.1f}%; validation problems disjoint '
    'from train and held-out; SFT curve in warmstart_curve.csv); held-out greedy accuracy '
    f'{100 * warm:.1f}% (exact match {100 * ws.get("exact_match", float("nan")):.1f}%; '
    f'{"in" if ws["in_band"] else "NOT in"} the band '
    f'[{report.percent_target(config.warmstart.target_low)}, '
    f'{report.percent_target(config.warmstart.target_high)}]); sampled (T=1) '
    f'THINK steps per response {ws["sampled_think_per_response"]:.3f} '
    f'({"meets" if ws["think_ok"] else "BELOW"} >= 0.1 needed to discover the hack).',
    '',
    '| arm | PRM | warm acc | final greedy acc | best acc (iter) | collapsed? | PRM-sum | PRM-min '
    '| THINK/resp | value steps/resp | length (tok) | trunc % | KL/seq | step-1 acc | iter THINK>2 '
    '| wall s |',
    '|' + '---|' * 16,
  ]
  for a in arms:
    s = stats[a]
    lines.append(
      f'| {a} | {config_mod.ARMS[a]["prm"]} | {100 * warm:.1f} | {_fmt(s["final_acc"], True, 1)} | '
      f'{_fmt(s["best_acc"], True, 1)} ({_fmt(s["best_iter"], digits=0)}) | '
      f'{sum(s["collapsed"])}/{len(s["collapsed"])} | {_fmt(s["prm_sum"])} | '
      f'{_fmt(s["prm_min"])} | '
      f'{_fmt(s["think_steps"])} | {_fmt(s["value_steps"])} | {_fmt(s["length"], digits=1)} | '
      f'{_fmt(s["truncated"], True, 1)} | {_fmt(s["kl_seq"], digits=3)} | '
      f'{_fmt(s["step1_global"], True, 1)} | {_fmt(s["think_gt2_iter"], digits=0)} | '
      f'{_fmt(s["wall"], digits=0)} |'
    )
  lines += [
    '',
    'Accuracies are held-out greedy (512 prompts) at the last iteration, mean [min, max] over '
    'seeds; PRM-sum ... step-1 acc are sampled training-batch means over the last 5 iterations. '
    '"collapsed" = final < 0.5 x warm. Figures: `f1_curves.png` (F1), `f2_goodhart.png` (F2), '
    '`f3_step_accuracy.png` (F3); per-iteration metrics in `metrics.jsonl`; greedy samples of '
    'the final policies in `samples.json`.',
    '',
    '## Held-out greedy metrics and sampled accuracy, per seed',
    '',
  ]
  lines += metrics_table(stats, arms, ws.get('exact_match', float('nan')), warm)
  lines += [
    '',
    'Greedy exact match: the response is the filler-free chain with every value right; greedy '
    'final answer: the verifier of the claims and the gate (EOS, exactly K value steps, fillers '
    'allowed, last value right); sampled accuracy: training batches (T=1), the mean of the '
    'last 5 iterations. Mean ± sd over seeds, percentile bootstrap 95% CI of the mean '
    '(`jaxca.report.fmt_ci`).',
    '',
    '## Expected vs observed (written by the experiment from the H1-H4 rules)',
    '',
  ]
  lines += judge(stats, warm, have, config.smoke) + h4_line(rows, stats, have) + mask_line(stats)
  if 'A4_min_prm_vr10' not in arms:
    lines.append('- **H3** (10% VR helps min-PRM): not run here (A4 runs in `:full`).')
  lines += [
    '',
    '## Honesty notes',
    '',
    '- **The result is largely designed in.** An incentive analysis of the PRM table predicts it: '
    'a filler step scores +f > +c, so under sum-form credit every extra THINK step adds reward, '
    'while under min-form credit the return is about the worst step, which a filler never '
    'lowers nor raises above c. What this run adds is evidence that the full LM pipeline '
    '(transform, RLOO token baseline, separator masking, skip-zero whitening, KL-in-reward, '
    'PPO-clip, truncation at L_max) behaves as the incentive analysis says, how fast the hack '
    'appears, and (with `:full`) which component protects min-form.',
    f'- Horizon: {config.rl.iterations} iterations; PURE saw min-form hacks appear within ~200 '
    'steps at scale, so slow hacks may not show here.',
    '- Implementation readings (corrections from the official code): the advantage is zeroed at '
    'every step closer, EOS and the last token included (PURE `nomask_separator_adv=False`); '
    "the token baseline counts each step's tokens without its closing separator "
    '(`credit.pure_baseline`); whitening excludes exact zeros (PURE `normalize`); strict '
    "min-form (`:full` only) is the paper's minimum over step rewards, not the official "
    "code's minimum over all token rewards; sum-form uses the same token baseline.",
    '- Greedy accuracy is the final-answer verifier (EOS-terminated, exactly K value steps, '
    'fillers anywhere, last value right); exact match is not used because targets with fillers '
    'are not unique.',
    '- Settings tried: the committed config only. The warm-start band (first validation '
    'final answer >= 35%) and the base recipe follow the protocol of the arith reproductions '
    '(`configs/common.ARITH_RL_RECIPE`); a 20-iteration pilot chose neither (it timed the run).',
    '- The table\'s "wall s" is the arm\'s wall clock for all its seeds together (they run '
    'batched in one program).',
  ]
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  short = {a: _fmt(stats[a]['final_acc'], True, 1) for a in arms}
  return (
    f'PURE: warm {100 * warm:.1f}% -> final greedy accuracy '
    + ', '.join(f'{a} {v}%' for a, v in short.items())
    + f' in {info["wall_s"]:.0f} s; results in {os.path.join(workdir, "results.md")}'
  )
