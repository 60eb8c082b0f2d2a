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
import sys
import time

from absl import app
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import report
from jaxca import runs
from jaxca import tasks
from jaxca import train as train_lib
from jaxca import warmstart
from jaxca.networks import transformer

NAME = 'estimator_zoo'


def arm_estimator(config, name):
  """The estimator of arm `name` (its `credit` section; the noise floor is `shuffled_reward`)."""
  return estimators.from_config(config.arms[name].credit)


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run (before anything is written)."""
  if not config.seeds:
    raise runs.ConfigError('config.seeds is empty.')
  if not config.run_arms:
    raise runs.ConfigError('config.run_arms is empty.')
  unknown = [a for a in config.run_arms if a not in config.arms]
  if unknown:
    raise runs.ConfigError(
      f'config.run_arms: {unknown} not in config.arms; defined: {sorted(config.arms)}.'
    )
  if len(set(config.run_arms)) != len(config.run_arms):
    raise runs.ConfigError(f'config.run_arms repeats an arm: {list(config.run_arms)}.')
  for name in config.run_arms:
    try:
      est = arm_estimator(config, name)
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
  rl = config.rl
  if rl.group_size < 2:
    raise runs.ConfigError(f'rl.group_size must be >= 2 (group estimators); got {rl.group_size}.')
  if (rl.prompts * rl.group_size) % rl.num_minibatches:
    raise runs.ConfigError(
      f'rl.num_minibatches ({rl.num_minibatches}) must divide rl.prompts * rl.group_size '
      f'({rl.prompts * rl.group_size}).'
    )
  if rl.prompts < 2:
    raise runs.ConfigError('rl.prompts must be >= 2 (the noise floor rolls rewards by a group).')
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


class Arm:
  """The ahead-of-time compiled RL update of one arm (shared by its seeds)."""

  def __init__(self, name, config, task, policy):
    self.name, self.label = name, config.arms[name].label
    estimator = arm_estimator(config, name)
    self.spec = estimator.name
    rl = config.rl
    self.tx = train_lib.make_optimizer(config.optim)
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
        loss_cfg=config.loss.to_dict(),
      )
    )
    self.hparams = jax.tree.map(jnp.asarray, estimator.hparams)


def run_arm(config, arm, params0, seed, train, test, evaluate):
  """One learning run from the warm start; returns its records (iteration 0 = warm start)."""
  rl = config.rl
  key = jax.random.key(seed)
  state = lm.init_from_params(params0, arm.tx)
  t_run = time.time()
  rec0 = dict(arm=arm.name, seed=seed, iteration=0, wall=0.0, elapsed=0.0, compile_s=0.0)
  rec0.update({f'eval_{k}': v for k, v in evaluate(state['params'], test).items()})
  records, wall, it = [rec0], 0.0, 0
  while it < rl.iterations and wall < rl.max_wall_s:
    it += 1
    rng = np.random.default_rng([seed, it])  # the same batches for every arm of a seed
    idx = rng.choice(len(train['prompts']), rl.prompts, replace=False)
    batch = {k: jnp.asarray(v[idx]) for k, v in train.items()}
    t0, c0 = time.time(), arm.update.compile_s
    state, m = arm.update(state, batch, jax.random.fold_in(key, it), arm.hparams)
    m = jax.device_get(jax.block_until_ready(m))
    compile_iter = arm.update.compile_s - c0
    wall += time.time() - t0 - compile_iter
    rec = dict(arm=arm.name, seed=seed, iteration=it, wall=wall, compile_s=compile_iter)
    rec.update({k: float(v) for k, v in m.items()})
    if not (np.isfinite(rec['loss']) and rec.get('params_finite', 1.0) == 1.0):
      raise FloatingPointError(
        f'{arm.name} seed {seed}: non-finite loss or parameters at iteration {it}; try a '
        'smaller optim.lr.'
      )
    if it % rl.eval_every == 0:
      rec.update({f'eval_{k}': v for k, v in evaluate(state['params'], test).items()})
    rec['elapsed'] = time.time() - t_run
    records.append(rec)
    runs.at(f'{arm.name} seed {seed} iteration {it}')
  if 'eval_exact_match' not in records[-1]:
    records[-1].update({f'eval_{k}': v for k, v in evaluate(state['params'], test).items()})
    records[-1]['elapsed'] = time.time() - t_run
  return records


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


def table(summary, seeds, arms, config):
  """One row per arm: final % with its 95% CI, AUC %, s/iteration, compile s."""
  lines = [
    '| arm | estimator | final held-out exact match % (mean ± sd [95% CI]) | learning-curve '
    'AUC % | s / iteration | compile s |',
    '|---|---|---|---|---|---|',
  ]
  for a in arms:
    rows = [summary[(a, s)] for s in seeds]
    spec = config.arms[a].credit.estimator.replace('|', '\\|')  # a table cell
    lines.append(
      f'| {a} | `{spec}` | {report.fmt_ci([r["final"] for r in rows], pct=True)} | '
      f'{report.fmt_ci([r["auc"] for r in rows], pct=True)} | '
      f'{np.mean([r["s_per_step"] for r in rows]):.3f} | {max(r["compile_s"] for r in rows):.1f} |'
    )
  return '\n'.join(lines)


def verdict(summary, seeds, arms, baseline, smoke=False):
  """Which arms beat the baseline's final accuracy in every seed, behind the gate."""
  means = {a: float(np.mean([summary[(a, s)]['final'] for s in seeds])) for a in arms}
  spread = max(
    max(summary[(a, s)]['final'] for s in seeds) - min(summary[(a, s)]['final'] for s in seeds)
    for a in arms
  )
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
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(8, 5))
  for i, a in enumerate(arms):
    curves = []
    for s in seeds:
      pts = [r for r in records if r['arm'] == a and r['seed'] == s and 'eval_exact_match' in r]
      curves.append(([r['iteration'] for r in pts], [r['eval_exact_match'] for r in pts]))
    n = min(len(x) for x, _ in curves)
    xs = curves[0][0][:n]
    ys = np.mean([y[:n] for _, y in curves], axis=0)
    ls = ':' if a == report.NOISE_FLOOR_ARM else '-'
    ax.plot(xs, ys, ls=ls, color=f'C{i % 10}', marker='o', ms=3, label=config.arms[a].label)
  ax.set_xlabel('RL step')
  ax.set_ylabel(f'held-out greedy exact match (mean of {len(seeds)} seed(s))')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  ax.set_title('estimator zoo: one warm start, PPO-clip, only the estimator differs')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ----------------------------------------------------------------------------- run


def run(config, workdir):
  """Warm start, then every arm x seed; writes metrics.jsonl, results.md and curves.png."""
  t_start, load_start = time.time(), bench.load_average()
  task, policy = build(config)
  seeds, arms = list(config.seeds), list(config.run_arms)
  train, validation, test = warmstart.make_splits(config, task)
  test = {k: jnp.asarray(v) for k, v in test.items()}
  ev = jax.jit(lambda p, b: lm.mean_metrics(lm.make_eval_fn(policy, task)(p, b)))

  def evaluate(params, batch):
    return {k: float(v) for k, v in jax.device_get(ev(params, batch)).items()}

  params0, ws_info = warmstart.warm_start(
    config, task, policy, train, validation, test, evaluate, workdir
  )
  built = {a: Arm(a, config, task, policy) for a in arms}
  records = []
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for s in seeds:
      for a in arms:
        recs = run_arm(config, built[a], params0, s, train, test, evaluate)
        for r in recs:
          f.write(json.dumps(r) + '\n')
        f.flush()
        records.extend(recs)
        last = recs[-1]
        runs.note(
          f'{a} seed {s}: {last["iteration"]} steps, {last["wall"]:.1f} s training, exact match '
          f'{100 * recs[0]["eval_exact_match"]:.1f}% -> {100 * last["eval_exact_match"]:.1f}%'
        )
  summary = summarize(records, seeds, arms, config.rl.iterations)
  plot(records, seeds, arms, config, os.path.join(workdir, 'curves.png'))
  times = dict(total_s=time.time() - t_start, load_start=load_start, load_end=bench.load_average())
  write_results(config, workdir, summary, ws_info, times)
  line = ', '.join(f'{a} {_pct(np.mean([summary[(a, s)]["final"] for s in seeds]))}%' for a in arms)
  return (
    f'estimator_zoo: warm start {100 * ws_info["exact_match"]:.1f}% -> final held-out exact '
    f'match (mean of {len(seeds)} seed(s)): {line}; {times["total_s"]:.0f} s in all; results in '
    f'{os.path.join(workdir, "results.md")}'
  )


def write_results(config, workdir, summary, ws_info, times):
  seeds, arms = list(config.seeds), list(config.run_arms)
  rl = config.rl
  command = ' '.join(['python -m experiments.estimator_zoo'] + sys.argv[1:])
  arm_lines = '\n'.join(
    f'- `{a}` ({config.arms[a].label}): credit `{json.dumps(config.arms[a].credit.to_dict())}`'
    for a in arms
  )
  text = f"""# estimator_zoo: critic-free advantage estimators from one warm start

Command: `{command}`, commit `{runs.git_commit()}`. Hardware: {os.cpu_count()}-core CPU
({jax.devices()[0].platform}); load average {times['load_start']:.1f} at the start and
{times['load_end']:.1f} at the end. Wall time {times['total_s']:.0f} s in all (warm start,
compiles, evaluations and {len(arms)} arms x {len(seeds)} seed(s)).

Setting: arithmetic chains K={config.task.num_steps}, M={config.task.modulus}, ops
{tuple(config.task.ops)} ({config.data.num_train} train, {config.data.num_validation}
validation, {config.data.num_test} held-out problems, disjoint); policy {config.policy.depth}
layers, d={config.policy.width}. One warm start shared by every run: SFT for {ws_info['steps']}
steps, stopped at validation greedy exact match >=
{report.percent_target(config.warmstart.band[0])} (held-out
{100 * ws_info['exact_match']:.1f}%). Each run: {rl.prompts} prompts x G={rl.group_size} per step,
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

## Results

{table(summary, seeds, arms, config)}

![held-out exact match vs step](curves.png)

## Reading

{verdict(summary, seeds, arms, config.baseline, config.get('smoke', False))}

Caveats: a small model on a short budget from one warm start; {len(seeds)} seed(s); every
estimator at its reference defaults. Estimators that need a critic, Monte-Carlo rollouts, a
process reward model, anchor states or token signals are compared in their own experiments.
"""
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(text)


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
