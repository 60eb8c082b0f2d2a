"""experiments/tool_credit: summaries, the claims judged by rule, and results.md.

The claims (MatchTIR, arXiv 2601.10712) and the gate (`jaxca.report.arm_gate`) are described in
configs/tool_credit.py; `verdict` judges them, `write_results` writes results.md.
"""

import json
import os

import numpy as np

from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs

NAME = 'tool_credit'
MIN_SEEDS = 4


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


def pct(x):
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


def describe_warm_start(config, info):
  """The warm start in a paragraph (steps, its stop, validation accuracy and calls)."""
  if info is None:
    return 'Every run starts from a random init (`warmstart` None), one per seed.'
  ws = config.warmstart
  stop = report.percent_target(ws.stop_at)
  return (
    f'Warm start (every arm and seed starts from it, as MatchTIR starts from a model that already '
    f'calls tools): SFT on the action tokens of {ws.num_demos} noisy scripted demonstrations '
    f'(`tool_arith.noisy_reference_policy`, p_opt={ws.p_opt}: the next reference call, repeated '
    f'after an ERR, then ANS(acc), each with probability p_opt, else a random action; they '
    f'solve {100 * info["demo_accuracy"]:.1f}% with {info["demo_calls"]:.2f} calls per problem) '
    f'on training problems, Adam {ws.lr}, batch {ws.batch_size}, for {info["steps"]} steps, '
    f'stopped at the first evaluation (every {ws.eval_every} steps, at most {ws.max_steps}) whose '
    f'greedy accuracy on {config.data.num_val} validation problems (carved from the training '
    f'split, disjoint from the held-out ones, not trained on by RL) reached {stop}: validation '
    f'accuracy {100 * info["validation_accuracy"]:.1f}%, {info["validation_calls"]:.2f} calls '
    f'per problem ({info["seconds"]:.0f} s; SFT curve in warmstart_curve.csv).'
  )


def write_results(config, workdir, summary, times, platform, ws_info=None):
  seeds, arms = list(config.seeds), list(config.run_arms)
  rl, e = config.rl, config.env
  header = ra.run_header(
    ra.command_line(f'experiments.{NAME}'), runs.git_commit(),
    platform=platform, load_start=times['load_start'],
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
{e.error_rate}; {config.data.num_train - config.data.num_val} training, {config.data.num_val}
validation and {config.data.num_test} held-out problems (disjoint). Policy
{config.policy.depth} layers, d={config.policy.width}.

{describe_warm_start(config, ws_info)}

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

Caveats: a small model on a short budget from a scripted-demonstration warm start;
{len(seeds)} seed(s); one-token calls with one argument, so the similarity takes three values
(0, 2/3, 1); the hyper-parameters are the papers' defaults, not tuned for this task (the warm
start's stop was calibrated so that the policy calls the tool and GRPO still learns).
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
