"""The estimator zoo: jaxca's critic-free advantage estimators from one warm start.

Commands, arms and settings: configs/estimator_zoo.py. Composition only: one supervised warm
start (`jaxca.warmstart`, cached in `<workdir>/warmstart`), then every arm x seed of
`lm.make_rl_update` from it with the same objective, optimiser, batches and sampling keys; an
arm is its `credit` section (`jaxca.estimators.from_config`). The noise-floor arm
`shuffled_reward` is the registry's noise-floor stage. Each arm's update is compiled ahead of
time once (`jaxca.bench.Aot`) and shared by its seeds, so a run's training wall clock excludes
compilation and evaluation (both reported). Results: one table (final held-out exact match
with a 95% bootstrap CI over seeds, the learning curve's AUC, seconds per iteration, compile
seconds), the gate (`jaxca.report.arm_gate`: the baseline must beat its warm start and the
noise floor in every seed), and curves.png. Not resumable; where runs write, config drift,
errors and the closing line: `jaxca.runs`.
"""

import json
import os
import time

from absl import app
import jax
import numpy as np

from jaxca import arms as arms_lib
from jaxca import bench
from jaxca import lm
from jaxca import loop
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import warmstart

NAME = 'estimator_zoo'


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run (before anything is written)."""
  arms_lib.check(config)
  for name in config.run_arms:
    try:
      est = arms_lib.estimator(config, name)  # its `credit` section
    except ValueError as e:
      raise runs.ConfigError(f'arms.{name}.credit: {e}') from None
    needs = sorted(set(est.requires) - {'rewards', 'mask', 'group_ids'})
    if needs:
      raise runs.ConfigError(
        f'arms.{name}.credit: the zoo gives estimators rewards, mask and group_ids only; '
        f'{est.name!r} also requires {needs}.'
      )
  if config.baseline not in config.arms:
    raise runs.ConfigError(f'config.baseline {config.baseline!r} not in config.arms.')
  try:
    lm.loss_options(config.loss.to_dict())
  except (ValueError, TypeError) as e:
    raise runs.ConfigError(f'config.loss: {e}') from None
  if config.rl.prompts < 2:
    raise runs.ConfigError('rl.prompts must be >= 2 (the noise floor rolls rewards by a group).')


def make_arm(config, name, task, policy):
  """The ahead-of-time compiled RL update of arm `name` (shared by its seeds)."""
  est = arms_lib.estimator(config, name)
  return arms_lib.single_step(
    name, policy, task, est, config.optim, config.rl, config.loss.to_dict()
  )


# ----------------------------------------------------------------------------- summaries


def summarize(records, seeds, arms, iterations):
  """{(arm, seed): warm / final accuracy, curve AUC, steps, seconds per step, compile seconds}."""
  out = {}
  for s in seeds:
    for a in arms:
      recs = [r for r in records if r['arm'] == a and r['seed'] == s]
      pts = [(r['iteration'], r['eval_exact_match']) for r in recs if 'eval_exact_match' in r]
      last = recs[-1]
      out[(a, s)] = dict(
        warm=recs[0]['eval_exact_match'],
        final=last['eval_exact_match'],
        auc=report.curve_auc([x for x, _ in pts], [y for _, y in pts], iterations),
        steps=last['iteration'],
        wall=last['wall'],
        s_per_step=last['wall'] / max(last['iteration'], 1),
        compile_s=sum(r['compile_s'] for r in recs),
      )
  return out


def _pct(x):
  return report.fmt(x, pct=True)


COLUMNS = (
  ra.Column('final held-out exact match % (mean ± sd [95% CI])', 'final', pct=True),
  ra.Column('learning-curve AUC %', 'auc', pct=True),
  ra.Column('s / iteration', 's_per_step', digits=3, fold='mean'),
  ra.Column('compile s', 'compile_s', digits=1, fold='max'),
)


def table(summary, seeds, arms, config):
  """One row per arm: final % with its 95% CI, AUC %, s/iteration, compile s."""
  cell = lambda spec: '`' + spec.replace('|', '\\|') + '`'  # noqa: E731 (a table cell)
  specs = {a: cell(config.arms[a].credit.estimator) for a in arms}
  return ra.seed_table(summary, arms, seeds, COLUMNS, labels=specs, label_header='estimator')


def verdict(summary, seeds, arms, baseline, smoke=False):
  """Which arms beat the baseline's final accuracy in every seed, behind the gate."""
  means = {a: float(np.mean([summary[(a, s)]['final'] for s in seeds])) for a in arms}
  spread = ra.seed_spread(summary, arms, seeds)
  best = max(means, key=means.get)
  gap = means[best] - means[baseline]
  beats = all(summary[(best, s)]['final'] > summary[(baseline, s)]['final'] for s in seeds)
  if best == baseline or (len(seeds) >= 2 and gap <= spread):
    outcome, note = 'REFUTED', 'no arm ends above the baseline by more than the seed spread'
  elif len(seeds) >= 3 and beats:
    outcome, note = 'CONFIRMED', ''
  else:
    outcome, note = 'INCONCLUSIVE', f'suggestive only with {len(seeds)} seed(s)'
  claim = report.Verdict(
    f'Some estimator beats {baseline} in final accuracy',
    outcome,
    f'refuted if the best arm is {baseline} or (>= 2 seeds) its gap over {baseline} is within the '
    'largest within-arm seed range; confirmed if it exceeds it and the best arm beats the '
    f'baseline in every seed with >= 3 seeds; else inconclusive',
    {
      'best': f'{best} {_pct(means[best])}%',
      baseline: f'{_pct(means[baseline])}%',
      'gap (points)': 100 * gap,
      'seed spread (points)': 100 * spread,
      'seeds': len(seeds),
    },
    note,
  )
  warm = {k: r['warm'] for k, r in summary.items()}
  final = {k: r['final'] for k, r in summary.items()}
  gate = report.arm_gate(final, warm, seeds, arms, baseline)
  return report.expected_vs_observed([claim], gate, smoke)


def plot(records, seeds, arms, config, path):
  panel = ra.Panel(
    'iteration', 'eval_exact_match', 'RL step',
    f'held-out greedy exact match (mean of {len(seeds)} seed(s))',
  )  # fmt: skip
  ra.curves_figure(
    path, ra.by_run(records, arms, seeds), arms, seeds, [panel],
    labels={a: config.arms[a].label for a in arms}, mean_over_seeds=True,
    dotted=(report.NOISE_FLOOR_ARM,),
    title='estimator zoo: one warm start, PPO-clip, only the estimator differs',
  )  # fmt: skip


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
  summary = summarize(records, seeds, arms, config.rl.iterations)
  plot(records, seeds, arms, config, os.path.join(workdir, 'curves.png'))
  times = dict(total_s=time.time() - t_start, load_start=load_start, load_end=bench.load_average())
  write_results(config, workdir, summary, ws_info, times)
  finals = ra.arm_means(summary, arms, seeds, 'final')
  return ra.summary_line(
    NAME, ws_info['exact_match'], finals, times['total_s'], os.path.join(workdir, 'results.md'),
    seeds=len(seeds),
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
    f'{len(seeds)} seed(s).',
  )
  arm_lines = '\n'.join(
    f'- `{a}` ({config.arms[a].label}): credit `{json.dumps(config.arms[a].credit.to_dict())}`'
    for a in arms
  )
  intro = f"""{header}

Setting: arithmetic chains K={config.task.num_steps}, M={config.task.modulus}, ops
{tuple(config.task.ops)} ({config.data.num_train} train, {config.data.num_validation}
validation, {config.data.num_test} held-out problems, disjoint); policy {config.policy.depth}
layers, d={config.policy.width}. One warm start shared by every run:
{warmstart.describe(config, ws_info)}. Each run: {rl.prompts} prompts x G={rl.group_size} per step,
outcome reward, loss `{json.dumps(config.loss.to_dict())}`, {rl.num_epochs} epoch(s) x
{rl.num_minibatches} minibatches, Adam {config.optim.lr}; {rl.iterations} steps or
{rl.max_wall_s:.0f} s of training wall clock;
held-out greedy exact match every {rl.eval_every} steps. Seeds {seeds}: a
seed fixes the batches and sampling keys, identical across arms. Arms (only the estimator
differs):

{arm_lines}

Final: held-out exact match at the end of the run, mean ± sd over seeds with a percentile
bootstrap 95% CI (`jaxca.report.seed_stats`). AUC: the mean of the held-out learning curve
over the {rl.iterations} steps (`jaxca.report.curve_auc`). s / iteration: training wall clock
per step (sampling + update; compile and evaluation excluded). Compile s: the arm's one
ahead-of-time compilation.
"""
  results_text = f"""{table(summary, seeds, arms, config)}

![held-out exact match vs step](curves.png)
"""
  reading_text = f"""{verdict(summary, seeds, arms, config.baseline, config.get('smoke', False))}

Caveats: a small model on a short budget from one warm start; {len(seeds)} seed(s); every
estimator at its reference defaults. Estimators that need a critic, Monte-Carlo rollouts, a
process reward model, anchor states or token signals are compared in their own experiments.
"""
  ra.write_markdown(
    os.path.join(workdir, 'results.md'),
    'estimator_zoo: critic-free advantage estimators from one warm start',
    [intro, ('Results', results_text), ('Reading', reading_text)],
  )


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
