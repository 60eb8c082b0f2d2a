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
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import token_credit_probe as probe
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
from jaxca.networks import transformer

NAME = 'token_credit'
BASELINE = 'grpo'  # the gate's baseline arm (jaxca.report.arm_gate)
PLANNING = ('', 'fai', 'sep')


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run."""
  runs.check_grid(config)
  for name in config.run_arms:
    arm = config.arms[name]
    if arm.planning not in PLANNING:
      raise runs.ConfigError(f'arms.{name}.planning must be one of {PLANNING}.')
    if arm.planning and 'hicra' not in arm.estimator:
      raise runs.ConfigError(f'arms.{name}: a planning set needs a hicra stage.')
  if BASELINE not in config.run_arms:
    raise runs.ConfigError(
      f"config.run_arms must include {BASELINE!r} (the gate's baseline and Part A's trained "
      f'checkpoint); got {list(config.run_arms)}.'
    )
  need = 2 * config.task.num_steps + 3 + 4 * config.task.num_steps
  if config.policy.max_len < need:
    raise runs.ConfigError(f'policy.max_len must be >= {need}; got {config.policy.max_len}.')
  if config.part_a.mc_chunk & (config.part_a.mc_chunk - 1):
    raise runs.ConfigError('part_a.mc_chunk must be a power of two.')


def build(config):
  task = tasks.make(config.task.name, **{k: v for k, v in config.task.items() if k != 'name'})
  pcfg = ml_collections.ConfigDict(config.policy.to_dict())
  return task, transformer.make_policy(pcfg, vocab_size=task.vocab.size)


# ----------------------------------------------------------------------------- Part B


def _class_metrics(task):
  voc = task.vocab

  def metrics_fn(data, traj, targets):  # data: the rollout context (responses, mask, ...)
    del traj
    a = jnp.abs(jnp.where(data.mask, targets.advantages, 0.0))
    num = voc.is_number(data.responses) & data.mask
    out = dict(
      adv_value=jnp.sum(a * num) / jnp.maximum(jnp.sum(num), 1),
      adv_step=jnp.sum(a * (data.responses == voc.step_id))
      / jnp.maximum(jnp.sum((data.responses == voc.step_id) & data.mask), 1),
      adv_eos=jnp.sum(a * (data.responses == voc.eos_id))
      / jnp.maximum(jnp.sum((data.responses == voc.eos_id) & data.mask), 1),
    )
    return out

  return metrics_fn


class Arm:
  """The jitted pieces of one Part B arm (shared by its seeds)."""

  def __init__(self, name, config, task, policy):
    self.name, self.cfg = name, config.arms[name]
    cr = config.credit
    self.est = estimators.from_config(  # config values: options a spec ignores are fine
      dict(
        estimator=self.cfg.estimator,
        pooling=self.cfg.pooling,
        alpha1=cr.alpha1,
        alpha2=cr.alpha2,
        beta1=cr.beta1,
        beta2=cr.beta2,
        hicra_alpha=cr.hicra_alpha,
        hicra_top_fraction=cr.hicra_top_fraction,
      )
    )
    rl = config.rl
    self.tx = train_lib.make_optimizer(config.optim)
    providers, hosts = {}, ()
    if self.cfg.planning == 'sep':
      providers['planning'] = providers_lib.token_planning_provider(task.vocab.step_id)
    elif self.cfg.planning == 'fai':
      hosts = (host_lib.fai_planning(policy, task, fraction=cr.fai_fraction),)
    phases = lm.make_rl_phases(
      policy,
      task,
      self.est,
      self.tx,
      group_size=rl.group_size,
      num_epochs=rl.num_epochs,
      num_minibatches=rl.num_minibatches,
      temperature=rl.temperature,
      loss_cfg=config.loss.to_dict(),
      providers=providers,
      host_fields=host_lib.host_fields(hosts),
      metrics_fn=_class_metrics(task),
    )
    hp = jax.tree.map(jnp.asarray, self.est.hparams)
    self.step = host_lib.make_iteration(phases, hosts, hparams=hp)
    init = lambda params0, seed: lm.init_from_params(params0, self.tx)  # noqa: E731
    self.steps = loop.ArmSteps(name, init, self.step, phased=True)

  def compile_s(self):
    return self.step.compile_s()


def run_arm(config, arm, params0, seed, train, test, evaluate):
  """One learning run; returns (records, final params)."""
  rl = config.rl
  records, state, _ = loop.run_arm(
    arm.steps,
    params0,
    seed,
    train,
    test,
    evaluate,
    **loop.budget(rl),
  )
  return records, jax.device_get(state['params'])


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
  """{(arm, seed): start / final scores, sampled accuracy, iterations, seconds, mean |A|}."""
  out = {}
  for (a, s), rs in ra.by_run(records, arms, seeds).items():
    tr = [r for r in rs if r['iteration'] > 0]
    first, last = rs[0], rs[-1]
    its = max(last['iteration'], 1)

    def mean(key, rows=tr):
      vals = [r[key] for r in rows if key in r]
      return float(np.mean(vals)) if vals else float('nan')

    out[(a, s)] = dict(
      start=first['eval_exact_match'],
      final=last['eval_exact_match'],
      start_answer=first.get('eval_final_answer', float('nan')),
      final_answer=last.get('eval_final_answer', float('nan')),
      sampled=mean('accuracy', tr[-10:]),  # training-batch accuracy at T=1, last 10
      iterations=last['iteration'],
      wall=last['wall'],
      s_per_iter=last['wall'] / its,
      # The run's seconds per iteration split as lm.host.make_iteration times them.
      split_s_per_iter=tuple(
        sum(r.get(k, 0.0) for r in tr) / its for k in ('sample_s', 'host_s', 'train_s')
      ),
      adv_value=mean('adv_value'),
      adv_step=mean('adv_step'),
      adv_eos=mean('adv_eos'),
    )
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
  fai, gtpo = d_rows['FAI-top-20%'], d_rows['GTPO']
  grpo = d_rows['GRPO']
  chance_p = grpo['precision']
  chance_h = d_rows['_chance_hit1']
  c_rows = diag['rows_c']
  claims = []
  # FAI marks the answer-determining tokens.
  fai_rho = diag['fai_spearman']
  ok = fai_rho > 0.3 and fai['precision'] >= 2 * chance_p
  claims.append(
    report.Verdict(
      'FAI marks the answer-determining tokens',
      'CONFIRMED' if ok else 'INCONCLUSIVE',
      'confirmed if Spearman(FAI, |A*|) > 0.3 and FAI top-20% precision >= 2x chance',
      {'Spearman': fai_rho, 'precision': fai['precision'], 'chance': chance_p},
      '' if ok else 'not confirmed',
    )
  )
  best = max(c_rows, key=lambda r: -1 if not np.isfinite(r['fai_global']) else r['fai_global'])
  sep = fai['format_share'] > 0.5 or best['name'] in ('STEP', 'EOS')
  claims.append(
    report.Verdict(
      'FAI is a credit signal, not concentrated on separators',
      'REFUTED' if sep else 'INCONCLUSIVE',
      'refuted if FAI-top-20% puts > 50% of its extra credit on STEP/EOS tokens or STEP/EOS '
      'is the class with the highest mean FAI',
      {
        'share of extra credit on STEP/EOS': fai['format_share'],
        'highest mean FAI class': f'{best["name"]} ({report.fmt(best["fai_global"], 3)})',
      },
      'FAI is concentrated on separators' if sep else 'not refuted: not on separators',
    )
  )
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
      h = gains[a]
      if all(x >= 5 for x in h):
        outcome, note = 'CONFIRMED', ''
      elif all(x <= 0 for x in h):
        outcome, note = 'REFUTED', 'no gain over GRPO in any seed'
      else:
        outcome, note = 'INCONCLUSIVE', 'a gain in some seeds only, or below +5 points'
      claims.append(
        report.Verdict(
          f'HICRA ({a}): credit to planning tokens helps',
          outcome,
          'confirmed if +5 points over GRPO in every seed; refuted if <= 0 points in every seed',
          {f'{a} - GRPO final exact match per seed (points)': h},
          note,
        )
      )
  return report.expected_vs_observed(claims, part_b_gate(summary, seeds, arms), smoke)


def part_b_gate(summary, seeds, arms):
  """The gate (`report.arm_gate`): GRPO vs its warm start and the shuffled-reward arm."""
  start = {k: r['start'] for k, r in summary.items()}
  final = {k: r['final'] for k, r in summary.items()}
  return report.arm_gate(final, start, seeds, arms, BASELINE, noise_arm=report.NOISE_FLOOR_ARM)


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
  task, policy = build(config)
  params0, ws_info, train, test, evaluate = warmstart.start(config, task, policy, workdir)
  seeds, arms = list(config.seeds), list(config.run_arms)
  built = {a: Arm(a, config, task, policy) for a in arms}
  checkpoint = {}  # Part A's trained checkpoint: the baseline's final parameters, first seed

  def run_one(a, s):
    recs, final = run_arm(config, built[a], params0, s, train, test, evaluate)
    if (a, s) == (BASELINE, seeds[0]):
      checkpoint['params'] = final
    return recs

  t_b = time.time()
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  records = loop.run_grid(metrics_path, arms, seeds, run_one, note=ra.run_note)
  grpo_final = checkpoint['params']
  t_b = time.time() - t_b
  summary = part_b_summary(records, seeds, arms)
  trained = trained_side(summary, seeds[0], config.part_a.min_gain)
  t_a = time.time()
  diagnoser = probe.Diagnoser(config, task, policy)
  checkpoints = [('warm', params0)] + ([(BASELINE, grpo_final)] if trained[0] else [])
  diags = {}
  for i, (name, params) in enumerate(checkpoints):
    diags[name] = probe.diagnose(
      diagnoser, config, params, test, jax.random.key(900 + i), name, workdir
    )
    runs.note(f'Part A ({name}): {diags[name]["d"]["mc_states"]} MC states')
  if not trained[0]:
    runs.note(f"Part A's trained side: UNTESTABLE ({trained[2]})")
  t_a = time.time() - t_a
  probe.plot_f7(diags['warm']['d'], task, config, os.path.join(workdir, 'f7_heatmaps.png'))
  ra.curves_figure(
    os.path.join(workdir, 'f_part_b.png'), ra.by_run(records, arms, seeds), arms, seeds, PANELS
  )
  header = ra.run_header(
    ra.command_line(f'experiments.{NAME}'),
    runs.git_commit(),
    platform=jax.devices()[0].platform,
    load_start=load_start,
    load_end=bench.load_average(),
    total_s=time.time() - t_start,
    parts={
      'warm start': ws_info.get('seconds', float('nan')),
      'Part B (compiles and evaluations included)': t_b,
      'Part A': t_a,
    },
    compiles={
      **{a: built[a].compile_s() for a in arms},
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
  pa, cr = config.part_a, config.credit
  sections = []
  titles = (('warm', 'warm start'), (BASELINE, f'GRPO after Part B (seed {seeds[0]})'))
  for name, title in titles:
    if name not in diags:
      sections.append(
        f"""### Checkpoint: {title}

Not diagnosed: **UNTESTABLE** by rule. Rule: {trained[1]}. Numbers:
{'; '.join(f'{k} {v}' for k, v in trained[2].items())}.
"""
      )
      continue
    sections.append(probe.section(diags[name], config, title))
  rl = config.rl
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
- FAI / WAAD (arXiv 2510.13554; no official code found; **our operationalisation**): heads =
  every (layer, head) pair; global heads = mean backward attention distance over response
  queries above the median; FAI_s = mean attention from later response tokens to token s
  (global heads; also all heads); WAAD_t = Σ_s Ā^loc_(t,s) min(t−s, W) with the local heads,
  W=4 in the tables (sweep {tuple(pa.windows)}); "WAAD-peak" = the top-20% WAAD tokens.
  Response token t sits at column Lp+t (FAI/WAAD read there); its entropy and probability
  come from the logits at column Lp+t−1.
- Oracle A*_t = V(y≤t) − V(y<t), V = MC-{pa.mc_samples} at T=1 from every token boundary
  (identical states de-duplicated; unfinished completions score 0), the last token R − V.
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
(`configs/common.ARITH_RL_RECIPE`): {rl.prompts} prompts x G={rl.group_size} per iteration at
temperature {rl.temperature}, outcome reward, Adam {config.optim.lr} (grad-norm clip 1.0, fresh
optimiser state), {rl.num_epochs} epoch(s) x {rl.num_minibatches} minibatches, entropy bonus
{config.loss.ent_coef}; {rl.iterations} iterations or {rl.max_wall_s:.0f} s of training wall
clock (compile and evaluation excluded; a safety cap), whichever first; held-out greedy exact
match on {config.data.num_test} prompts every {rl.eval_every} iterations. Seeds {seeds}: a seed
fixes the batches and sampling keys, identical across arms. The `{report.NOISE_FLOOR_ARM}` arm
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
