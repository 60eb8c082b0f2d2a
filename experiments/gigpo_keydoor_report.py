"""GiGPO (arXiv 2505.10978) vs GRPO on KeyDoor: the report of `experiments/gigpo_keydoor.py`.

Host-side and NumPy only. The runs advance in lockstep (vmapped), so each `metrics.jsonl`
record holds a list of every run's value (`jaxca.report_arms.lockstep_series`); from them,
per-arm statistics (`arm_stats`: eval success, AUC, episodes to 50% / 80%, anchor-group
sizes, the step term's share `step_share`), the claim and its gate (`verdict`, behind the
GRPO baseline gate of `jaxca.report`), figures F4 (success curves) and F5 (step-group size
histograms per anchor kind, `ANCHORS`) and results.md (`write_report`).
"""

import os

import jax
import numpy as np

from jaxca import bench
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import warmstart
from jaxca.credit import gigpo

NAME = 'gigpo_keydoor'
BASELINE = 'grpo_msn'
TARGET = 0.5  # the design's bar: GRPO ends at >= 50% greedy eval success in every seed
# Anchor kinds for the group-size histograms: (name, use_state, use_turn, use_history).
ANCHORS = (
  ('state', 1.0, 0.0, 0.0),
  ('state+turn', 1.0, 1.0, 0.0),
  ('history', 0.0, 0.0, 1.0),
  ('turn', 0.0, 1.0, 0.0),
)


def _first_reach(its, curve, thresh, per_iter):
  hit = np.flatnonzero(curve >= thresh)
  return float(its[hit[0]] * per_iter) if hit.size else np.inf


def arm_stats(config, records, runs_):
  """{arm: dict of per-seed arrays and summaries} from the records."""
  per_iter = config.rl.tasks_per_iter * config.rl.group_size
  its, greedy = ra.lockstep_series(records, 'eval_greedy')
  _, sampled = ra.lockstep_series(records, 'eval_sampled')
  _, held = ra.lockstep_series(records, 'heldout_greedy')
  train_its, success = ra.lockstep_series(records, 'success')
  _, slen = ra.lockstep_series(records, 'success_len')
  _, single = ra.lockstep_series(records, 'singleton_rows')
  _, median = ra.lockstep_series(records, 'median_group_size')
  _, nonzero = ra.lockstep_series(records, 'frac_step_adv_nonzero')
  _, abs_s = ra.lockstep_series(records, 'mean_abs_step_adv')
  _, abs_e = ra.lockstep_series(records, 'mean_abs_episode_adv')
  hist_its, hist_g = ra.lockstep_series(records, 'hist_groups')
  _, hist_r = ra.lockstep_series(records, 'hist_rows')
  hist_g = hist_g.reshape(len(hist_its), len(runs_), len(ANCHORS), -1)
  hist_r = hist_r.reshape(len(hist_its), len(runs_), len(ANCHORS), -1)
  out = {}
  for name in dict.fromkeys(a['name'] for a, _ in runs_):
    idx = [i for i, (a, _) in enumerate(runs_) if a['name'] == name]
    arm = runs_[idx[0]][0]
    last = slice(max(len(train_its) - 10, 0), None)
    at = {k: (greedy[list(its).index(k), idx] if k in its else None) for k in (20, 40, 80)}
    out[name] = dict(
      arm=arm,
      its=its,
      episodes=its * per_iter,
      greedy=greedy[:, idx],
      sampled=sampled[:, idx],
      at=at,
      auc=greedy[:, idx].mean(0),
      to50=np.asarray([_first_reach(its, greedy[:, i], 0.5, per_iter) for i in idx]),
      to80=np.asarray([_first_reach(its, greedy[:, i], 0.8, per_iter) for i in idx]),
      held=held[-1, idx] if len(held) else np.full(len(idx), np.nan),
      success_len=slen[last][:, idx].mean(0),
      train_success=success[:, idx],
      singleton=(single[0, idx], single[-1, idx]),
      median=median[-1, idx],
      nonzero=nonzero[:, idx].mean(0),
      step_share=step_share(abs_s[:, idx], abs_e[:, idx]),
      hist_its=hist_its,
      hist_groups=hist_g[:, idx],
      hist_rows=hist_r[:, idx],
    )
  return out


def step_share(abs_step, abs_episode):
  """[runs] share of the step term in the advantage magnitude, mean|A^S| / (mean|A^S| + mean|A^E|).

  abs_step, abs_episode: [iterations, runs] mean |A^S| and |A^E| over each iteration's step
  rows; the means are taken over the whole run first. It stays in [0, 1] and is defined
  whenever either term is ever nonzero (a per-iteration ratio |A^S| / |A^E| is not: once
  every group of a batch succeeds in every rollout, A^E is 0 while A^S is not). nan: both 0.
  """
  s = np.mean(np.asarray(abs_step, float), axis=0)
  e = np.mean(np.asarray(abs_episode, float), axis=0)
  total = s + e
  return np.where(total > 0, s / np.where(total > 0, total, 1.0), np.nan)


def _anchor_name(arm):
  if arm['omega'] == 0:
    return '-'
  for name, us, ut, uh in ANCHORS:
    if (arm['key_state'], arm['key_turn'], arm['key_history']) == (us, ut, uh):
      return name
  return 'custom'


def _rng(x, pct=True, digits=0):
  return report.fmt_range(x, digits, pct)


def _eps(x):
  x = np.asarray(x, float)
  if np.all(np.isinf(x)):
    return 'not reached'
  reached = x[np.isfinite(x)]
  return f'{reached.mean():.0f}' + ('' if len(reached) == len(x) else f' ({len(reached)}/{len(x)})')


def verdict(stats, smoke=False, start='iteration-0 eval success (no warm start)'):
  """The confirm / refute rules of the design (see results.md) applied to `stats`.

  The rule is applied in every normalisation mode the run has both arms of (default:
  mean_std_norm; `:full` adds mean_norm). The gate (`report.gate`): the baseline must end at
  >= TARGET greedy eval success, >= 8 points above iteration 0, and above the noise floor,
  in every seed; else the claim reads UNTESTABLE. `start` names what the iteration-0 success
  is, for the rule text. Returns (markdown, headline outcome).
  """
  lines, confirmed_modes, refuted_modes, na, nums, modes = [], [], [], [], {}, []
  for mode in ('mn', 'msn'):
    gi, gr = stats.get(f'gigpo_{mode}'), stats.get(f'grpo_{mode}')
    if gi is None or gr is None:
      continue
    modes.append(mode)
    wins = gi['auc'] > gr['auc']
    t_gi, t_gr = gi['to50'], gr['to50']
    if np.all(np.isinf(t_gr)) and np.any(np.isfinite(t_gi)):
      fall = 1.0
    elif np.all(np.isfinite(t_gr)) and np.all(np.isfinite(t_gi)):
      fall = 1.0 - t_gi.mean() / t_gr.mean()
    else:
      fall = float('nan')
    nonsingleton = 1.0 - float(np.mean(gi['singleton'][1]))
    lines.append(
      f'- {mode}: GiGPO AUC {_rng(gi["auc"], digits=1)} vs GRPO {_rng(gr["auc"], digits=1)} '
      f'(GiGPO higher in {int(wins.sum())}/{len(wins)} seeds); episodes to 50% '
      f'{_eps(t_gi)} vs {_eps(t_gr)} (reduction {100 * fall:.0f}%); rows in non-singleton '
      f'anchor groups at the end {100 * nonsingleton:.0f}%.'
    )
    nums[f'{mode}: GiGPO / GRPO AUC %'] = (
      f'{_rng(gi["auc"], digits=1)} / {_rng(gr["auc"], digits=1)}'
    )
    nums[f'{mode}: episodes-to-50% reduction %'] = 100 * fall
    nums[f'{mode}: non-singleton rows %'] = 100 * nonsingleton
    if nonsingleton < 0.5:
      na.append(mode)
    elif wins.all() and fall >= 0.25:
      confirmed_modes.append(mode)
    elif gi['auc'].mean() <= gr['auc'].max():
      refuted_modes.append(mode)
  if not modes:
    outcome, note = 'UNTESTABLE', 'the run has no GiGPO / GRPO pair of one mode'
  elif confirmed_modes == modes:
    outcome, note = 'CONFIRMED', ''
  elif refuted_modes == modes:
    outcome, note = 'REFUTED', 'at this scale'
  elif na:
    outcome, note = (
      'UNTESTABLE',
      f'not applicable in mode(s) {na}: anchor groups are mostly singletons',
    )
  else:
    outcome = 'INCONCLUSIVE'
    note = (
      f'confirmed in {confirmed_modes or "no mode"}, refuted in {refuted_modes or "no mode"}; '
      f'the rule needs every mode run ({modes}) to agree'
    )
  claim = report.Verdict(
    'GiGPO beats GRPO',
    outcome,
    'confirmed if, in every normalisation mode run (mn: mean_norm, msn: mean_std_norm), GiGPO '
    'AUC > GRPO AUC in every seed and episodes-to-50% fall by >= 25%; refuted if in every mode '
    'run GiGPO mean AUC <= the best GRPO seed while >= 50% of rows are in non-singleton anchor '
    'groups; not applicable if the groups are mostly singletons',
    {**nums, 'modes confirmed': confirmed_modes, 'modes refuted': refuted_modes},
    note,
  )
  base = stats.get(BASELINE)
  gate = None
  if base is not None:
    noise = stats.get(report.NOISE_FLOOR_ARM)
    gate = report.gate(
      base['greedy'][-1],
      base['greedy'][0],
      None if noise is None else noise['greedy'][-1],
      baseline=f'{BASELINE} (final greedy eval success)',
      start=start,
      target=TARGET,
    )
  judged = report.judge([claim], gate, smoke)
  head = judged[0].outcome
  out = [report.expected_vs_observed([claim], gate, smoke), ''] + lines
  hist, grpo = stats.get('gigpo_msn_hist'), stats.get('grpo_msn')
  if hist is not None and grpo is not None:
    lo, hi = grpo['auc'].min(), grpo['auc'].max()
    spread = max(hi - lo, 0.05)
    ok = abs(hist['auc'].mean() - grpo['auc'].mean()) <= spread
    out.append(
      f'- Negative control (history-hash anchor) AUC {_rng(hist["auc"], digits=1)} vs GRPO '
      f'{_rng(grpo["auc"], digits=1)}: {"about equal, as expected" if ok else "NOT equal"} '
      f'(tolerance max(GRPO seed range, 5 points)).'
    )
  turn, gi = stats.get('mtgrpo_msn'), stats.get('gigpo_msn')
  if turn is not None and gi is not None:
    out.append(
      f'- Turn-index groups (MT-GRPO) AUC {_rng(turn["auc"], digits=1)} vs anchor-state groups '
      f'{_rng(gi["auc"], digits=1)} and GRPO {_rng(stats["grpo_msn"]["auc"], digits=1)}.'
    )
  for mode in ('msn',):
    a, b = stats.get(f'gigpo_{mode}_traj'), stats.get(f'gigpo_{mode}')
    if a is not None and b is not None:
      out.append(
        f'- Per-trajectory episode statistics: GiGPO AUC {_rng(a["auc"], digits=1)} vs '
        f'step-weighted {_rng(b["auc"], digits=1)}; GRPO '
        f'{_rng(stats[f"grpo_{mode}_traj"]["auc"], digits=1)} vs '
        f'{_rng(stats[f"grpo_{mode}"]["auc"], digits=1)}.'
      )
  return '\n'.join(out), head


def _plots(workdir, stats):
  import matplotlib  # noqa: PLC0415 (host-side, only when writing results)

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, st in stats.items():
    y = st['greedy']
    ax.plot(st['episodes'], y.mean(1), label=name, lw=1.5)
    ax.fill_between(st['episodes'], y.min(1), y.max(1), alpha=0.15)
  ax.set_xlabel('training episodes')
  ax.set_ylabel('eval success (greedy, in-pool tasks)')
  ax.set_title('F4: KeyDoor eval success (mean, seed range)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'F4.png'), dpi=110)
  plt.close(fig)
  name = 'gigpo_msn' if 'gigpo_msn' in stats else next(iter(stats))
  st = stats[name]
  n_it = len(st['hist_its'])
  fig, axes = plt.subplots(len(ANCHORS), n_it, figsize=(3.2 * n_it, 2.2 * len(ANCHORS)))
  axes = np.asarray(axes).reshape(len(ANCHORS), n_it)
  x = np.arange(len(gigpo.SIZE_BIN_LABELS))
  for i, (anchor, *_) in enumerate(ANCHORS):
    for j, it in enumerate(st['hist_its']):
      a = axes[i, j]
      a.bar(x - 0.2, st['hist_groups'][j, :, i].mean(0), 0.4, label='groups')
      a.bar(x + 0.2, st['hist_rows'][j, :, i].mean(0), 0.4, label='rows')
      a.set_xticks(x, gigpo.SIZE_BIN_LABELS, fontsize=7)
      a.set_ylim(0, 1)
      a.set_title(f'{anchor}, iteration {int(it) - 1}', fontsize=8)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f'F5: step-group sizes ({name}; fraction of groups / of rows)', fontsize=9)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'F5.png'), dpi=110)
  plt.close(fig)


def describe_warm_start(config, info) -> str:
  """The warm start in a sentence for results.md (None: random init)."""
  if info is None:
    return 'Start: random initialisation, no SFT (no warm start).'
  ws = config.warmstart
  return (
    f'Start: one warm start shared by every run: SFT (Adam {ws.lr:g}, batch {ws.batch_size}) on '
    f'{ws.num_demos} noisy-BFS demonstrations (each turn the BFS-optimal action with '
    f'probability {ws.p_opt:g}, else a uniformly random legal move; they succeed in '
    f'{100 * info["demo_success"]:.1f}%) for {info["steps"]} steps, stopped at the first '
    f'evaluation (every {ws.eval_every} steps) whose greedy success on '
    f'{config.eval.num_tasks} validation tasks (in-pool, disjoint from the evaluation tasks) '
    f'reached {report.percent_target(ws.stop_at)} (validation '
    f'{100 * info["validation_success"]:.1f}%; SFT curve in {warmstart.CURVE_FILE}).'
  )


def write_report(workdir, config, records, runs_, timing, ws_info=None):
  """results.md, F4.png, F5.png; returns the closing summary line."""
  stats = arm_stats(config, records, runs_)
  _plots(workdir, stats)
  start = (
    'iteration-0 eval success (no warm start)'
    if ws_info is None
    else 'iteration-0 eval success (the noisy-BFS warm start)'
  )
  text, head = verdict(stats, config.get('smoke', False), start)
  lines = [
    '# GiGPO vs GRPO on KeyDoor (multi-turn)',
    '',
    ra.run_header(
      ra.command_line(f'experiments.{NAME}'),
      runs.git_commit(),
      platform=f'{jax.devices()[0].platform} x{jax.device_count()}',
      load_start=timing['load_start'],
      load_end=bench.load_average(),
      total_s=timing['wall_s'],
      note=f'All {len(runs_)} runs train together (vmapped): first iteration incl. compile '
      f'{timing["compile_s"]:.1f} s, then {timing["s_per_iteration"] or 0:.2f} s per '
      'iteration for all runs.',
    ),
    f'Env: KeyDoor {config.env.size}x{config.env.size}, {config.env.num_walls} walls, H='
    f'{config.env.horizon}; {config.rl.tasks_per_iter} tasks x G={config.rl.group_size} per '
    f'iteration, {config.rl.iterations} iterations, {len(config.seeds)} seed(s); eval on '
    f'{config.eval.num_tasks} in-pool tasks every {config.eval.every} iterations, held-out '
    'layouts at the end.',
    describe_warm_start(config, ws_info),
    '',
    '## Expected vs observed',
    '',
    f'Gate (first): {BASELINE} must end at >= {100 * TARGET:g}% greedy eval success (the '
    "design's target), >= 8 points above its iteration-0 success (its start) and above the "
    'shuffled-reward '
    'noise floor, in every seed; if not, the claim reads UNTESTABLE. Rule: confirmed if GiGPO '
    'AUC > GRPO AUC in every seed and episodes-to-50% fall by >= 25%, in every normalisation '
    'mode run; refuted if GiGPO <= GRPO within the seed range while >= 50% of rows are in '
    'non-singleton groups; "not applicable" if groups are mostly singletons. The history-hash '
    'anchor (`:full`) should about equal GRPO.',
    '',
    text,
    '',
    '## Table',
    '',
    'Eval success: greedy, in-pool tasks, % (mean [min, max] over seeds). AUC: mean eval '
    'success over all evaluations (iteration 0 included). Singleton rows / median group size '
    "for the arm's own step-group key (GRPO arms: the state anchor they would use).",
    '',
    "Step share %: the step term's share of the advantage magnitude, mean|A^S| / (mean|A^S| + "
    "mean|A^E|), each mean over all step rows of all iterations (A^S, A^E of the rollouts' own "
    "returns in the arm's mode; for GRPO and the noise floor, what GiGPO would use). It "
    'replaces a per-iteration ratio |A^S| / |A^E|, which explodes when every rollout of a '
    'batch succeeds (A^E = 0, A^S != 0).',
    '',
    '| arm | mode | episode stats | anchor | lr | success@20 / @40 / @80 it | episodes to 50% / '
    '80% | AUC | held-out success | len (successes) | singleton rows % (it0 / end) | median '
    'group size | nonzero A^S rows % | step share % |',
    '|' + '---|' * 14,
  ]
  for name, st in stats.items():
    arm = st['arm']
    at = ' / '.join('-' if st['at'][k] is None else _rng(st['at'][k]) for k in (20, 40, 80))
    lines.append(
      f'| {name} | {"mean_std_norm" if arm["std_norm"] else "mean_norm"} | '
      f'{"trajectory" if arm["per_trajectory"] else "steps"} | {_anchor_name(arm)} | '
      f'{arm["lr"] or config.optim.lr:g} | {at} | {_eps(st["to50"])} / {_eps(st["to80"])} | '
      f'{_rng(st["auc"], digits=1)} | {_rng(st["held"])} | {_rng(st["success_len"], False, 1)} | '
      f'{_rng(st["singleton"][0])} / {_rng(st["singleton"][1])} | {_rng(st["median"], False, 1)} '
      f'| {_rng(st["nonzero"])} | {_rng(st["step_share"])} |'
    )
  lines += [
    '',
    '## Per seed',
    '',
    'Per-seed values (seed 0, 1, ...) and mean ± sd [bootstrap 95% CI of the mean] over '
    'seeds (`jaxca.report.seed_stats`). Final: greedy eval success at the last iteration '
    '(what the gate reads); episodes to 50%: "-" where a seed never reached it (the CI is over '
    'the seeds that did).',
    '',
    '| arm | final eval success % | AUC % | held-out success % | episodes to 50% |',
    '|---|---|---|---|---|',
  ]
  for name, st in stats.items():
    cells = [_seed_cell(st['greedy'][-1]), _seed_cell(st['auc']), _seed_cell(st['held'])]
    cells.append(_seed_cell(st['to50'], pct=False))
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines += [
    '',
    '![F4](F4.png)',
    '',
    '![F5](F5.png)',
    '',
    '## Implementation notes (our reading of the official code)',
    '',
    '- Estimators: `jaxca.estimators` stages `gigpo_episode + omega*gigpo_step` '
    '(`jaxca.credit.gigpo`), as verl-agent `gigpo/core_gigpo.py`: same mode at both levels, '
    'unbiased std + 1e-6, singleton step groups 0, exact anchor match (similarity_thresh 1.0), '
    'step returns with gamma=0.95. Episode statistics either over all step rows '
    '(`compute_mean_std_cross_steps=True`, the verl-agent default; arms without `_traj`) or over '
    "unique trajectories (the paper and the authors' later code; `_traj` arms). One difference: "
    'a singleton episode group gives 0 here (verl-agent: the raw return); with G >= 2 it never '
    'occurs.',
    '- MT-GRPO arm: the same step returns, grouped by (task, turn index) instead of (task, '
    'anchor state); our operationalisation of per-turn-index normalisation. Its bias is '
    'measured on a two-turn toy in tests/credit/gigpo_test.py (TurnIndexBiasTest).',
    '- Action masking: the policy samples from, and PPO uses log-probs of, the distribution '
    'restricted to the 4 action tokens. '
    + (
      'Random init, no SFT'
      if ws_info is None
      else 'Warm start as above (the SFT loss is the '
      "cross-entropy of the same masked distribution on the demonstrations' action tokens)"
    )
    + f', no KL, entropy coefficient {config.loss.ent_coef:g}, lr {config.optim.lr:g} (unless an '
    'arm sets its own).',
    '- Noise floor (`shuffled_reward`): GRPO (mean_std_norm over trajectories) on the episode '
    'returns of the same rollout slot of the previous task in the batch, so each advantage is '
    'independent of the episode it weights (`jaxca.estimators` stage `shuffled_reward`).',
    '',
  ]
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines))
  best = max(stats, key=lambda k: stats[k]['auc'].mean())
  return (
    f'{head}; best AUC {best} {_rng(stats[best]["auc"], digits=1)}; '
    f'{timing["wall_s"]:.0f} s; results in {os.path.join(workdir, "results.md")}'
  )


def _seed_cell(values, pct=True):
  """'mean (per seed)<br>mean ± sd [95% CI] (n seeds)': percentages (1 digit) or counts."""
  digits = None if pct else 0
  return f'{report.fmt_seeds(values, digits, pct)}<br>{report.fmt_ci(values, digits, pct)}'
