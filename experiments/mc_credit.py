"""VinePPO / SPO-chain (Monte-Carlo step values) vs PPO-GAE (a value network) vs GRPO.

Commands, arms and settings: configs/mc_credit.py. Composition only: the estimators are
`jaxca.estimators` spec strings; Monte-Carlo values are host fields of
the two-phase learner (`lm.make_rl_phases`): `collect` (jitted) samples the batch, the host
builds the states (`credit.mc.step_prefixes`), de-duplicates and buckets them
(`prefixes.mc_step_values`) and completes them with shared prefill
(`providers_lib.mc_complete_and_score`, jitted once per power-of-two bucket), then `update`
(jitted) runs the estimator and the PPO epochs. Every jitted function is compiled ahead
of time per input shape, so compile time is measured apart from run time. Table B, the value
probe, is `experiments/mc_credit_probe.py`; the arms x seeds grid, equal-budget readings,
tables, figure and header come from `jaxca.loop` and `jaxca.report_arms`.

Not resumable: a rerun into the same workdir recomputes the arms (the warm start is
cached in `<workdir>/warmstart`).
"""

import json
import os
import time

from absl import app
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import mc_credit_probe as value_probe
from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import tasks
from jaxca import train as train_lib
from jaxca import warmstart
from jaxca.lm import host as host_lib
from jaxca.lm import providers as providers_lib
from jaxca.networks import critic as critic_lib
from jaxca.networks import transformer

NAME = 'mc_credit'
MC_KINDS = ('', 'steps', 'spo')


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run."""
  for name, arm in config.arms.items():
    if arm.mc not in MC_KINDS:
      raise runs.ConfigError(f'arms.{name}.mc must be one of {MC_KINDS}; got {arm.mc!r}.')
    if arm.mc and arm.mc_samples < 1:
      raise runs.ConfigError(f'arms.{name}: an MC arm needs mc_samples >= 1.')
  need = 2 * config.task.num_steps + 3 + 4 * config.task.num_steps + 2
  if config.policy.max_len < need:
    raise runs.ConfigError(
      f'policy.max_len must cover prompt + response + a next step + an MC completion ({need}); got '
      f'{config.policy.max_len}.'
    )
  if config.rl.prompts * config.rl.group_size % config.rl.num_minibatches:
    raise runs.ConfigError('rl.prompts * rl.group_size must divide into rl.num_minibatches.')
  runs.check_grid(config)
  if config.probe.enabled and 'ppo_gae' not in config.run_arms:
    raise runs.ConfigError('the value probe needs the ppo_gae arm.')
  for i, name in enumerate(config.run_arms):
    ref = config.arms[name].get('wall_budget', '')
    if ref and ref not in config.run_arms[:i]:
      raise runs.ConfigError(
        f'arms.{name}.wall_budget must be empty or an arm run before it '
        f'({list(config.run_arms[:i])}); got {ref!r}.'
      )


# ----------------------------------------------------------------------------- parts


def build(config):
  task = tasks.make(config.task.name, **{k: v for k, v in config.task.items() if k != 'name'})
  pcfg = ml_collections.ConfigDict(config.policy.to_dict())
  policy = transformer.make_policy(pcfg, vocab_size=task.vocab.size)
  critic = critic_lib.make_critic(pcfg, vocab_size=task.vocab.size)
  return task, policy, critic


def _estimator(config, arm):
  return estimators.from_config(  # config values: options the arm's spec ignores are fine
    dict(
      estimator=arm.estimator,
      gamma=1.0,
      lambda_=1.0,
      prob_threshold=config.spo.prob_threshold,
      cut_interval=config.spo.cut_interval,
    )
  )


class Arm:
  """The jitted pieces of one arm (shared by its seeds).

  The arm's estimator says which fields it needs; `mc_values` is filled on the host by
  `lm.host.mc_values` (VinePPO's steps or SPO's cuts), SPO's `loss_mask` in jit.
  """

  def __init__(self, name, config, task, policy, critic):
    self.name, self.cfg = name, config.arms[name]
    self.est = _estimator(config, self.cfg)
    rl = config.rl
    self.tx = train_lib.make_optimizer(config.optim)
    self.critic = critic if self.cfg.critic else None
    self.ctx = train_lib.make_optimizer(dict(name='adam', lr=config.critic.lr, max_grad_norm=1.0))
    providers = {}
    if self.cfg.mc == 'spo':
      providers['loss_mask'] = providers_lib.loss_mask_provider(config.spo.prob_threshold)
    hosts = ()
    if self.cfg.mc:
      hosts = (
        host_lib.mc_values(
          policy,
          task,
          num_samples=self.cfg.mc_samples,
          kind=self.cfg.mc,
          temperature=rl.temperature,
          prob_threshold=config.spo.prob_threshold,
          cut_interval=config.spo.cut_interval,
          min_bucket=rl.mc_min_bucket,
        ),
      )
    loss_cfg = dict(config.loss.to_dict(), vf_coef=config.critic.vf_coef)
    loss_cfg['vf_clip'] = config.critic.vf_clip
    phases = lm.make_rl_phases(
      policy,
      task,
      self.est,
      self.tx,
      group_size=rl.group_size,
      num_epochs=rl.num_epochs,
      num_minibatches=rl.num_minibatches,
      temperature=rl.temperature,
      loss_cfg=loss_cfg,
      providers=providers,
      host_fields=host_lib.host_fields(hosts),
      critic=self.critic,
      critic_tx=self.ctx if self.critic else None,
    )
    hp = jax.tree.map(jnp.asarray, self.est.hparams)
    self.step = host_lib.make_iteration(phases, hosts, hparams=hp)

  def compile_s(self):
    return self.step.compile_s()

  def steps(self, critic_init):
    def init(params0, seed):
      cparams = None
      if self.critic is not None:
        cparams = critic_lib.critic_params_from_policy(self.critic, params0, critic_init(seed))
      return lm.init_from_params(params0, self.tx, critic_params=cparams, critic_tx=self.ctx)

    return loop.ArmSteps(self.name, init, self.step, phased=True)


# ----------------------------------------------------------------------------- learning runs


def wall_budget(config, name, walls, seed) -> float:
  """The training wall-clock cap of arm `name` in `seed`: `rl.max_wall_s`, or, with
  `arms.<name>.wall_budget` = another arm, that arm's final training wall clock of the same
  seed (`walls[(arm, seed)]`, seconds), whichever is smaller: the equal-wall-clock budget."""
  ref = config.arms[name].get('wall_budget', '')
  if not ref:
    return float(config.rl.max_wall_s)
  return min(float(config.rl.max_wall_s), float(walls[(ref, seed)]))


def run_arm(
  config, arm, params0, critic_init, seed, train, test, evaluate, keep=(), max_wall_s=None
):
  """One learning run; returns (records, snapshots {iteration: (params, critic_params)})."""
  budget = loop.budget(config.rl)
  if max_wall_s is not None:
    budget['max_wall_s'] = max_wall_s
  records, _, snaps = loop.run_arm(
    arm.steps(critic_init),
    params0,
    seed,
    train,
    test,
    evaluate,
    **budget,
    keep=keep,
    snapshot=lambda st: jax.device_get((st['params'], st.get('critic_params'))),
    counters=('policy_tokens', 'mc_tokens'),
  )
  return records, snaps


# ----------------------------------------------------------------------------- tables


def _auc_vs(recs, axis, x_max):
  """Mean eval accuracy over [0, x_max] (step function through the evaluations)."""
  pts = [(r[axis], r['eval_exact_match']) for r in recs if 'eval_exact_match' in r]
  return report.curve_auc([x for x, _ in pts], [y for _, y in pts], x_max)


def _iters_to(recs, threshold):
  for r in recs:
    if r['iteration'] > 0 and 'eval_exact_match' in r and r['eval_exact_match'] >= threshold:
      return r['iteration']
  return None


def _last_iter(records, arm, seed):
  return max(r['iteration'] for r in records if r['arm'] == arm and r['seed'] == seed)


def summarize(records, seeds, arms, capped=(), baseline='grpo'):
  """{(arm, seed): costs and accuracies}: the equal-iteration, equal-wall-clock and
  equal-generated-token views of one seed's arms.

  The noise floor (`report.NOISE_FLOOR_ARM`) is summarised but sets none of the equal
  budgets. Equal X: the smallest final X over the other arms of the seed, each arm read at
  its last evaluation at or before it, except that a run in `capped` ({(arm, seed)} stopped
  by its equal-wall-clock budget) is read at its final evaluation in the wall-clock view: its last
  iteration began within the budget and may end up to one iteration past it.
  """
  by = ra.by_run(records, arms, seeds)
  claim_arms = [a for a in arms if a != report.NOISE_FLOOR_ARM]
  out = {}
  for s in seeds:
    w_min, t_min, i_min = (ra.equal_budget(by, s, x) for x in ('wall', 'tokens', 'iteration'))
    warm = by[(arms[0], s)][0]['eval_exact_match']
    best = max(r.get('eval_exact_match', 0.0) for a in claim_arms for r in by[(a, s)])
    half = warm + 0.5 * (best - warm)
    for a in arms:
      recs = by[(a, s)]
      last = recs[-1]
      its = [r for r in recs if r['iteration'] > 0]
      wall_mc = sum(r['host_s'] for r in its)
      wall_all = sum(r['sample_s'] + r['host_s'] + r['train_s'] for r in its)
      eq_wall = report.value_at(recs, 'wall', w_min)
      if (a, s) in capped:
        eq_wall = last['eval_exact_match']
      base = by.get((baseline, s))
      out[(a, s)] = dict(
        iters=last['iteration'],
        tokens=last['tokens'],
        policy_tokens=last['policy_tokens'],
        mc_tokens=last['mc_tokens'],
        wall=last['wall'],
        s_per_iter=last['wall'] / max(last['iteration'], 1),
        mc_share=100.0 * wall_mc / max(wall_all, 1e-9),
        acc_iter20=report.value_at(recs, 'iteration', 20) if last['iteration'] >= 20 else None,
        acc_equal_iter=report.value_at(recs, 'iteration', i_min),
        acc_equal_wall=eq_wall,
        acc_equal_tokens=report.value_at(recs, 'tokens', t_min),
        baseline_at_final_iter=(
          report.value_at(base, 'iteration', last['iteration']) if base else None
        ),
        final=last['eval_exact_match'],
        final_answer=last.get('eval_final_answer'),
        sampled_acc=float(np.mean([r['accuracy'] for r in its[-10:]])) if its else None,
        auc_wall=_auc_vs(recs, 'wall', w_min),
        iters_to_half=_iters_to(recs, half),
        warm=warm,
        half=half,
        equal=dict(wall=w_min, tokens=t_min, iteration=i_min),
        compile_s=sum(r.get('compile_s', 0.0) for r in recs),
        mc_tokens_first=np.mean([r.get('mc_tokens_iter', 0.0) for r in its[:5]]) if its else 0.0,
        mc_tokens_last=np.mean([r.get('mc_tokens_iter', 0.0) for r in its[-5:]]) if its else 0.0,
      )
  return out


def _f(x, pct=False, digits=2):
  return report.fmt(x, None if pct else digits, pct)


def _tokens(rows):
  return ' / '.join(f'{r["policy_tokens"]:.0f} + {r["mc_tokens"]:.0f}' for r in rows)


def table_a(summary, seeds, arms, config):
  """Costs per arm: mean over seeds (per-seed values in brackets)."""
  ep = config.rl.prompts * config.rl.group_size
  row = lambda r: r  # noqa: E731
  cols = [
    ra.Column('iters', 'iters', digits=0, fold='seeds'),
    ra.Column('episodes', 'iters', fold=lambda v: ' / '.join(str(int(i) * ep) for i in v)),
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
    ('sampled_acc', 'sampled accuracy (last 10 iterations)'),
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
    if all(ge) and all(refuted):
      outcome, note = 'INCONCLUSIVE', 'tied: equal accuracy at equal wall-clock'
    elif all(ge):
      outcome, note = 'CONFIRMED', ''
    elif all(refuted):
      outcome, note = 'REFUTED', ''
    else:
      outcome, note = 'INCONCLUSIVE', 'seeds disagree'
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
      vi, v_ran = its[s]['vineppo_k9'], summary[('vineppo_k9', s)]['iters']
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
    elif all(ok):
      outcome, note = 'CONFIRMED', ''
    elif all(worse):
      outcome, note = 'REFUTED', ''
    else:
      outcome, note = 'INCONCLUSIVE', 'seeds disagree, or no arm reached the threshold'
    numbers = {'seeds': list(seeds), 'threshold %': [100 * r['half'] for r in v]}
    numbers['VinePPO iterations run'] = [r['iters'] for r in v]
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
    last = list(probe)[-1]
    crit = probe[last]['critic']['rank_acc']
    mc9 = probe[last].get('MC-9', {}).get('rank_acc', float('nan'))
    if np.isfinite(crit) and crit >= 0.8:
      outcome, note = 'REFUTED', 'at this scale: the critic ranks next steps well'
    elif np.isfinite(crit) and crit <= 0.6 and np.isfinite(mc9) and mc9 >= 0.8:
      outcome, note = 'CONFIRMED', 'consistent with VinePPO'
    else:
      outcome, note = 'INCONCLUSIVE', 'between the thresholds, or too few ranked states'
    claims.append(
      report.Verdict(
        'Value quality',
        outcome,
        'consistent with VinePPO if the critic rank-accuracy <= 0.6 with MC-9 >= 0.8; critic '
        '>= 0.8 refutes the claim at this scale (|ΔQ*| >= 0.1 pairs)',
        {'checkpoint': last, 'critic rank-acc': crit, 'MC-9 rank-acc': mc9},
        note,
      )
    )
  warm = {k: r['warm'] for k, r in summary.items()}
  final = {k: r['final'] for k, r in summary.items()}
  gate = report.arm_gate(final, warm, seeds, arms, baseline)
  out = [report.expected_vs_observed(claims, gate, smoke)]
  if 'spo_chain_k9' in arms:
    parts = []
    for s in seeds:
      r = summary[('spo_chain_k9', s)]
      g = summary[('grpo', s)] if 'grpo' in arms else summary[(arms[0], s)]
      parts.append(
        f'seed {s}: final {100 * r["final"]:.1f}% (GRPO {100 * g["final"]:.1f}%), equal wall '
        f'{100 * r["acc_equal_wall"]:.1f}%, MC tokens/iter {r["mc_tokens_first"]:.0f} (first 5) '
        f'-> {r["mc_tokens_last"]:.0f} (last 5)'
      )
    out.append(
      '- **SPO-chain** (reported on the same axes; its MC cost should fall as the policy '
      f'becomes confident). Observed: {"; ".join(parts)}.'
    )
  return '\n'.join(out)


F6_PANELS = tuple(
  ra.Panel(x, 'eval_exact_match', label, 'held-out greedy exact match')
  for x, label in (
    ('iteration', 'iteration'),
    ('tokens', 'generated tokens (policy + MC)'),
    ('wall', 'wall-clock s (train)'),
  )
)


# ----------------------------------------------------------------------------- run


def run(config, workdir):
  t_start = time.time()
  load_start = bench.load_average()
  task, policy, critic = build(config)
  params0, ws_info, train, test, evaluate = warmstart.start(config, task, policy, workdir)
  arms = list(config.run_arms)
  built = {a: Arm(a, config, task, policy, critic) for a in arms}

  def critic_init(seed):
    return jax.random.key(10_000 + seed)

  keep = ()
  if config.probe.enabled:
    keep = tuple(config.probe.checkpoints)
  snaps, walls = {}, {}

  def run_one(a, s):
    k = keep if (a == 'ppo_gae' and s == config.seeds[0]) else ()
    cap = wall_budget(config, a, walls, s)
    recs, sn = run_arm(
      config, built[a], params0, critic_init, s, train, test, evaluate, k, max_wall_s=cap
    )
    walls[(a, s)] = recs[-1]['wall']
    snaps.update(sn)
    return recs

  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  records = loop.run_grid(metrics_path, arms, list(config.seeds), run_one, note=ra.run_note)
  t_learn = time.time() - t_start
  probe = {}
  t_probe = time.time()
  if config.probe.enabled:
    prober = value_probe.Prober(config, task, policy, critic)
    for it in sorted(snaps):
      params, cparams = snaps[it]
      t_ck = time.time()
      probe[it] = value_probe.probe_checkpoint(
        config, task, policy, prober, params, cparams, test, jax.random.key(500 + it)
      )
      probe[it]['_counts']['seconds'] = round(time.time() - t_ck, 1)
      runs.note(f'probe at PPO-GAE iteration {it}: {time.time() - t_ck:.0f} s')
    with open(os.path.join(workdir, 'probe.json'), 'w') as f:
      json.dump({str(k): v for k, v in probe.items()}, f, indent=1)
  t_probe = time.time() - t_probe
  capped = {
    (a, s)
    for a in arms
    for s in config.seeds
    if config.arms[a].get('wall_budget', '')
    and walls[(a, s)]
    and _last_iter(records, a, s) < config.rl.iterations
  }
  summary = summarize(records, list(config.seeds), arms, capped, config.baseline)
  ra.curves_figure(
    os.path.join(workdir, 'f6_learning.png'),
    ra.by_run(records, arms, list(config.seeds)),
    arms,
    list(config.seeds),
    F6_PANELS,
    title='F6: accuracy vs iteration, generated tokens and wall-clock (dashed: later seeds)',
  )
  if probe:
    value_probe.plot_probe(probe, os.path.join(workdir, 'f_probe.png'))
  compiles = {a: built[a].compile_s() for a in arms}
  write_results(
    config,
    workdir,
    summary,
    arms,
    probe,
    ws_info,
    capped,
    dict(
      total_s=time.time() - t_start,
      learn_s=t_learn,
      probe_s=t_probe,
      load_start=load_start,
      load_end=bench.load_average(),
      compiles=compiles,
    ),
  )
  s0 = config.seeds[0]
  line = ', '.join(f'{a} {report.fmt(summary[(a, s0)]["final"], pct=True)}%' for a in arms)
  return (
    f'mc_credit: warm start {100 * ws_info["exact_match"]:.1f}% -> seed {s0}: {line} in '
    f'{time.time() - t_start:.0f} s; results in {os.path.join(workdir, "results.md")}'
  )


def budget_text(config) -> str:
  """The learning runs' budget rule, in words."""
  rl = config.rl
  capped = {a: config.arms[a].get('wall_budget', '') for a in config.run_arms}
  by_iter = [a for a, ref in capped.items() if not ref]
  by_wall = [a for a, ref in capped.items() if ref]
  text = f'{", ".join(by_iter)} run {rl.iterations} iterations'
  if by_wall:
    refs = sorted({capped[a] for a in by_wall})
    text += (
      f'; {", ".join(by_wall)} stop at {rl.iterations} iterations or once their training wall '
      f'clock reaches the final training wall clock of {", ".join(refs)} in the same seed '
      '(equal wall-clock: their iteration count is what that budget buys)'
    )
  return text + (
    f'; every run also stops at {rl.max_wall_s:.0f} s of training wall clock (a safety cap). '
    'Training wall clock: sampling, MC completions and updates; compiles and evaluations '
    'excluded.'
  )


def write_results(config, workdir, summary, arms, probe, ws_info, capped, times):
  seeds = list(config.seeds)
  eq = summary[(arms[0], seeds[0])]['equal']
  header = ra.run_header(
    ra.command_line(f'experiments.{NAME}'),
    runs.git_commit(),
    platform=jax.devices()[0].platform,
    load_start=times['load_start'],
    load_end=times['load_end'],
    total_s=times['total_s'],
    parts={'warm start + learning runs': times['learn_s'], 'value probe': times['probe_s']},
    compiles=times['compiles'],
    note='The iteration counts of the wall-clock-capped arms DO depend on load (their budget '
    "is GRPO's training wall clock, measured minutes earlier on the same machine): a load "
    'change between the runs of a seed shifts them; the per-seed s/iter column shows it.',
  )
  intro = f"""{header}

Setting: K={config.task.num_steps} chains, M={config.task.modulus}, invertible ops; policy
{config.policy.depth} layers, d={config.policy.width}; warm start:
{warmstart.describe(config, ws_info)}. Each arm, the base
RL recipe of the arithmetic reproductions (configs/common.ARITH_RL_RECIPE):
{config.rl.prompts} prompts x G={config.rl.group_size} per iteration, PPO-clip
{config.loss.clip_eps}, {config.rl.num_epochs} epochs x {config.rl.num_minibatches}
minibatches, Adam {config.optim.lr} (grad-norm clip 1), entropy bonus {config.loss.ent_coef}, no
KL. Budget: {budget_text(config)} Held-out greedy evaluation on {config.data.num_test} prompts
every {config.rl.eval_every} iterations and at a run's last iteration. Seeds: {seeds} (a seed
fixes the batches and sampling keys, identical across arms). Noise floor
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
  table_b_text = f"""\
V\\* and Q\\* are MC-{config.probe.truth_samples} at T=1. States: {config.probe.prompts} held-out
prompts x {config.probe.samples} on-policy samples, boundary states de-duplicated, up to
{config.probe.states} drawn stratified by depth. Ranking: up to {config.probe.rank_states}
states x {config.probe.rank_candidates} sampled next steps (distinct steps kept), states with
at least {config.probe.min_alternatives} distinct next values. Step-error AUC: first wrong step
(from the verifier) vs the correct steps before it, scored by -A_i, over
{config.probe.auc_prompts * config.probe.samples} on-policy responses.

{value_probe.table_b(probe) if probe else '(probe disabled)'}

{'![probe](f_probe.png)' if probe else ''}

Counts per checkpoint: {json.dumps({str(k): v['_counts'] for k, v in probe.items()})}
"""
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
      (f'Table B: value-prediction probe (PPO-GAE critic, seed {seeds[0]})', table_b_text),
      ('Expected vs observed', expected),
    ],
  )


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
