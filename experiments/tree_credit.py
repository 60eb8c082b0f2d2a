"""Tree rollouts + tree credit (SPO-tree, TreeRL) vs GRPO, SPO-chain and VinePPO at equal tokens.

Commands, arms and the budget rule: configs/tree_credit.py. Composition only: the tree arms
sample one tree per prompt with `lm.tree.make_tree_collect` (`tree_sampling.sample_tree` in
jit: one prefill, the KV cache of each node copied to its children) and read the
`estimators.tree` stages; the MC arms are experiments/mc_credit.py's (host MC values). Every
arm records the step-error AUC of its advantages on its own batch (`step_auc_metrics`: the
first wrong step of each wrong response, from the verifier, against the correct steps before
it, scored by -A of the step; ties count half), the credit-quality reading per generated
token. On invertible chains the verifier's labels are the sign of the Monte-Carlo oracle's
step credit A* = V(after step) - V(before) (token_credit's oracle): a wrong intermediate value
makes the answer wrong unless a later error cancels it, so V falls at the first wrong step and
cannot fall at a correct one; reading them from the verifier costs no completions. The grid,
gate, tables and figure come from `jaxca.loop`, `jaxca.report` and
`jaxca.report_arms`. The tree-vs-independent sampling benchmark row is experiments/
bench_sampling.py's third table. Not resumable (the warm start is cached).
"""

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
from jaxca import ops
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import tasks
from jaxca import train as train_lib
from jaxca import warmstart
from jaxca.lm import host as host_lib
from jaxca.lm import providers as providers_lib
from jaxca.lm import rollout as rollout_lib
from jaxca.lm import tree as tree_lm
from jaxca.networks import transformer

NAME = 'tree_credit'


def validate(config):
  """Raises runs.ConfigError on settings the experiment cannot run."""
  runs.check_grid(config)
  leaves = int(np.prod(config.tree.branching))
  if leaves != config.rl.group_size:
    raise runs.ConfigError(
      f'tree.branching must give rl.group_size={config.rl.group_size} leaves; got {leaves}.'
    )
  if min(config.tree.branching) < 2:
    raise runs.ConfigError(
      f'tree.branching must be >= 2 at every level (got {tuple(config.tree.branching)}): an only '
      "child's tree advantage is 0 and its parent's tokens take its blame; merge the level "
      'into its parent segment (segment_len) instead.'
    )
  if sum(config.tree.segment_len) != 2 * config.task.num_steps:
    raise runs.ConfigError('sum(tree.segment_len) must be the response length 2 * task.num_steps.')
  for name, arm in config.arms.items():
    if arm.sampler not in ('independent', 'tree') or arm.mc not in ('', 'steps', 'spo'):
      raise runs.ConfigError(f'arms.{name}: sampler independent|tree, mc ""|steps|spo.')
    if arm.sampler == 'tree' and arm.mc:
      raise runs.ConfigError(f'arms.{name}: a tree arm takes no MC values.')
  for i, name in enumerate(config.run_arms):
    ref = config.arms[name].token_budget
    if ref and ref not in config.run_arms[:i]:
      raise runs.ConfigError(f'arms.{name}.token_budget must name an arm run before it.')


def step_auc_metrics(task):
  """`metrics_fn(ctx, traj, targets)`: the step-error AUC of the advantages (see above)."""
  k = task.num_steps

  def metrics_fn(ctx, traj, targets):
    del traj
    ok = task.step_correct(ctx.responses, ctx.mask, ctx.batch)[:, :k] > 0.5
    ids = ctx.steps.step_ids
    adv = ops.to_steps(targets.advantages, ids, k, reduce='mean', mask=ctx.mask)
    present = ops.to_steps(targets.advantages, ids, k, reduce='count', mask=ctx.mask) > 0
    wrong = ~jnp.all(ok | ~present, axis=1)
    first = jnp.argmin(ok | ~present, axis=1)
    idx = jnp.arange(k)[None, :]
    pos = (wrong[:, None] & (idx == first[:, None]) & present).ravel()
    neg = (wrong[:, None] & (idx < first[:, None]) & present).ravel()
    s = -adv.ravel()
    win = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
    num = jnp.sum(jnp.where(pos[:, None] & neg[None, :], win, 0.0))
    den = jnp.sum(pos) * jnp.sum(neg)
    return dict(step_error_auc=jnp.where(den > 0, num / jnp.maximum(den, 1), jnp.nan))

  return metrics_fn


def _tree_tokens_host():
  def fill(params, data, key):
    del params, key
    return {}, dict(generated_iter=tree_lm.generated_tokens(data))

  return host_lib.HostProvider((), fill, needs_key=False)


class Arm:
  """The jitted pieces of one arm (shared by its seeds)."""

  def __init__(self, name, config, task, policy):
    self.name, self.cfg = name, config.arms[name]
    rl = config.rl
    self.est = estimators.from_config(
      dict(
        estimator=self.cfg.estimator,
        prob_threshold=config.spo.prob_threshold,
        cut_interval=config.spo.cut_interval,
      )
    )
    self.tx = train_lib.make_optimizer(config.optim)
    providers, hosts, collect, score_fn = {}, (), None, None
    if self.cfg.mc == 'spo':
      providers['loss_mask'] = providers_lib.loss_mask_provider(config.spo.prob_threshold)
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
    if self.cfg.sampler == 'tree':
      collect = tree_lm.make_tree_collect(
        policy,
        task,
        branching=tuple(config.tree.branching),
        segment_len=tuple(config.tree.segment_len),
        temperature=rl.temperature,
        branch_at=config.tree.branch_at,
        sep_id=task.vocab.step_id if config.tree.branch_at == 'step' else None,
      )
      score_fn = rollout_lib.make_score_fn(policy, task.prompt_len, rl.temperature)
      hosts = (_tree_tokens_host(),)
    phases = lm.make_rl_phases(
      policy,
      task,
      self.est,
      self.tx,
      group_size=rl.group_size,
      num_epochs=rl.num_epochs,
      num_minibatches=rl.num_minibatches,
      temperature=rl.temperature,
      loss_cfg=config.loss,
      providers=providers,
      host_fields=host_lib.host_fields(hosts),
      metrics_fn=step_auc_metrics(task),
      collect=collect,
      score_fn=score_fn,
    )
    inner = host_lib.make_iteration(
      phases, hosts, hparams=jax.tree.map(jnp.asarray, self.est.hparams)
    )

    def step(state, batch, key):  # a tree's sampled tokens count shared prefixes once
      state, m, stats, tokens, timing = inner(state, batch, key)
      return state, m, stats, stats.pop('generated_iter', tokens), timing

    step.compile_s = inner.compile_s
    self.step = step

  def steps(self):
    init = lambda p0, seed: lm.init_from_params(p0, self.tx)  # noqa: E731
    return loop.ArmSteps(self.name, init, self.step, phased=True)


def summarize(records, seeds, arms):
  """{(arm, seed): the equal-token readings, costs and the step-error AUC of one run}."""
  by = ra.by_run(records, arms, seeds)
  out = {}
  for s in seeds:
    t_eq = ra.equal_budget(by, s, 'tokens')
    for a in arms:
      recs = by[(a, s)]
      its = [r for r in recs if r['iteration'] > 0]
      aucs = [r['step_error_auc'] for r in its if np.isfinite(r.get('step_error_auc', np.nan))]
      pts = [(r['tokens'], r['eval_exact_match']) for r in recs if 'eval_exact_match' in r]
      out[(a, s)] = dict(
        iters=recs[-1]['iteration'],
        tokens=recs[-1]['tokens'],
        tokens_per_iter=recs[-1]['tokens'] / max(recs[-1]['iteration'], 1),
        mc_tokens=recs[-1]['mc_tokens'],
        wall=recs[-1]['wall'],
        warm=recs[0]['eval_exact_match'],
        final=recs[-1]['eval_exact_match'],
        acc_equal_tokens=report.value_at(recs, 'tokens', t_eq),
        auc_tokens=report.curve_auc([x for x, _ in pts], [y for _, y in pts], t_eq),
        step_auc=float(np.mean(aucs)) if aucs else float('nan'),
        equal_tokens=t_eq,
      )
  return out


COLUMNS = (
  ra.Column('final greedy exact match', 'final', pct=True),
  ra.Column('exact match @ equal generated tokens', 'acc_equal_tokens', pct=True),
  ra.Column('AUC vs generated tokens', 'auc_tokens', pct=True),
  ra.Column('step-error AUC of the advantages', 'step_auc', digits=3),
)
COSTS = (
  ra.Column('iterations', 'iters', digits=0, fold='seeds'),
  ra.Column('generated tokens (policy + MC)', 'tokens', digits=0, fold='seeds'),
  ra.Column('tokens / iteration', 'tokens_per_iter', digits=0, fold='seeds'),
  ra.Column('MC tokens', 'mc_tokens', digits=0, fold='seeds'),
  ra.Column('training wall s', 'wall', digits=0, fold='seeds'),
)


def _verdict(claim, rule, ok, refuted, numbers):
  if all(ok):
    outcome, note = 'CONFIRMED', ''
  elif all(refuted):
    outcome, note = 'REFUTED', ''
  else:
    outcome, note = 'INCONCLUSIVE', 'seeds disagree'
  return report.Verdict(claim, outcome, rule, numbers, note)


def expected_vs_observed(summary, seeds, arms, smoke=False, baseline='grpo'):
  """The two claims of the issue by rule, behind the GRPO gate."""
  claims = []
  get = lambda a, k: [summary[(a, s)][k] for s in seeds]  # noqa: E731
  if {'spo_tree', 'grpo'} <= set(arms):
    t, g = get('spo_tree', 'step_auc'), get('grpo', 'step_auc')
    tt, gt = get('spo_tree', 'tokens_per_iter'), get('grpo', 'tokens_per_iter')
    numbers = {'seeds': list(seeds)}
    for a in arms:
      numbers[f'{a} step-error AUC'] = get(a, 'step_auc')
      numbers[f'{a} tokens/iteration'] = get(a, 'tokens_per_iter')
    claims.append(
      _verdict(
        '"Tree sampling yields more informative step credit per generated token"',
        'confirmed if SPO-tree step-error AUC > GRPO in every seed at no more tokens per '
        'iteration; refuted if <= GRPO in every seed',
        [a > b and x <= y for a, b, x, y in zip(t, g, tt, gt)],
        [a <= b for a, b in zip(t, g)],
        numbers,
      )
    )
  if {'spo_tree', 'spo_chain_k9', 'grpo'} <= set(arms):
    t, c, g = (get(a, 'acc_equal_tokens') for a in ('spo_tree', 'spo_chain_k9', 'grpo'))
    claims.append(
      _verdict(
        '"Learns faster per token: SPO-tree > SPO-chain >= GRPO"',
        'held-out exact match at equal generated tokens; confirmed if SPO-tree > SPO-chain '
        '>= GRPO in every seed; refuted if GRPO >= SPO-tree in every seed',
        [a > b >= d for a, b, d in zip(t, c, g)],
        [d >= a for a, d in zip(t, g)],
        {
          'seeds': list(seeds),
          **{f'{a} % @ equal tokens': [100 * v for v in get(a, 'acc_equal_tokens')] for a in arms},
        },
      )
    )
  warm = {k: r['warm'] for k, r in summary.items()}
  final = {k: r['final'] for k, r in summary.items()}
  gate = report.arm_gate(final, warm, seeds, arms, baseline)
  return report.expected_vs_observed(claims, gate, smoke)


PANELS = tuple(
  ra.Panel(x, 'eval_exact_match', label, 'held-out greedy exact match')
  for x, label in (('tokens', 'generated tokens (policy + MC)'), ('iteration', 'iteration'))
) + (ra.Panel('tokens', 'step_error_auc', 'generated tokens', 'step-error AUC', smooth=5),)


def run(config, workdir):
  t_start, load_start = time.time(), bench.load_average()
  task = tasks.make(config.task.name, **{k: v for k, v in config.task.items() if k != 'name'})
  pcfg = ml_collections.ConfigDict(config.policy.to_dict())
  policy = transformer.make_policy(pcfg, vocab_size=task.vocab.size)
  params0, ws_info, train, test, evaluate = warmstart.start(config, task, policy, workdir)
  arms, seeds = list(config.run_arms), list(config.seeds)
  built = {a: Arm(a, config, task, policy) for a in arms}
  finals = {}

  def run_one(a, s):
    ref = config.arms[a].token_budget
    budget = loop.budget(config.rl)
    if ref:
      budget.update(iterations=config.rl.max_iterations, max_tokens=finals[(ref, s)])
    recs, _, _ = loop.run_arm(
      built[a].steps(),
      params0,
      s,
      train,
      test,
      evaluate,
      **budget,
      counters=('policy_tokens', 'mc_tokens'),
    )
    finals[(a, s)] = recs[-1]['tokens']
    return recs

  records = loop.run_grid(os.path.join(workdir, 'metrics.jsonl'), arms, seeds, run_one, ra.run_note)
  summary = summarize(records, seeds, arms)
  ra.curves_figure(
    os.path.join(workdir, 'f_tree_credit.png'),
    ra.by_run(records, arms, seeds),
    arms,
    seeds,
    PANELS,
    title='tree credit: accuracy vs generated tokens and iteration; step-error AUC',
  )
  header = ra.run_header(
    ra.command_line(f'experiments.{NAME}'),
    runs.git_commit(),
    platform=jax.devices()[0].platform,
    load_start=load_start,
    load_end=bench.load_average(),
    total_s=time.time() - t_start,
    compiles={a: built[a].step.compile_s() for a in arms},
  )
  tr = config.tree
  intro = f"""{header}

Setting: K={config.task.num_steps} chains, M={config.task.modulus}, invertible ops; policy
{config.policy.depth} layers, d={config.policy.width}; warm start:
{warmstart.describe(config, ws_info)}. Every arm: {config.rl.prompts} prompts per iteration,
PPO-clip {config.loss.clip_eps}, {config.rl.num_epochs} epochs x {config.rl.num_minibatches}
minibatches, Adam {config.optim.lr}, entropy bonus {config.loss.ent_coef}, no KL. Independent
arms sample G={config.rl.group_size} per prompt; tree arms one tree per prompt, branching
{tuple(tr.branching)}, {tuple(tr.segment_len)} tokens per level, branch points '{tr.branch_at}'
(`tree_sampling.sample_tree`). Budget: grpo and the noise floor run {config.rl.iterations}
iterations; the other arms until their generated tokens (policy + MC; a tree's shared prefixes
once) reach GRPO's final count of the seed (at most {config.rl.max_iterations} iterations).
Seeds: {seeds}. Step-error AUC: per iteration, on the arm's own batch, the first wrong step
of each wrong response (verifier) vs the correct steps before it, scored by -A (mean over the
step's tokens), ties half; averaged over iterations. These labels are the sign of the MC
oracle's step credit A* = V(after) - V(before): with invertible operations a wrong
intermediate value fixes a wrong answer unless a later error cancels it, so V drops at the
first wrong step (A* < 0) and cannot drop at a correct one (A* >= 0); the verifier reads them
without the oracle's completions.
"""
  body = f"""Accuracies (%) and AUCs, mean ± sd [bootstrap 95% CI over seeds], then per seed (equal
generated tokens: per seed, the smallest final count over the arms but the noise floor):

{ra.metric_table(summary, arms, seeds, COLUMNS)}

Costs, mean over seeds (per seed in brackets):

{ra.seed_table(summary, arms, seeds, COSTS)}

![curves](f_tree_credit.png)
"""
  expected = expected_vs_observed(summary, seeds, arms, config.get('smoke', False), config.baseline)
  ra.write_markdown(
    os.path.join(workdir, 'results.md'),
    'tree_credit: tree rollouts + tree credit vs GRPO, SPO-chain, VinePPO at equal tokens',
    [
      intro,
      ('Learning runs', body),
      ('Expected vs observed', expected + '\n\nSettings tried: this configuration only.'),
    ],
  )
  finals_mean = {a: float(np.mean([summary[(a, s)]['final'] for s in seeds])) for a in arms}
  return ra.summary_line(
    NAME,
    ws_info['exact_match'],
    finals_mean,
    time.time() - t_start,
    os.path.join(workdir, 'results.md'),
    seeds=len(seeds),
  )


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
