"""Policy objectives from one warm start with one estimator: PPO-clip, clip-higher, GSPO, CISPO.

Commands, arms and settings: configs/policy_objectives.py. Composition only: one supervised
warm start (`jaxca.warmstart`, cached in `<workdir>/warmstart`), then every
arm x seed of `lm.make_rl_update` from it with the same GRPO estimator, optimiser, batches
and sampling keys; an arm is its `loss` section (`jaxca.objectives.from_config` keys:
`objective`, `clip_eps`, `clip_eps_high`, `agg_mode`, ...). Each arm's update is compiled
ahead of time once (`jaxca.bench.Aot`) and shared by its seeds, so the training wall clock of
a run excludes compilation and evaluation (both reported). Not resumable: a rerun of an
unfinished workdir recomputes the arms (the warm start is reused). Where runs write, config
drift, errors and the closing line: `jaxca.runs`.
"""

import json
import os
import time

from absl import app
import jax
import ml_collections
import numpy as np

from jaxca import arms as arms_lib
from jaxca import bench
from jaxca import lm
from jaxca import loop
from jaxca import objectives
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import warmstart

NAME = 'policy_objectives'
# The objectives' own metrics (jaxca.objectives), reported when an arm produces them.
OBJECTIVE_METRICS = (
  'clip_frac',
  'clip_frac_lower',
  'approx_kl',
  'ppo_kl',
  'ratio_mean',
  'seq_ratio_mean',
)


def arm_loss(config, name) -> dict:
  """The loss section of arm `name`: the shared `config.loss` with the arm's keys over it."""
  return arms_lib.section(config, name, 'loss')


def arm_rl(config, name):
  """The rl section of arm `name`: the shared `config.rl` with the arm's `rl` keys over it."""
  return ml_collections.ConfigDict(arms_lib.section(config, name, 'rl'))


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run (before anything is written)."""
  arms_lib.check(config)
  for name in config.run_arms:
    loss = arm_loss(config, name)
    obj = loss.get('objective') or 'ppo_clip'
    try:
      objectives.check_name(obj)
    except ValueError:
      raise runs.ConfigError(
        f'arms.{name}.loss.objective must be one of {sorted(objectives.OBJECTIVES)}; got {obj!r}.'
      ) from None
    try:
      lm.loss_options(loss)  # the learner's own check of the whole loss section
    except (ValueError, TypeError) as e:
      raise runs.ConfigError(f'arms.{name}.loss: {e}') from None
    try:
      arms_lib.estimator(config, name)
    except ValueError as e:
      raise runs.ConfigError(f'arms.{name}.credit (or config.credit): {e}') from None
    rl = arm_rl(config, name)
    if config.objectives_differ and rl.num_epochs * rl.num_minibatches < 2:
      raise runs.ConfigError(
        f'arms.{name}: rl.num_epochs * rl.num_minibatches must be >= 2; got '
        f'{rl.num_epochs} x {rl.num_minibatches}: with one gradient step per batch every ratio '
        'is 1 and PPO-clip, clip-higher and CISPO give the same gradient.'
      )
    arms_lib.check_sections(config, rl, f'arms.{name}: ')


def make_arm(config, name, task, policy):
  """The ahead-of-time compiled RL update of arm `name` (shared by its seeds)."""
  return arms_lib.single_step(
    name,
    policy,
    task,
    arms_lib.estimator(config, name),
    arms_lib.section(config, name, 'optim'),
    arm_rl(config, name),
    arm_loss(config, name),
  )


# ----------------------------------------------------------------------------- summaries


def summarize(records, seeds, arms):
  """{(arm, seed): `report_arms.run_row` with the objective's mean metrics, and the accuracy at
  the seed's equal training wall clock}."""
  out, by = {}, ra.by_run(records, arms, seeds)
  for s in seeds:
    w_min = ra.equal_budget(by, s, 'wall', exclude=())
    for a in arms:
      row = ra.run_row(by[(a, s)], means=OBJECTIVE_METRICS + ('entropy',))
      row.update(acc_equal_wall=report.value_at(by[(a, s)], 'wall', w_min), equal_wall=w_min)
      out[(a, s)] = row
  return out


def _pct(x):
  return report.fmt(x, pct=True)


def _num(x, digits=3):
  return '-' if x is None else f'{x:.{digits}g}'


RUN_COLUMNS = (
  ra.Column('warm start %', 'start', pct=True),
  ra.Column('final %', 'final', pct=True),
  ra.Column('best %', 'best', pct=True),
  ra.Column('steps', 'iterations', cell=str),
  ra.Column('train s', 'wall', digits=1),
  ra.Column('s/step', 's_per_iter', digits=3),
  ra.Column('compile s', 'compile_s', digits=1),
)


def table_runs(summary, seeds, arms, config):
  rows = [summary[(a, s)] for a in arms for s in seeds]
  cols = [k for k in OBJECTIVE_METRICS if any(r[k] is not None for r in rows)]
  extra = tuple(ra.Column(f'{k} (mean)', k, cell=_num) for k in cols)
  return ra.run_table(summary, arms, seeds, RUN_COLUMNS + extra)


def _mean_and_seeds(values):
  return f'{_pct(np.mean(values))} ({", ".join(_pct(v) for v in values)})'


def _mean_if_all(values):
  return '-' if any(v is None for v in values) else _pct(float(np.mean(values)))


MEAN_COLUMNS = (
  ra.Column('final % (mean; per seed)', 'final', fold=_mean_and_seeds),
  ra.Column('best % (mean)', 'best', pct=True, fold='mean'),
  ra.Column('at equal train wall %', 'acc_equal_wall', fold=_mean_if_all),
  ra.Column('train s/step', 's_per_iter', digits=3, fold='mean'),
)


def table_means(summary, seeds, arms, config):
  labels = {a: config.arms[a].label for a in arms}
  return ra.seed_table(summary, arms, seeds, MEAN_COLUMNS, labels=labels, label_header='objective')


def _reading(summary, seeds, arms):
  """One honest sentence: are the arms' differences larger than the seed-to-seed spread?"""
  means = {a: float(np.mean([summary[(a, s)]['final'] for s in seeds])) for a in arms}
  best, worst = max(means, key=means.get), min(means, key=means.get)
  gap = means[best] - means[worst]
  if gap == 0:
    return f'Every arm ends at {_pct(means[best])}%: no difference at all at this scale.'
  if len(seeds) < 2:
    return (
      f'Highest final accuracy: {best} ({_pct(means[best])}%), lowest {worst} '
      f'({_pct(means[worst])}%); one seed only, so no claim about differences.'
    )
  spread = ra.seed_spread(summary, arms, seeds)
  head = (
    f'Mean final accuracy ranges from {_pct(means[worst])}% ({worst}) to {_pct(means[best])}% '
    f'({best}), a gap of {100 * gap:.1f} points; the largest seed-to-seed difference within an '
    f'arm is {100 * spread:.1f} points.'
  )
  if gap <= spread:
    return head + (
      f' At this scale ({len(seeds)} seeds) the arms are indistinguishable: the differences '
      'between objectives are within seed noise.'
    )
  return head + (
    f' The gap exceeds the seed spread, but with {len(seeds)} seeds this is suggestive only, '
    'not significant.'
  )


MIN_SEEDS = 4  # seeds needed before a gap larger than the seed spread counts as a difference


def verdict(summary, seeds, all_arms, smoke=False, baseline='ppo_clip'):
  """The reading, then the claim judged by rule behind the baseline gate (`jaxca.report`).

  The claim compares the objective arms; the noise-floor arm (`report.NOISE_FLOOR_ARM`) only
  enters the gate.
  """
  arms = [a for a in all_arms if a != report.NOISE_FLOOR_ARM]
  means = {a: float(np.mean([summary[(a, s)]['final'] for s in seeds])) for a in arms}
  best, worst = max(means, key=means.get), min(means, key=means.get)
  gap, spread = means[best] - means[worst], ra.seed_spread(summary, arms, seeds)
  beats = all(summary[(best, s)]['final'] > summary[(worst, s)]['final'] for s in seeds)
  if len(seeds) >= 2 and gap <= spread:
    outcome, note = 'REFUTED', 'indistinguishable at this scale'
  elif len(seeds) >= MIN_SEEDS and beats:
    outcome, note = 'CONFIRMED', ''
  else:
    outcome, note = 'INCONCLUSIVE', f'suggestive only with {len(seeds)} seed(s)'
  claim = report.Verdict(
    'The objectives differ in final accuracy',
    outcome,
    'with >= 2 seeds, refuted if the gap between the best and worst mean final accuracy is '
    'within the largest within-arm seed range; confirmed if it exceeds it and the best arm '
    f'beats the worst in every seed with >= {MIN_SEEDS} seeds; else inconclusive',
    {
      'best': f'{best} {_pct(means[best])}%',
      'worst': f'{worst} {_pct(means[worst])}%',
      'gap (points)': 100 * gap,
      'seed spread (points)': 100 * spread,
      'seeds': len(seeds),
    },
    note,
  )
  warm = {k: r['start'] for k, r in summary.items()}
  final = {k: r['final'] for k, r in summary.items()}
  gate = report.arm_gate(final, warm, seeds, all_arms, baseline)
  return _reading(summary, seeds, arms) + '\n\n' + report.expected_vs_observed([claim], gate, smoke)


PANELS = (
  ra.Panel('iteration', 'eval_exact_match', 'RL step', 'held-out greedy exact match'),
  ra.Panel(
    'wall',
    'eval_exact_match',
    'training wall clock, s (compile and eval excluded)',
    'held-out greedy exact match',
  ),  # fmt: skip
  ra.Panel(
    'iteration',
    'clip_frac',
    'RL step',
    'clip fraction (5-step mean)',
    where=lambda r: r['iteration'] > 0,
    smooth=5,
    yscale='symlog',
    marker=False,
  ),  # fmt: skip
)


def plot(records, seeds, arms, config, path):
  title = f'policy objectives with GRPO advantages (solid: seed {seeds[0]}' + (
    f', dashed: seed {seeds[1]}' if len(seeds) > 1 else ''
  )
  labels = {a: config.arms[a].label for a in arms}
  runs_ = ra.by_run(records, arms, seeds)
  ra.curves_figure(path, runs_, arms, seeds, PANELS, labels=labels, title=title + ')')


# ----------------------------------------------------------------------------- run


def run(config, workdir):
  """Warm start, then every arm x seed; writes metrics.jsonl, results.md and curves.png."""
  t_start, load_start = time.time(), bench.load_average()
  task, policy = arms_lib.task_and_policy(config)
  seeds, arms = list(config.seeds), list(config.run_arms)
  params0, ws_info, train, test, evaluate = warmstart.start(config, task, policy, workdir)
  built = {a: make_arm(config, a, task, policy) for a in arms}
  budget = loop.budget(config.rl)
  records = loop.run_grid(
    os.path.join(workdir, 'metrics.jsonl'),
    arms,
    seeds,
    lambda a, s: loop.run_arm(built[a], params0, s, train, test, evaluate, **budget)[0],
    note=lambda recs: ra.run_note(recs, unit='steps'),
  )
  summary = summarize(records, seeds, arms)
  plot(records, seeds, arms, config, os.path.join(workdir, 'curves.png'))
  times = dict(total_s=time.time() - t_start, load_start=load_start, load_end=bench.load_average())
  write_results(config, workdir, summary, ws_info, times)
  steps = sorted({summary[(a, s)]['iterations'] for a in arms for s in seeds})
  steps_txt = str(steps[0]) if len(steps) == 1 else f'{steps[0]}-{steps[-1]}'
  finals = ra.arm_means(summary, arms, seeds, 'final')
  return ra.summary_line(
    NAME, ws_info['exact_match'], finals, times['total_s'], os.path.join(workdir, 'results.md'),
    seeds=len(seeds), extra=f'{steps_txt} steps',
  )  # fmt: skip


def write_results(config, workdir, summary, ws_info, times):
  seeds, arms = list(config.seeds), list(config.run_arms)
  rl = config.rl
  header = ra.run_header(
    ra.command_line(f'experiments.{NAME}'),
    runs.git_commit(),
    platform=jax.devices()[0].platform,
    load_start=times['load_start'],
    load_end=times['load_end'],
    total_s=times['total_s'],
    note=f'The wall time covers the warm start, compiles, evaluations and {len(arms)} arms x '
    f'{len(seeds)} seed(s); the per-step columns do not depend on load, runs are reproducible.',
  )
  arm_lines = '\n'.join(
    f'- `{a}` ({config.arms[a].label}): loss `{json.dumps(arm_loss(config, a))}`'
    + (f', rl `{json.dumps(config.arms[a].rl.to_dict())}`' if config.arms[a].get('rl') else '')
    + (f', estimator `{config.arms[a].credit.estimator}`' if config.arms[a].get('credit') else '')
    for a in arms
  )
  intro = f"""{header}

Setting: arithmetic chains K={config.task.num_steps}, M={config.task.modulus}, ops
{tuple(config.task.ops)}, train/validation/test problems generated on the host
(`jaxca.warmstart.make_splits`, disjoint by problem: {config.data.num_train} train,
{config.data.num_validation} validation, {config.data.num_test} held-out); policy
{config.policy.depth} layers, d={config.policy.width}, {config.policy.num_heads} heads. One warm
start shared by every run: {warmstart.describe(config, ws_info)}. Each run:
estimator `{config.credit.estimator}` (the same for every arm), {rl.prompts} prompts x
G={rl.group_size} per step at temperature {rl.temperature}, outcome reward, {rl.num_epochs}
epoch(s) x {rl.num_minibatches} minibatches per batch (so {rl.num_epochs * rl.num_minibatches}
gradient steps, {rl.num_epochs * rl.num_minibatches - 1} of them off-policy: with one step
every ratio is 1 and PPO-clip, clip-higher and CISPO coincide), Adam {config.optim.lr}
with grad-norm clip 1.0, fresh optimiser state, no KL, entropy bonus {config.loss.ent_coef};
{rl.iterations} steps or {rl.max_wall_s:.0f} s of training wall clock, whichever first;
held-out greedy exact match on {config.data.num_test} prompts every {rl.eval_every} steps.
Seeds {seeds}: a seed fixes the batches and sampling keys, identical across arms.
Arms (the loss differs; an arm's own `rl` keys and estimator, where listed, override the
shared ones above):

{arm_lines}

Train s: training wall clock of a run (sampling + update), ahead-of-time compilation and
evaluation excluded; compile s: the arm's one compilation, counted in its first seed.
The objective's metrics are means over the run's steps and minibatches (`jaxca.objectives`:
clip_frac = share of tokens on the clipped branch, for CISPO the share whose IS weight was
clipped; approx_kl / ppo_kl = the learner's / the objective's KL(old || new)
estimate; seq_ratio_mean: GSPO's sequence ratio).
"""
  runs_text = table_runs(summary, seeds, arms, config)
  per_text = f""""At equal train wall": accuracy of the last evaluation within the shortest
training wall clock of the arms of the same seed, averaged over seeds.

{table_means(summary, seeds, arms, config)}

![accuracy vs step and wall clock](curves.png)
"""
  smoke, baseline = config.get('smoke', False), config.get('baseline', 'ppo_clip')
  reading_text = f"""{verdict(summary, seeds, arms, smoke, baseline)}

Caveats: a small model on a short budget from one warm start; {len(seeds)} seed(s); the
objectives' hyper-parameters are their papers' / reference implementations' defaults, not
tuned for this task. CISPO's loss value is not comparable with the others' (it is -w A log pi);
only its gradient is meaningful.
"""
  ra.write_markdown(
    os.path.join(workdir, 'results.md'),
    'policy_objectives: PPO-clip, clip-higher, GSPO, CISPO from one warm start (GRPO)',
    [
      intro,
      ('Runs', runs_text),
      ('Per arm (mean over seeds)', per_text),
      ('Reading', reading_text),
    ],
  )


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
