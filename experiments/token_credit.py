"""Token-credit probes: entropy (GTPO, GRPO-S), planning tokens (HICRA), attention (FAI, WAAD).

Commands, arms and settings: configs/token_credit.py. Composition only: the estimators are
`jaxca.estimators` spec strings on the two-phase learner (`lm.make_rl_phases`); HICRA's
planning set is a host field (`providers_lib.fai_planning`, one extra non-cached forward per
iteration). Part A, the per-token probe with its oracle credit A*, is
`experiments/token_credit_probe.py`. The warm start is `jaxca.warmstart` (validation-split
stop, keyed cache), the arms x seeds `jaxca.loop.run_grid` of `jaxca.loop.run_arm`, the
statistics, gate and verdicts `jaxca.report`, the tables, figure and header
`jaxca.report_arms`.

Part B runs first: every arm x seed from the warm start, GRPO the gate's baseline and the
shuffled-reward arm its noise floor (`report.arm_gate`: GRPO must gain >= 8 points over the
warm start and beat the noise floor in every seed, else every claim reads UNTESTABLE). Part A
then diagnoses the warm start and, only if it beat the warm start (`trained_side`), the final
GRPO parameters of the first seed (the "trained" checkpoint); otherwise its trained side reads
UNTESTABLE. Not resumable (the warm start is cached in `<workdir>/warmstart`).
"""

import os
import time

from absl import app
import jax
import numpy as np

from experiments import token_credit_probe as probe
from jaxca import arms as arms_lib
from jaxca import bench
from jaxca import lm
from jaxca import loop
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import warmstart
from jaxca.lm import host as host_lib
from jaxca.lm import providers as providers_lib

NAME = 'token_credit'
BASELINE = 'grpo'  # the gate's baseline arm (jaxca.report.arm_gate)
PLANNING = (None, 'fai', 'sep')  # an arm's planning set: none, FAI (host-side), STEP tokens
CREDIT_CONSTANTS = ('alpha1', 'alpha2', 'beta1', 'beta2', 'hicra_alpha', 'hicra_top_fraction')


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run."""
  # The policy holds prompt + response + an MC completion of Part A (2K tokens).
  arms_lib.check(config, extra_len=2 * config.task.num_steps, baseline=BASELINE)
  arms_lib.check_choice(config, 'planning', PLANNING)
  for name in config.run_arms:
    arm = config.arms[name]
    if arm.planning is not None and 'hicra' not in arm.estimator:
      raise runs.ConfigError(f'arms.{name}: a planning set needs a hicra stage.')
  if config.part_a.mc_chunk & (config.part_a.mc_chunk - 1):
    raise runs.ConfigError('part_a.mc_chunk must be a power of two.')


# ----------------------------------------------------------------------------- Part B


def make_arm(name, config, task, policy):
  """The jitted pieces of one Part B arm (shared by its seeds): its planning set is STEP tokens
  (an in-jit provider) or FAI's top tokens (a host provider, one extra forward)."""
  planning = config.arms[name].planning
  providers, hosts = {}, ()
  if planning == 'sep':
    providers['planning'] = providers_lib.token_planning_provider(task.vocab.step_id)
  elif planning == 'fai':
    hosts = (host_lib.fai_planning(policy, task, fraction=config.credit.fai_fraction),)
  est = arms_lib.estimator(config, name, CREDIT_CONSTANTS, arm_keys=('pooling',))
  return arms_lib.phased(
    name, policy, task, est, config.optim, config.rl, config.loss.to_dict(),
    providers=providers, hosts=hosts, metrics_fn=lm.advantage_by_class({  # mean |A| per class
      'adv_value': task.vocab.is_number,
      'adv_step': lambda r: r == task.vocab.step_id,
      'adv_eos': lambda r: r == task.vocab.eos_id,
    }),
  )  # fmt: skip


PANELS = (  # F_part_b: held-out accuracy vs iteration and wall clock, training accuracy
  ra.Panel('iteration', 'eval_exact_match', ylabel='held-out greedy exact match', marker=False),
  ra.Panel('wall', 'eval_exact_match', 'training wall-clock s', 'held-out greedy exact match'),
  ra.Panel(
    'iteration',
    'accuracy',
    ylabel='training-batch accuracy (T=1)',
    where=lambda r: r['iteration'] > 0,
    marker=False,
  ),  # fmt: skip
)


def part_b_summary(records, seeds, arms):
  """{(arm, seed): `report_arms.run_row` (start / final scores, sampled accuracy, iterations,
  seconds, mean |A| per token class), the greedy final answer and the seconds split}."""
  out = {}
  for (a, s), rs in ra.by_run(records, arms, seeds).items():
    row = ra.run_row(rs, means=('adv_value', 'adv_step', 'adv_eos'))
    row.update({k: float('nan') if v is None else v for k, v in row.items()})
    its = max(row['iterations'], 1)
    row.update(
      start_answer=rs[0].get('eval_final_answer', float('nan')),
      final_answer=rs[-1].get('eval_final_answer', float('nan')),
      # The run's seconds per iteration split as lm.host.make_iteration times them.
      split_s_per_iter=tuple(
        sum(r.get(k, 0.0) for r in rs if r['iteration'] > 0) / its
        for k in ('sample_s', 'host_s', 'train_s')
      ),
    )
    out[(a, s)] = row
  return out


def trained_side(summary, seed, min_gain):
  """Part A's rule for its trained side: (runs?, rule, numbers).

  The trained checkpoint is GRPO's final policy of `seed`; it is diagnosed only if its
  held-out greedy exact match beats the warm start by more than `min_gain`, else Part A's
  trained side is untestable (a degraded policy says nothing about trained credit).
  """
  r = summary[(BASELINE, seed)]
  gain = r['final'] - r['start']
  rule = (
    f"Part A's trained side runs on {BASELINE}'s final parameters of seed {seed} only if their "
    f'held-out greedy exact match beats the warm start by more than {100 * min_gain:g} points'
  )
  numbers = {  # named apart from the gate's numbers, which are merged with them
    'checkpoint final %': round(100 * r['final'], 1),
    'checkpoint warm start %': round(100 * r['start'], 1),
    'checkpoint gain (points)': round(100 * gain, 1),
  }
  return bool(np.isfinite(gain) and gain > min_gain), rule, numbers


def _split(p):
  return f'{p["s_per_iter"]:.3f} ({" / ".join(format(x, ".3f") for x in p["split_s_per_iter"])})'


RUN_COLUMNS = (
  ra.Column('iterations', 'iterations', cell=str),
  ra.Column('train s', 'wall', digits=0),
  ra.Column('s / iteration (sample / host / update)', lambda p: p, cell=_split),
  ra.Column(
    'held-out exact match % (start → final)',
    lambda p: p,
    cell=lambda p: f'{report.fmt(p["start"], pct=True)} → {report.fmt(p["final"], pct=True)}',
  ),  # fmt: skip
  ra.Column('Δ vs GRPO (points)', 'final', minus=BASELINE, cell=lambda d: f'{100 * d:+.1f}'),
  ra.Column('greedy final answer %', 'final_answer', pct=True),
  ra.Column('sampled accuracy %', 'sampled', pct=True),
)


def table_b_runs(summary, seeds, arms):
  return ra.run_table(summary, arms, seeds, RUN_COLUMNS)


def _adv(values):
  return '/'.join(
    format(float(np.nanmean([p[k] for p in values])), '.3f')
    for k in ('adv_value', 'adv_step', 'adv_eos')
  )


ARM_COLUMNS = (  # per arm over seeds: mean ± sd [bootstrap 95% CI] (report.fmt_ci)
  ra.Column('final held-out exact match %', 'final', pct=True),
  ra.Column('gain over warm start (points)', lambda p: p['final'] - p['start'], pct=True),
  ra.Column('Δ vs GRPO (points)', 'final', pct=True, minus=BASELINE),
  ra.Column('greedy final answer %', 'final_answer', pct=True),
  ra.Column('sampled accuracy % (last 10 it.)', 'sampled', pct=True),
  ra.Column('mean \\|A\\| value / STEP / EOS tokens', lambda p: p, fold=_adv),
)


def table_b(summary, seeds, arms, config):
  labels = {a: config.arms[a].label for a in arms}
  return ra.seed_table(summary, arms, seeds, ARM_COLUMNS, labels=labels)


def expected_vs_observed(diag, summary, seeds, arms, smoke=False):
  """The claims' rules (Part A on one checkpoint, Part B gains), behind the GRPO gate."""
  d_rows = diag['rows_d']
  gtpo, chance_h = d_rows['GTPO'], d_rows['_chance_hit1']
  claims = probe.claims(diag)  # Part A's own: FAI marks answer tokens, not separators
  gains = {
    a: [100 * (summary[(a, s)]['final'] - summary[(BASELINE, s)]['final']) for s in seeds]
    for a in arms
    if a != report.NOISE_FLOOR_ARM
  }
  g = gains.get('gtpo', [0.0])
  hit = gtpo['hit1']
  note = ''
  if hit > 2 * chance_h or all(x >= 5 for x in g):
    outcome = 'CONFIRMED'
  elif hit <= 1.5 * chance_h and not all(x >= 5 for x in g):
    outcome = 'REFUTED'
    note = 'consistent with the prediction: a negative result for entropy weighting here'
  else:
    outcome, note = 'INCONCLUSIVE', 'hit@1 between 1.5x and 2x chance, no gain'
  claims.append(
    report.Verdict(
      'GTPO: entropy marks decisive tokens',
      outcome,
      'supported if hit@1 > 2x chance or GTPO gains +5 points over GRPO in every seed; '
      'negative if hit@1 <= 1.5x chance and no such gain',
      {
        'hit@1': hit,
        'chance': chance_h,
        'GTPO - GRPO final exact match per seed (points)': g,
        'raw entropy H_t hit@1': d_rows['entropy']['hit1'],
        'raw entropy top-20% precision': d_rows['entropy']['precision'],
      },
      note,
    )
  )
  for a in ('hicra_fai', 'hicra_official', 'hicra_sep'):
    if a in gains:
      claim, key = f'HICRA ({a}): credit to planning tokens helps', f'{a} - GRPO final exact match'
      claims.append(report.gain_verdict(claim, gains[a], 5, key + ' per seed (points)', 'GRPO'))
  return report.expected_vs_observed(claims, part_b_gate(summary, seeds, arms), smoke)


def part_b_gate(summary, seeds, arms):
  """The gate (`report.arm_gate`): GRPO vs its warm start and the shuffled-reward arm."""
  return ra.summary_gate(summary, seeds, arms, BASELINE)


def trained_untestable(summary, seeds, arms, rule, numbers, smoke=False):
  """Part A's trained side when GRPO's checkpoint did not improve: UNTESTABLE by rule."""
  claim = report.Verdict(
    "Part A's claims on a trained checkpoint",
    'UNTESTABLE',
    rule,
    numbers,
    "GRPO's checkpoint did not beat the warm start; Part A ran on the warm start only",
  )
  return report.expected_vs_observed([claim], part_b_gate(summary, seeds, arms), smoke)


def run(config, workdir):
  """Warm start, Part B (every arm x seed), then Part A; writes results.md and the figures."""
  t_start = time.time()
  load_start = bench.load_average()
  task, policy = arms_lib.task_and_policy(config)
  params0, ws_info, train, test, evaluate = warmstart.start(config, task, policy, workdir)
  seeds, arms = list(config.seeds), list(config.run_arms)
  built = {a: make_arm(a, config, task, policy) for a in arms}
  budget = loop.budget(config.rl)
  checkpoint = {}  # Part A's trained checkpoint: the baseline's final parameters, first seed

  def run_one(a, s):
    recs, state, _ = loop.run_arm(built[a], params0, s, train, test, evaluate, **budget)
    if (a, s) == (BASELINE, seeds[0]):
      checkpoint['params'] = jax.device_get(state['params'])
    return recs

  t_b = time.time()
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  records = loop.run_grid(metrics_path, arms, seeds, run_one, note=ra.run_note)
  grpo_final = checkpoint['params']
  t_b = time.time() - t_b
  summary = part_b_summary(records, seeds, arms)
  trained = trained_side(summary, seeds[0], config.part_a.min_gain)
  t_a = time.time()
  checkpoints = [('warm', params0)] + ([(BASELINE, grpo_final)] if trained[0] else [])
  diagnoser, diags = probe.diagnose_all(config, task, policy, checkpoints, test, workdir)
  if not trained[0]:
    runs.note(f"Part A's trained side: UNTESTABLE ({trained[2]})")
  t_a = time.time() - t_a
  probe.plot_f7(diags['warm']['d'], task, config, os.path.join(workdir, 'f7_heatmaps.png'))
  ra.curves_figure(
    os.path.join(workdir, 'f_part_b.png'), ra.by_run(records, arms, seeds), arms, seeds, PANELS
  )
  header = loop.header(
    NAME,
    t_start,
    load_start,
    parts={
      'warm start': ws_info.get('seconds', float('nan')),
      'Part B (compiles and evaluations included)': t_b,
      'Part A': t_a,
    },
    compiles={
      **{a: arms_lib.compile_s(built[a]) for a in arms},
      'MC sampler': diagnoser.complete.compile_s,
    },
  )
  write_results(config, workdir, diags, summary, arms, ws_info, header, trained)
  gate = part_b_gate(summary, seeds, arms)
  finals = ra.arm_means(summary, arms, seeds, 'final')
  return ra.summary_line(
    NAME, ws_info['exact_match'], finals, time.time() - t_start,
    os.path.join(workdir, 'results.md'), seeds=len(seeds),
    extra=f'gate {"PASSED" if gate.passed else "FAILED"}',
  )  # fmt: skip


def write_results(config, workdir, diags, summary, arms, ws_info, header, trained):
  """results.md; `trained` is `trained_side`'s (runs?, rule, numbers) for Part A."""
  seeds = list(config.seeds)
  smoke = config.get('smoke', False)
  cr = config.credit
  titles = (('warm', 'warm start'), (BASELINE, f'GRPO after Part B (seed {seeds[0]})'))
  sections = probe.sections(diags, config, titles, trained)
  if BASELINE in diags:
    trained_text = expected_vs_observed(diags[BASELINE], summary, seeds, arms, smoke)
  else:
    trained_text = trained_untestable(summary, seeds, arms, trained[1], trained[2], smoke)
  intro = f"""{header}

Setting: K={config.task.num_steps} chains, M={config.task.modulus}, invertible ops; policy
{config.policy.depth} layers, d={config.policy.width}, {config.policy.num_heads} heads; warm
start: {warmstart.describe(config, ws_info)}.

Readings implemented (labelled; constants unverified against the papers):
- GTPO (arXiv 2508.04349 Eq. 3, 5, 6): alpha1={cr.alpha1}, alpha2={cr.alpha2} (one
  transcription says alpha1=0.9); the pooling of Eq. 6 could not be read from the paper, so
  both are implemented: **joint group pool** (`gtpo`, our default reading) and the **literal
  separate O+/O- pools** (`gtpo_separate`, under which alpha1 cancels and the outcome sign is
  lost; a unit test shows the cancellation). eps=1e-6 is added to every entropy.
- GRPO-S: beta1={cr.beta1}, beta2={cr.beta2}, joint pool.
- HICRA (arXiv 2509.03646): **paper form** `A + alpha|A|1[t∈S]`, alpha={cr.hicra_alpha},
  with S = the top-{cr.fai_fraction:.0%} tokens of each response by global-head FAI,
  recomputed on every rollout batch (one extra non-cached forward; the head split is
  recomputed on that batch) (`hicra_fai`); **official-code form** (as transcribed from the
  released code): `A *= 1+alpha` on the top-{cr.hicra_top_fraction:.0%} entropy tokens of
  responses with A > 0 and length above the group mean (`hicra_official`).
{probe.readings(config)}
- Shared loss: DAPO-style token-mean PPO-clip with clip-higher (ε_low 0.2, ε_high 0.28), no
  KL, no dynamic sampling, entropy bonus {config.loss.ent_coef}, through the learner's
  existing PPO objective (`lm.make_ppo_loss` → `losses.ppo_objective`, which takes
  `clip_eps_high`); the learner cannot select `jaxca.objectives` generically, so that module
  is not used here.
- Part A's "trained" checkpoint is the final GRPO policy of Part B (seed {seeds[0]}), not a
  separate 60-iteration GRPO run, and only if it beat the warm start (rule:
  {trained[1]}; {'it did' if trained[0] else 'it did NOT: the trained side is UNTESTABLE'}).
  Part C (`arith-route`) and the `:full` "oracle-weighted GRPO" arm were not implemented.
- Arms run: {', '.join(f'`{a}`' for a in arms)}; defined but not run here:
  {', '.join(f'`{a}`' for a in config.arms if a not in arms) or 'none'}.
"""
  part_a = f"""{chr(10).join(sections)}

![F7](f7_heatmaps.png)
"""
  part_b = f"""\
Every arm x seed from the warm start with the base RL recipe of the arithmetic reproductions
(`configs/common.ARITH_RL_RECIPE`): {ra.recipe_text(config)} The `{report.NOISE_FLOOR_ARM}` arm
is the noise floor: GRPO advantages computed from another prompt's outcomes.

Per arm, over seeds: mean ± sd [bootstrap 95% CI] (n seeds); sampled accuracy = training-batch
accuracy at T=1 over the last 10 iterations.

{table_b(summary, seeds, arms, config)}

Per run (s / iteration: training wall clock per iteration, split into sampling, host-side
work and the update; `hicra_fai`'s extra non-cached forward falls in its sampling phase):

{table_b_runs(summary, seeds, arms)}

![Part B](f_part_b.png)
"""
  expected = f"""\
The gate (every claim reads UNTESTABLE if it fails): GRPO must gain >= 8 points of held-out
greedy exact match over its warm start and end above the shuffled-reward noise floor, in every
seed.

Warm start (Part A):

{expected_vs_observed(diags['warm'], summary, seeds, arms, smoke)}

GRPO checkpoint (Part A on the trained policy; Part B rows repeated):

{trained_text}

Settings tried: this configuration only (no tuning runs).
"""
  ra.write_markdown(
    os.path.join(workdir, 'results.md'),
    'token_credit: entropy (GTPO, GRPO-S), planning tokens (HICRA), attention (FAI, WAAD)',
    [
      intro,
      ('Part A: diagnostics (no training)', part_a),
      ('Part B: training comparison', part_b),
      ('Expected vs observed', expected),
    ],
  )


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
