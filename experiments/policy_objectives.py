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
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import objectives
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import tasks
from jaxca import train as train_lib
from jaxca import warmstart
from jaxca.networks import transformer

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
  return dict(config.loss.to_dict(), **config.arms[name].loss.to_dict())


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run (before anything is written)."""
  runs.check_grid(config)
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
  for name in config.run_arms:
    try:
      arm_estimator(config, name)
    except ValueError as e:
      raise runs.ConfigError(f'arms.{name}.credit (or config.credit): {e}') from None
    rl = arm_rl(config, name)
    if config.objectives_differ and rl.num_epochs * rl.num_minibatches < 2:
      raise runs.ConfigError(
        f'arms.{name}: rl.num_epochs * rl.num_minibatches must be >= 2; got '
        f'{rl.num_epochs} x {rl.num_minibatches}: with one gradient step per batch every ratio '
        'is 1 and PPO-clip, clip-higher and CISPO give the same gradient.'
      )
    if (rl.prompts * rl.group_size) % rl.num_minibatches:
      raise runs.ConfigError(
        f'arms.{name}: rl.num_minibatches ({rl.num_minibatches}) must divide rl.prompts * '
        f'rl.group_size ({rl.prompts * rl.group_size}).'
      )
  rl = config.rl
  if rl.group_size < 2:
    raise runs.ConfigError(f'rl.group_size must be >= 2 (GRPO groups); got {rl.group_size}.')
  if rl.prompts > config.data.num_train:
    raise runs.ConfigError('rl.prompts must be <= data.num_train.')
  if rl.iterations < 1 or rl.eval_every < 1:
    raise runs.ConfigError('rl.iterations and rl.eval_every must be >= 1.')
  task = make_task(config)
  need = task.prompt_len + task.response_len
  if config.policy.max_len < need:
    raise runs.ConfigError(f'policy.max_len must be >= {need}; got {config.policy.max_len}.')


def make_task(config):
  try:
    return tasks.make(config.task.name, **{k: v for k, v in config.task.items() if k != 'name'})
  except ValueError as e:
    raise runs.ConfigError(f'config.task: {e}') from None


def build(config):
  """(task, policy): composition only."""
  task = make_task(config)
  pcfg = ml_collections.ConfigDict(config.policy.to_dict())
  return task, transformer.make_policy(pcfg, vocab_size=task.vocab.size)


def arm_rl(config, name):
  """The rl section of arm `name`: the shared `config.rl` with the arm's `rl` keys over it."""
  over = config.arms[name].get('rl', None)
  return ml_collections.ConfigDict(dict(config.rl.to_dict(), **(over.to_dict() if over else {})))


def arm_optim(config, name):
  """The RL optimizer of arm `name`: the shared `config.optim`, the arm's `optim` keys over it."""
  over = config.arms[name].get('optim', None)
  return dict(config.optim.to_dict(), **(over.to_dict() if over else {}))


def arm_estimator(config, name):
  """The estimator of arm `name`: its own `credit` section if it has one, else `config.credit`."""
  credit = config.arms[name].get('credit', None) or config.credit
  return estimators.from_config(credit)


class Arm:
  """The ahead-of-time compiled RL update of one arm (shared by its seeds)."""

  def __init__(self, name, config, task, policy):
    self.name, self.label = name, config.arms[name].label
    self.loss = arm_loss(config, name)
    rl = arm_rl(config, name)
    estimator = arm_estimator(config, name)
    self.tx = train_lib.make_optimizer(arm_optim(config, name))
    self.update = bench.Aot(
      lm.make_rl_update(
        policy,
        task,
        estimator,
        self.tx,
        group_size=rl.group_size,
        num_epochs=rl.num_epochs,
        num_minibatches=rl.num_minibatches,
        temperature=rl.temperature,
        reward='outcome',
        loss_cfg=self.loss,
      )
    )
    self.hparams = jax.tree.map(jnp.asarray, estimator.hparams)


def run_arm(config, arm, params0, seed, train, test, evaluate):
  """One learning run from the warm start; returns its records (iteration 0 = warm start)."""
  rl = config.rl
  init = lambda p, s: lm.init_from_params(p, arm.tx)  # noqa: E731
  steps = loop.ArmSteps(arm.name, init, arm.update, phased=False, hparams=arm.hparams)
  records, _, _ = loop.run_arm(
    steps,
    params0,
    seed,
    train,
    test,
    evaluate,
    **loop.budget(rl),
  )
  return records


# ----------------------------------------------------------------------------- summaries


def summarize(records, seeds, arms):
  """{(arm, seed): final / best accuracy, steps, seconds, the objective's mean metrics}."""
  out, by = {}, ra.by_run(records, arms, seeds)
  for s in seeds:
    w_min = ra.equal_budget(by, s, 'wall', exclude=())
    for a in arms:
      recs = by[(a, s)]
      its = [r for r in recs if r['iteration'] > 0]
      evals = [r['eval_exact_match'] for r in recs if 'eval_exact_match' in r]
      last = recs[-1]
      row = dict(
        warm=recs[0]['eval_exact_match'],
        final=last['eval_exact_match'],
        best=max(evals),
        steps=last['iteration'],
        wall=last['wall'],
        elapsed=last['elapsed'],
        s_per_step=last['wall'] / max(last['iteration'], 1),
        compile_s=sum(r['compile_s'] for r in recs),
        acc_equal_wall=report.value_at(recs, 'wall', w_min),
        equal_wall=w_min,
        train_accuracy=float(np.mean([r['accuracy'] for r in its[-10:]])) if its else None,
      )
      for k in OBJECTIVE_METRICS + ('entropy',):
        vals = [r[k] for r in its if k in r]
        row[k] = float(np.mean(vals)) if vals else None
      out[(a, s)] = row
  return out


def _pct(x):
  return report.fmt(x, pct=True)


def _num(x, digits=3):
  return '-' if x is None else f'{x:.{digits}g}'


RUN_COLUMNS = (
  ra.Column('warm start %', 'warm', pct=True),
  ra.Column('final %', 'final', pct=True),
  ra.Column('best %', 'best', pct=True),
  ra.Column('steps', 'steps', cell=str),
  ra.Column('train s', 'wall', digits=1),
  ra.Column('s/step', 's_per_step', digits=3),
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
  ra.Column('train s/step', 's_per_step', digits=3, fold='mean'),
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
  warm = {k: r['warm'] for k, r in summary.items()}
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
  task, policy = build(config)
  seeds, arms = list(config.seeds), list(config.run_arms)
  params0, ws_info, train, test, evaluate = warmstart.start(config, task, policy, workdir)
  built = {a: Arm(a, config, task, policy) for a in arms}
  records = loop.run_grid(
    os.path.join(workdir, 'metrics.jsonl'),
    arms,
    seeds,
    lambda a, s: run_arm(config, built[a], params0, s, train, test, evaluate),
    note=lambda recs: ra.run_note(recs, unit='steps'),
  )
  summary = summarize(records, seeds, arms)
  plot(records, seeds, arms, config, os.path.join(workdir, 'curves.png'))
  times = dict(total_s=time.time() - t_start, load_start=load_start, load_end=bench.load_average())
  write_results(config, workdir, summary, ws_info, times)
  steps = sorted({summary[(a, s)]['steps'] for a in arms for s in seeds})
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
