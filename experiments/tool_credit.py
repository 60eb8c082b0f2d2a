"""Turn-level credit for a tool-using agent: MatchTIR's matched turn rewards vs outcome-only GRPO.

Commands, arms and settings: configs/tool_credit.py. Composition only: the ToolArith task
(`jaxca.tasks.tool_arith`, a `TokenEnv`) in the jitted multi-turn rollout
(`jaxca.lm.multiturn`) through the one LM learner (`lm.make_rl_update`); an arm is its
estimator (`grpo`, `matchtir`, `turn_gae | whiten`, `shuffled_reward`) and its `turn_rewards`
provider (the environment's per-turn rewards, plus the matched tool-call rewards of
`credit.turns` with the hard or soft assignment). Every arm x seed runs from a random init
(`jaxca.loop.run_arm`, the same batches and keys for every arm of a seed); each arm's update is
compiled ahead of time once and shared by its seeds. The claims are judged by rule behind the
baseline gate (`jaxca.report`). Not resumable.

Difference from the official MatchTIR code: its trajectory score is the sum of the turn-level
process rewards (the answer's F1 on the last turn plus the matched call rewards); here it is the
environment's return (outcome minus call costs), and the matched rewards enter the turn level
only.
"""

import json
import os
import time

from absl import app
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca.lm import multiturn
from jaxca.networks import transformer
from jaxca.tasks import tool_arith

NAME = 'tool_credit'
ASSIGNMENTS = (None, 'km', 'greedy', 'ot')
CREDIT_KEYS = ('gamma', 'lambda_', 'eps')  # config.credit keys that are estimator options
MIN_SEEDS = 4


def make_env(config):
  try:
    return tool_arith.make(**config.env.to_dict())
  except (ValueError, TypeError) as e:
    raise runs.ConfigError(f'config.env: {e}') from None


def arm_estimator(config, name):
  """The estimator of arm `name`: its spec with the shared credit options (its own over them)."""
  arm = config.arms[name]
  opts = {k: config.credit[k] for k in CREDIT_KEYS}
  over = arm.get('credit', None)
  opts.update(over.to_dict() if over else {})
  return estimators.from_config(dict(opts, estimator=arm.estimator))


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run (before anything is written)."""
  runs.check_grid(config)
  rl = config.rl
  if rl.group_size < 2:
    raise runs.ConfigError(f'rl.group_size must be >= 2 (GRPO groups); got {rl.group_size}.')
  if rl.iterations < 1 or rl.eval_every < 1 or rl.prompts < 2:
    raise runs.ConfigError('rl.iterations and rl.eval_every must be >= 1, rl.prompts >= 2.')
  if (rl.prompts * rl.group_size) % rl.num_minibatches:
    raise runs.ConfigError(
      f'rl.num_minibatches ({rl.num_minibatches}) must divide rl.prompts * rl.group_size.'
    )
  if rl.prompts > config.data.num_train:
    raise runs.ConfigError('rl.prompts must be <= data.num_train.')
  env = make_env(config)
  try:
    tool_arith.make_splits(env, config.data.num_train, config.data.num_test)
  except ValueError as e:
    raise runs.ConfigError(f'config.data: {e}') from None
  need = env.prompt_len + env.obs_len + env.horizon * (env.obs_len + 1)
  if config.policy.max_len < need:
    raise runs.ConfigError(f'policy.max_len must be >= {need}; got {config.policy.max_len}.')
  try:
    lm.loss_options(config.loss)
  except (ValueError, TypeError) as e:
    raise runs.ConfigError(f'config.loss: {e}') from None
  for name in config.run_arms:
    arm = config.arms[name]
    if arm.get('assignment', None) not in ASSIGNMENTS:
      raise runs.ConfigError(
        f'arms.{name}.assignment must be one of {ASSIGNMENTS}; got {arm.assignment!r}.'
      )
    try:
      arm_estimator(config, name)
    except ValueError as e:
      raise runs.ConfigError(f'arms.{name}.estimator: {e}') from None


class Arm:
  """One arm's policy, ahead-of-time compiled update and jitted evaluation."""

  def __init__(self, name, config, env):
    arm = config.arms[name]
    self.name, self.label = name, arm.label
    value_head = bool(arm.get('value_head', False))
    pcfg = ml_collections.ConfigDict(dict(config.policy.to_dict(), value_head=value_head))
    self.policy = policy = transformer.make_policy(pcfg, vocab_size=env.vocab_size)
    est = arm_estimator(config, name)
    self.tx = optax.chain(
      optax.clip_by_global_norm(config.optim.max_grad_norm), optax.adam(config.optim.lr)
    )
    loss = dict(config.loss.to_dict(), vf_coef=config.loss.vf_coef if value_head else 0.0)
    providers = {}
    if arm.get('assignment', None):
      c = config.credit
      providers['turn_rewards'] = tool_arith.turn_reward_provider(
        env, arm.assignment, c.unmatched_penalty, c.match_weight
      )
    rl, g = config.rl, config.rl.group_size

    def metrics_fn(ctx, traj, targets):
      calls, exact, prec = tool_arith.call_metrics(env, ctx.batch, ctx.extras.actions,
                                                   ctx.extras.active)  # fmt: skip
      return dict(calls=jnp.mean(calls), precision=jnp.mean(prec), exact_calls=jnp.mean(exact))

    self.update = bench.Aot(
      lm.make_rl_update(
        policy, env, est, self.tx, group_size=g, num_epochs=rl.num_epochs,
        num_minibatches=rl.num_minibatches, temperature=rl.temperature, loss_cfg=loss,
        providers=providers, metrics_fn=metrics_fn,
        collect=multiturn.make_collect(policy, env, group_size=g, temperature=rl.temperature),
        score_fn=multiturn.make_score_fn(policy, env, rl.temperature),
      )
    )  # fmt: skip
    self.hparams = jax.tree.map(jnp.asarray, est.hparams)

    @jax.jit
    def evaluate(params, tasks):
      s = multiturn.rollout(policy, params, jax.random.key(0), env, tasks, group_size=1,
                            greedy=True)  # fmt: skip
      calls, exact, prec = tool_arith.call_metrics(env, tasks, s.actions, s.active)
      k = env.num_steps
      return dict(
        accuracy=jnp.mean(jnp.any(s.rewards > 0.5, -1)),
        precision=jnp.mean(prec),  # 1 for a problem without calls, as the official metric
        recall=jnp.mean(exact / k),
        f1=jnp.mean(2.0 * exact / (calls + k)),  # the official `solve_f1`
        calls=jnp.mean(calls),
      )

    self.evaluate = lambda params, test: {k: float(v) for k, v in evaluate(params, test).items()}

  def init(self, params0, seed):
    del params0  # from a random init
    return lm.init_from_params(self.policy.init(jax.random.key(seed)), self.tx)


def run_arm(config, arm, seed, train, test):
  steps = loop.ArmSteps(arm.name, arm.init, arm.update, phased=False, hparams=arm.hparams)
  records, _, _ = loop.run_arm(
    steps, None, seed, train, test, arm.evaluate, primary='accuracy', **loop.budget(config.rl)
  )
  return records


# ----------------------------------------------------------------------------- summaries


def summarize(records, seeds, arms):
  """{(arm, seed): start / final accuracy and precision, calls, steps, seconds}."""
  out, by = {}, ra.by_run(records, arms, seeds)
  for (a, s), recs in by.items():
    first, last = recs[0], recs[-1]
    its = [r for r in recs if r['iteration'] > 0]
    out[(a, s)] = dict(
      warm=first['eval_accuracy'],
      final=last['eval_accuracy'],
      best=max(r['eval_accuracy'] for r in recs if 'eval_accuracy' in r),
      precision=last['eval_precision'],
      recall=last['eval_recall'],
      f1=last['eval_f1'],
      calls=last['eval_calls'],
      train_precision=float(np.mean([r['precision'] for r in its[-10:]])) if its else None,
      steps=last['iteration'],
      wall=last['wall'],
      s_per_step=last['wall'] / max(last['iteration'], 1),
      compile_s=sum(r['compile_s'] for r in recs),
    )
  return out


def _pct(x):
  return report.fmt(x, pct=True)


def _claim(summary, seeds, a, b, key, text):
  """`a` beats `b` on `key`: refuted within the seed spread, confirmed with >= 4 seeds won."""
  va = [summary[(a, s)][key] for s in seeds]
  vb = [summary[(b, s)][key] for s in seeds]
  gap = float(np.mean(va) - np.mean(vb))
  spread = ra.seed_spread(summary, [a, b], seeds, key)
  if len(seeds) >= 2 and gap <= spread:
    outcome, note = 'REFUTED', 'not larger than the seed spread' if gap > 0 else 'wrong sign'
  elif len(seeds) >= MIN_SEEDS and all(x > y for x, y in zip(va, vb)):
    outcome, note = 'CONFIRMED', ''
  else:
    outcome, note = 'INCONCLUSIVE', f'suggestive only with {len(seeds)} seed(s)'
  rule = (
    f'with >= 2 seeds, refuted if mean({a}) - mean({b}) is within the largest within-arm seed '
    f'range of the two; confirmed if it exceeds it and {a} beats {b} in every seed with '
    f'>= {MIN_SEEDS} seeds; else inconclusive'
  )
  nums = {f'{a} %': [round(100 * v, 1) for v in va], f'{b} %': [round(100 * v, 1) for v in vb]}
  nums.update({'gap (points)': 100 * gap, 'seed spread (points)': 100 * spread})
  return report.Verdict(text, outcome, rule, nums, note)


CLAIMS = (
  ('matchtir_km', 'grpo', 'final', 'Matched turn credit (KM) beats outcome-only GRPO on accuracy'),
  ('matchtir_km', 'grpo', 'precision', 'Matched turn credit (KM) beats GRPO on call precision'),
  ('matchtir_km', 'grpo', 'f1', 'Matched turn credit (KM) beats GRPO on call F1 (official score)'),
  ('matchtir_km', 'matchtir_ot', 'final', 'Hard (KM) matching beats soft (OT) on accuracy'),
)


def verdict(summary, seeds, arms, smoke=False, baseline='grpo'):
  """The gate, then each claim whose arms ran, judged by rule (`report.expected_vs_observed`)."""
  claims = [_claim(summary, seeds, a, b, k, t) for a, b, k, t in CLAIMS if a in arms and b in arms]
  warm = {k: r['warm'] for k, r in summary.items()}
  final = {k: r['final'] for k, r in summary.items()}
  gate = report.arm_gate(final, warm, seeds, arms, baseline)
  return report.expected_vs_observed(claims, gate, smoke)


PANELS = (
  ra.Panel('iteration', 'eval_accuracy', 'RL step', 'held-out greedy accuracy'),
  ra.Panel('iteration', 'eval_precision', 'RL step', 'held-out tool-call precision'),
  ra.Panel('iteration', 'eval_calls', 'RL step', 'tool calls per problem'),
)

RUN_COLUMNS = (
  ra.Column('start acc %', 'warm', pct=True),
  ra.Column('final acc %', 'final', pct=True),
  ra.Column('best acc %', 'best', pct=True),
  ra.Column('precision %', 'precision', pct=True),
  ra.Column('recall %', 'recall', pct=True),
  ra.Column('calls', 'calls', digits=2),
  ra.Column('steps', 'steps', cell=str),
  ra.Column('train s', 'wall', digits=1),
  ra.Column('compile s', 'compile_s', digits=1),
)

MEAN_COLUMNS = (
  ra.Column('final acc %', 'final', pct=True),
  ra.Column('precision %', 'precision', pct=True),
  ra.Column('call F1 %', 'f1', pct=True),
  ra.Column('calls', 'calls', digits=2, fold='mean'),
  ra.Column('train s/step', 's_per_step', digits=3, fold='mean'),
)


# ----------------------------------------------------------------------------- run


def run(config, workdir):
  """Every arm x seed from a random init; writes metrics.jsonl, results.md and curves.png."""
  t_start, load_start = time.time(), bench.load_average()
  env = make_env(config)
  seeds, arms = list(config.seeds), list(config.run_arms)
  d = config.data
  train, test = tool_arith.make_splits(env, d.num_train, d.num_test, d.seed)
  test = jax.tree.map(jnp.asarray, test)
  built = {a: Arm(a, config, env) for a in arms}
  records = loop.run_grid(
    os.path.join(workdir, 'metrics.jsonl'),
    arms,
    seeds,
    lambda a, s: run_arm(config, built[a], s, train, test),
    note=lambda recs: ra.run_note(recs, unit='steps', key='eval_accuracy'),
  )
  summary = summarize(records, seeds, arms)
  labels = {a: config.arms[a].label for a in arms}
  ra.curves_figure(
    os.path.join(workdir, 'curves.png'), ra.by_run(records, arms, seeds), arms, seeds, PANELS,
    labels=labels, title='ToolArith: turn-level credit (solid: first seed)',
  )  # fmt: skip
  times = dict(total_s=time.time() - t_start, load_start=load_start, load_end=bench.load_average())
  write_results(config, workdir, summary, times)
  finals = ra.arm_means(summary, arms, seeds, 'final')
  line = ', '.join(f'{a} {_pct(v)}%' for a, v in finals.items())
  return (
    f'{NAME}: final held-out accuracy (mean of {len(seeds)} seed(s)): {line}; '
    f'{times["total_s"]:.0f} s; results in {os.path.join(workdir, "results.md")}'
  )


def write_results(config, workdir, summary, times):
  seeds, arms = list(config.seeds), list(config.run_arms)
  rl, e = config.rl, config.env
  header = ra.run_header(
    ra.command_line(f'experiments.{NAME}'), runs.git_commit(),
    platform=jax.devices()[0].platform, load_start=times['load_start'],
    load_end=times['load_end'], total_s=times['total_s'],
  )  # fmt: skip
  arm_lines = '\n'.join(
    f'- `{a}` ({config.arms[a].label}): estimator `{config.arms[a].estimator}`'
    + (f', matched turn rewards `{config.arms[a].assignment}`' if config.arms[a].assignment else '')
    + (
      f', credit `{json.dumps(config.arms[a].credit.to_dict())}`'
      if 'credit' in config.arms[a]
      else ''
    )
    for a in arms
  )
  intro = f"""{header}

Setting: ToolArith (`jaxca.tasks.tool_arith`), K={e.num_steps} operations mod {e.modulus}
({', '.join(e.ops)}), at most {e.horizon} turns, call cost {e.call_cost}, tool failure rate
{e.error_rate}; {config.data.num_train} training and {config.data.num_test} held-out problems
(disjoint). Policy {config.policy.depth} layers, d={config.policy.width}, random init, no SFT.
Each run: {rl.prompts} problems x G={rl.group_size} per step at temperature {rl.temperature},
{rl.num_epochs} epoch(s) x {rl.num_minibatches} minibatches, Adam {config.optim.lr}, no KL, no
entropy bonus, {rl.iterations} steps; every {rl.eval_every} steps, on the held-out problems
(greedy): accuracy, tool-call precision (calls matched exactly by the optimal assignment /
calls; 1 for a problem without calls, as the official metric, so a policy that stops calling
scores 1), recall (exact calls / K), call F1 (2 exact / (calls + K), the official `solve_f1`)
and calls per problem. Credit options: `{json.dumps(config.credit.to_dict())}`. Seeds {seeds}:
a seed fixes the init, batches and sampling keys, identical across arms. Arms:

{arm_lines}
"""
  labels = {a: config.arms[a].label for a in arms}
  means = ra.seed_table(summary, arms, seeds, MEAN_COLUMNS, labels=labels)
  reading = f"""{verdict(summary, seeds, arms, config.get('smoke', False), config.baseline)}

Caveats: a small model on a short budget from a random init; {len(seeds)} seed(s); one-token
calls with one argument, so the similarity takes three values (0, 2/3, 1); the hyper-parameters
are the papers' defaults, not tuned for this task.
"""
  ra.write_markdown(
    os.path.join(workdir, 'results.md'),
    f'{NAME}: matched turn-level credit vs outcome-only GRPO on a tool-using task',
    [
      intro,
      ('Runs', ra.run_table(summary, arms, seeds, RUN_COLUMNS)),
      ('Per arm (over seeds)', means + '\n\n![curves](curves.png)'),
      ('Reading', reading),
    ],
  )


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
