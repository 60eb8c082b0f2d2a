"""VinePPO / SPO-chain (Monte-Carlo step values) vs PPO-GAE (a value network) vs GRPO.

Commands, arms and settings: configs/mc_credit.py. Composition only: each arm is a
`jaxca.estimators` spec on the two-phase learner (`jaxca.arms.phased`): `collect` samples the
batch, the host provider `lm.host.mc_values` fills the Monte-Carlo values (states from
`credit.mc.step_prefixes`, de-duplicated and bucketed by `prefixes.mc_step_values`,
completed with shared prefill), then `update` runs the estimator and the PPO epochs; every
jitted piece is compiled ahead of time, so compile time is measured apart from run time.
Table B, the value probe, is `experiments/mc_credit_probe.py`; the arms x seeds grid,
equal-budget readings, tables, figure and header come from `jaxca.loop` and
`jaxca.report_arms`.

Not resumable: a rerun into the same workdir recomputes the arms (the warm start is
cached in `<workdir>/warmstart`)."""

import os
import time

from absl import app
import jax
import numpy as np

from experiments import mc_credit_probe as value_probe
from jaxca import arms as arms_lib
from jaxca import bench
from jaxca import estimators
from jaxca import loop
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import warmstart
from jaxca.lm import host as host_lib
from jaxca.lm import providers as providers_lib

NAME = 'mc_credit'
MC_KINDS = (None, 'steps', 'spo')  # an arm's MC values: none, VinePPO's steps, SPO's cuts


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run."""
  # The policy holds prompt + response + a next step + an MC completion (2K + 2 tokens).
  arms_lib.check(config, extra_len=2 * config.task.num_steps + 2)
  arms_lib.check_choice(config, 'mc', MC_KINDS)
  for name, arm in config.arms.items():
    if arm.mc is not None and arm.mc_samples < 1:
      raise runs.ConfigError(f'arms.{name}: an MC arm needs mc_samples >= 1.')
  arms_lib.check_wall_budgets(config)
  if config.probe.enabled and 'ppo_gae' not in config.run_arms:
    raise runs.ConfigError('the value probe needs the ppo_gae arm.')


def make_arm(name, config, task, policy, critic):
  """The jitted pieces of one arm (shared by its seeds).

  The arm's estimator says which fields it needs; `mc_values` is filled on the host by
  `lm.host.mc_values` (VinePPO's steps or SPO's cuts), SPO's `loss_mask` in jit.
  """
  arm, rl, spo = config.arms[name], config.rl, config.spo
  est = estimators.from_config(  # config values: options the arm's spec ignores are fine
    dict(estimator=arm.estimator, gamma=1.0, lambda_=1.0, prob_threshold=spo.prob_threshold,
         cut_interval=spo.cut_interval)
  )  # fmt: skip
  providers, hosts = {}, ()
  if arm.mc == 'spo':
    providers['loss_mask'] = providers_lib.loss_mask_provider(spo.prob_threshold)
  if arm.mc is not None:
    hosts = (
      host_lib.mc_values(
        policy, task, num_samples=arm.mc_samples, kind=arm.mc, temperature=rl.temperature,
        prob_threshold=spo.prob_threshold, cut_interval=spo.cut_interval,
        min_bucket=rl.mc_min_bucket,
      ),
    )  # fmt: skip
  loss = dict(config.loss.to_dict(), vf_coef=config.critic.vf_coef, vf_clip=config.critic.vf_clip)
  return arms_lib.phased(
    name, policy, task, est, config.optim, rl, loss, providers=providers, hosts=hosts,
    critic=critic if arm.critic else None,
    critic_optim=dict(name='adam', lr=config.critic.lr, max_grad_norm=1.0),
    critic_key=lambda seed: jax.random.key(10_000 + seed),
  )  # fmt: skip


# ----------------------------------------------------------------------------- tables


def summarize(records, seeds, arms, capped=(), baseline='grpo'):
  """{(arm, seed): costs and accuracies}: `report_arms.run_row` and the equal-iteration,
  equal-wall-clock and equal-generated-token views (`report_arms.equal_budget`: the noise floor
  sets none) of one seed's arms; a run in `capped` ({(arm, seed)} stopped by its equal-wall-clock
  budget) is read at its end in the wall-clock view (its last iteration began within it)."""
  by = ra.by_run(records, arms, seeds)
  claim_arms = [a for a in arms if a != report.NOISE_FLOOR_ARM]
  out = {}
  for s in seeds:
    equal = {x: ra.equal_budget(by, s, x) for x in ('wall', 'tokens', 'iteration')}
    warm = by[(arms[0], s)][0]['eval_exact_match']
    best = max(r.get('eval_exact_match', 0.0) for a in claim_arms for r in by[(a, s)])
    half = warm + 0.5 * (best - warm)
    for a in arms:
      recs = by[(a, s)]
      last, its = recs[-1], [r for r in recs if r['iteration'] > 0]
      wall_all = sum(r['sample_s'] + r['host_s'] + r['train_s'] for r in its)
      base = by.get((baseline, s))
      mc_iter = [r.get('mc_tokens_iter', 0.0) for r in its]
      row = ra.run_row(recs)
      row.update(
        {k: last[k] for k in ('tokens', 'policy_tokens', 'mc_tokens')},
        final_answer=last.get('eval_final_answer'),
        mc_share=100.0 * sum(r['host_s'] for r in its) / max(wall_all, 1e-9),
        acc_iter20=report.value_at(recs, 'iteration', 20) if last['iteration'] >= 20 else None,
        acc_equal_iter=report.value_at(recs, 'iteration', equal['iteration']),
        # A capped run is read at its end: its last iteration began within the budget.
        acc_equal_wall=last['eval_exact_match']
        if (a, s) in capped
        else report.value_at(recs, 'wall', equal['wall']),
        acc_equal_tokens=report.value_at(recs, 'tokens', equal['tokens']),
        baseline_at_final_iter=(
          report.value_at(base, 'iteration', last['iteration']) if base else None
        ),
        auc_wall=ra.auc_vs(recs, 'wall', equal['wall']),
        iters_to_half=ra.first_reaching(recs, half),
        warm=warm,
        half=half,
        equal=equal,
        mc_tokens_first=np.mean(mc_iter[:5]) if its else 0.0,
        mc_tokens_last=np.mean(mc_iter[-5:]) if its else 0.0,
      )
      out[(a, s)] = row
  return out


def _tokens(rows):
  return ' / '.join(f'{r["policy_tokens"]:.0f} + {r["mc_tokens"]:.0f}' for r in rows)


def table_a(summary, seeds, arms, config):
  """Costs per arm: mean over seeds (per-seed values in brackets)."""
  ep = config.rl.prompts * config.rl.group_size
  row = lambda r: r  # noqa: E731
  cols = [
    ra.Column('iterations', 'iterations', digits=0, fold='seeds'),
    ra.Column('episodes', 'iterations', fold=lambda v: ' / '.join(str(int(i) * ep) for i in v)),
    ra.Column('generated tokens (policy + MC)', row, fold=_tokens),
    ra.Column('s/iter', 's_per_iter', digits=2, fold='seeds'),
    ra.Column('MC share of wall %', 'mc_share', digits=1, fold='seeds'),
    ra.Column('training wall s', 'wall', digits=0, fold='seeds'),
    ra.Column('acc @ iter 20', 'acc_iter20', pct=True, fold='seeds'),
    ra.Column('acc @ equal generated tokens', 'acc_equal_tokens', pct=True, fold='seeds'),
  ]
  return ra.seed_table(summary, arms, seeds, cols)


ACCURACY_COLUMNS = tuple(
  ra.Column(label, key, pct=True)
  for key, label in (
    ('final', 'final greedy exact match'),
    ('acc_equal_iter', 'exact match @ equal iterations'),
    ('baseline_at_final_iter', "GRPO @ this arm's final iteration"),
    ('acc_equal_wall', 'exact match @ equal wall-clock'),
    ('auc_wall', 'AUC vs wall'),
    ('final_answer', 'final greedy final answer'),
    ('sampled', 'sampled accuracy (last 10 iterations)'),
  )
)


def table_a_accuracy(summary, seeds, arms):
  """Accuracies (%) per arm: mean ± sd [bootstrap 95% CI] over seeds, then per seed."""
  return ra.metric_table(summary, arms, seeds, ACCURACY_COLUMNS)


def expected_vs_observed(summary, seeds, arms, probe, smoke=False, baseline='grpo'):
  """The confirm/refute rules applied to the measurements, behind the GRPO gate (`report`)."""
  claims = []
  if 'vineppo_k9' in arms and 'ppo_gae' in arms:
    v = [summary[('vineppo_k9', s)] for s in seeds]
    p = [summary[('ppo_gae', s)] for s in seeds]
    ge = [
      a['acc_equal_wall'] >= b['acc_equal_wall'] and a['auc_wall'] >= b['auc_wall']
      for a, b in zip(v, p)
    ]
    refuted = [b['acc_equal_wall'] >= a['acc_equal_wall'] for a, b in zip(v, p)]
    outcome, note = report.per_seed_outcome(ge, refuted, 'tied: equal accuracy at equal wall-clock')
    claims.append(
      report.Verdict(
        '"MC credit beats the value network"',
        outcome,
        'confirmed if VinePPO accuracy at equal wall-clock and AUC-vs-wall >= PPO-GAE in every '
        'seed; refuted if PPO-GAE is at or above VinePPO at equal wall-clock in every seed',
        {
          'seeds': list(seeds),
          'VinePPO acc @ equal wall %': [100 * a['acc_equal_wall'] for a in v],
          'PPO-GAE acc @ equal wall %': [100 * b['acc_equal_wall'] for b in p],
          'VinePPO AUC %': [100 * a['auc_wall'] for a in v],
          'PPO-GAE AUC %': [100 * b['auc_wall'] for b in p],
        },
        note,
      )
    )
  if 'vineppo_k9' in arms:
    its, ok, worse = {}, [], []
    for s in seeds:
      its[s] = {a: summary[(a, s)]['iters_to_half'] for a in arms}
      vi, v_ran = its[s]['vineppo_k9'], summary[('vineppo_k9', s)]['iterations']
      others = [its[s][a] for a in ('grpo', 'ppo_gae') if a in its[s]]
      ok.append(vi is not None and all(o is None or vi < o for o in others))
      # Another arm got there first: VinePPO later, or not at all within at least as many
      # iterations of its own (a run cut by the wall-clock budget cannot say "later").
      worse.append(
        any(o is not None and (o < vi if vi is not None else o <= v_ran) for o in others)
      )
    v = [summary[('vineppo_k9', s)] for s in seeds]
    if not any(r['half'] > r['warm'] for r in v):
      outcome, note = 'UNTESTABLE', 'no arm improved on the warm start: the threshold is the start'
    else:
      why = 'seeds disagree, or no arm reached the threshold'
      outcome, note = report.per_seed_outcome(ok, worse, disagree=why)
    numbers = {'seeds': list(seeds), 'threshold %': [100 * r['half'] for r in v],
               'VinePPO iterations run': [r['iterations'] for r in v]}  # fmt: skip
    for a in arms:
      numbers[f'{a} iterations to threshold'] = [
        'never' if its[s][a] is None else its[s][a] for s in seeds
      ]
    claims.append(
      report.Verdict(
        '"Fewer updates"',
        outcome,
        'threshold = warm + 0.5 (best - warm), best over all arms but the noise floor; '
        'confirmed if VinePPO reaches it in fewer iterations than GRPO and PPO-GAE in every '
        'seed; refuted if in every seed GRPO or PPO-GAE reaches it first (VinePPO later, or '
        'not within as many iterations of its own); else inconclusive (evaluations every '
        'rl.eval_every iterations)',
        numbers,
        note,
      )
    )
  if probe:
    claims.append(value_probe.claim(probe))
  out = [
    report.expected_vs_observed(claims, ra.summary_gate(summary, seeds, arms, baseline), smoke)
  ]
  if 'spo_chain_k9' in arms:
    g = 'grpo' if 'grpo' in arms else arms[0]
    parts = [
      f'seed {s}: final {100 * r["final"]:.1f}% (GRPO {100 * summary[(g, s)]["final"]:.1f}%), '
      f'equal wall {100 * r["acc_equal_wall"]:.1f}%, MC tokens/iter {r["mc_tokens_first"]:.0f} '
      f'(first 5) -> {r["mc_tokens_last"]:.0f} (last 5)'
      for s, r in ((s, summary[('spo_chain_k9', s)]) for s in seeds)
    ]
    out.append(
      '- **SPO-chain** (reported on the same axes; its MC cost should fall as the policy '
      f'becomes confident). Observed: {"; ".join(parts)}.'
    )
  return '\n'.join(out)


F6_PANELS = ra.score_panels(
  (('iteration', 'iteration'), ('tokens', 'generated tokens (policy + MC)'),
   ('wall', 'wall-clock s (train)'))
)  # fmt: skip


# ----------------------------------------------------------------------------- run


def run(config, workdir):
  t_start = time.time()
  load_start = bench.load_average()
  task, policy, critic = arms_lib.task_and_policy(config, critic=True)
  params0, ws_info, train, test, evaluate = warmstart.start(config, task, policy, workdir)
  arms, seeds = list(config.run_arms), list(config.seeds)
  built = {a: make_arm(a, config, task, policy, critic) for a in arms}
  keep = tuple(config.probe.checkpoints) if config.probe.enabled else ()
  snaps, walls = {}, {}

  def run_one(a, s):
    budget = dict(loop.budget(config.rl), max_wall_s=arms_lib.wall_budget(config, a, walls, s))
    recs, _, sn = loop.run_arm(
      built[a], params0, s, train, test, evaluate, **budget,
      keep=keep if (a == 'ppo_gae' and s == seeds[0]) else (),
      snapshot=lambda st: jax.device_get((st['params'], st.get('critic_params'))),
      counters=('policy_tokens', 'mc_tokens'),
    )  # fmt: skip
    walls[(a, s)] = recs[-1]['wall']
    snaps.update(sn)
    return recs

  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  records = loop.run_grid(metrics_path, arms, seeds, run_one, note=ra.run_note)
  t_learn = time.time() - t_start
  probe = value_probe.probe_all(config, task, policy, critic, snaps, test, workdir)
  t_probe = time.time() - t_start - t_learn
  capped = arms_lib.capped(config, records, walls)
  summary = summarize(records, seeds, arms, capped, config.baseline)
  ra.curves_figure(
    os.path.join(workdir, 'f6_learning.png'), ra.by_run(records, arms, seeds), arms, seeds,
    F6_PANELS,
    title='F6: accuracy vs iteration, generated tokens and wall-clock (dashed: later seeds)',
  )  # fmt: skip
  if probe:
    value_probe.plot_probe(probe, os.path.join(workdir, 'f_probe.png'))
  header = loop.header(
    NAME,
    t_start,
    load_start,
    parts={'warm start + learning runs': t_learn, 'value probe': t_probe},
    compiles={a: arms_lib.compile_s(built[a]) for a in arms},
    note='The iteration counts of the wall-clock-capped arms DO depend on load (their budget '
    "is GRPO's training wall clock, measured minutes earlier on the same machine): a load "
    'change between the runs of a seed shifts them; the per-seed s/iter column shows it.',
  )
  write_results(config, workdir, summary, arms, probe, ws_info, capped, header)
  finals = ra.arm_means(summary, arms, seeds, 'final')
  return ra.summary_line(
    NAME, ws_info['exact_match'], finals, time.time() - t_start,
    os.path.join(workdir, 'results.md'), seeds=len(seeds),
  )  # fmt: skip


def write_results(config, workdir, summary, arms, probe, ws_info, capped, header):
  seeds = list(config.seeds)
  eq = summary[(arms[0], seeds[0])]['equal']
  intro = f"""{header}

Setting: K={config.task.num_steps} chains, M={config.task.modulus}, invertible ops; policy
{config.policy.depth} layers, d={config.policy.width}; warm start:
{warmstart.describe(config, ws_info)}. Each arm, the base RL recipe of the arithmetic
reproductions (configs/common.ARITH_RL_RECIPE): {ra.recipe_text(config)} PPO-clip
{config.loss.clip_eps}, no KL; evaluations also at a run's last iteration. Budget:
{arms_lib.budget_text(config)} Noise floor
(`{report.NOISE_FLOOR_ARM}`): GRPO on another prompt's outcomes; it enters only the gate.
PPO-GAE: separate critic (SFT trunk + fresh head), clipped value loss (clip
{config.critic.vf_clip}, coefficient {config.critic.vf_coef}), critic Adam
{config.critic.lr}; GAE gamma = lambda = 1, whitened. VinePPO: MC values at every step
boundary (identical states de-duplicated, V(s_0) shared by a prompt's G responses),
unfinished completions score 0, whitened. SPO-chain: cut tokens p_old < {config.spo.prob_threshold},
interval {config.spo.cut_interval:.0f}, MC values before each cut, A = 0 where p_old > threshold,
loss and whitening on p_old < threshold tokens only.

Readings implemented: SPO-chain uses cutpoint interval 1 as the design specifies for short
responses (the official code's default is 5; responses here are at most
{2 * config.task.num_steps} tokens, so interval 5 would leave at most one cut per response
and was not run); the tokens before the first cut get advantage 0 (the official
first-segment-zero behaviour). VinePPO follows Eq. 5 of arXiv 2410.01679 with gamma = 1.
Training data are generated on the host by the task (`task.generate`, train/test split by
problem hash), not read from the tfds dataset.
"""
  table_a_text = f"""\
Equal iterations / wall-clock / generated tokens use, per seed, the smallest final value
across the arms other than the noise floor (seed {seeds[0]}: {eq['iteration']} iterations,
{eq['wall']:.1f} s, {eq['tokens']:.0f} tokens), reading each arm's last evaluation at or
before it; a run stopped by its equal-wall-clock budget ({len(capped)} of them) is read at its
final evaluation in the wall-clock view (its last iteration began within the budget).
"GRPO @ this arm's final iteration": the equal-iteration view of an arm cut by the
wall-clock budget, read against GRPO's evaluation at or before that iteration. AUC vs wall:
mean accuracy over [0, equal wall-clock] (step function through the evaluations). "-" where a
run did not get that far.

Accuracies (%), mean ± sd [percentile bootstrap 95% CI over seeds], then per seed:

{table_a_accuracy(summary, seeds, arms)}

Costs, mean over seeds (per-seed values in brackets):

{table_a(summary, seeds, arms, config)}

![F6](f6_learning.png)
"""
  b_text = value_probe.section(config, probe)
  expected = f"""\
{expected_vs_observed(summary, seeds, arms, probe, config.get('smoke', False), config.baseline)}

Settings tried: this configuration only (no tuning runs).
"""
  ra.write_markdown(
    os.path.join(workdir, 'results.md'),
    'mc_credit: VinePPO / SPO-chain (MC step values) vs PPO-GAE (value network) vs GRPO',
    [
      intro,
      ('Table A: learning runs', table_a_text),
      (f'Table B: value-prediction probe (PPO-GAE critic, seed {seeds[0]})', b_text),
      ('Expected vs observed', expected),
    ],
  )


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
