"""Turn-level credit for a tool-using agent: MatchTIR's matched turn rewards vs outcome-only GRPO.

Commands, arms and settings: configs/tool_credit.py. Composition only: the ToolArith task
(`jaxca.tasks.tool_arith`, a `TokenEnv`) in the jitted multi-turn rollout
(`jaxca.lm.multiturn`) through the one LM learner (`lm.make_rl_update`); an arm is its
estimator (`grpo`, `matchtir`, `turn_gae | whiten`, `shuffled_reward`) and its `turn_rewards`
provider (the environment's per-turn rewards, plus the matched tool-call rewards of
`credit.turns` with the hard or soft assignment). Every arm x seed starts from one warm start
(`warm_start`: SFT on noisy scripted demonstrations, `tool_arith.noisy_reference_policy`, until
validation greedy accuracy reaches `warmstart.stop_at`, cached in `<workdir>/warmstart` under a
key; as MatchTIR starts from a model that already calls tools, and the GiGPO reproduction from
noisy-BFS demonstrations) and runs with `jaxca.loop.run_arm` (the same batches and keys for
every arm of a seed); each arm's update is compiled ahead of time once and shared by its seeds.
The claims are judged by rule behind the baseline gate (`jaxca.report`; summaries and
results.md: `tool_credit_report`). Not resumable (the warm start is reused).

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

from experiments import tool_credit_report as report_lib
from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import warmstart
from jaxca.lm import multiturn
from jaxca.networks import transformer
from jaxca.tasks import tool_arith

NAME = 'tool_credit'
verdict = report_lib.verdict  # the claims and the gate, judged by rule
ASSIGNMENTS = (None, 'km', 'greedy', 'ot')
CREDIT_KEYS = ('gamma', 'lambda_', 'eps')  # config.credit keys that are estimator options


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
  d = config.data
  if not 1 <= d.num_val < d.num_train or rl.prompts > d.num_train - d.num_val:
    raise runs.ConfigError(
      'config.data: need 1 <= num_val < num_train and rl.prompts <= num_train - num_val; got '
      f'num_val={d.num_val}, num_train={d.num_train}, prompts={rl.prompts}.'
    )
  ws = config.get('warmstart')
  if ws is not None:
    if not 0.0 <= ws.p_opt <= 1.0:
      raise runs.ConfigError(f'config.warmstart.p_opt must be in [0, 1]; got {ws.p_opt}.')
    if min(ws.num_demos, ws.batch_size, ws.max_steps, ws.eval_every) < 1:
      raise runs.ConfigError(
        'config.warmstart.num_demos, batch_size, max_steps and eval_every must be >= 1.'
      )
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

    self.evaluate = make_evaluate(policy, env)

  def init(self, params0, seed):
    """The warm start `params0` (a value head, absent from it, fresh), else a random init."""
    fresh = self.policy.init(jax.random.key(seed))
    params = fresh if params0 is None else lm.merge_params(fresh, params0)
    return lm.init_from_params(params, self.tx)


def make_evaluate(policy, env):
  """`evaluate(params, tasks) -> {metric: float}`: greedy accuracy, call precision, recall, F1
  and calls per problem, jitted once."""

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

  return lambda params, tasks: {k: float(v) for k, v in evaluate(params, tasks).items()}


def make_splits(config, env):
  """(train, validation, test): the training split less its last `data.num_val` problems (the
  warm start's validation, never trained on), and the held-out test problems."""
  d = config.data
  train, test = tool_arith.make_splits(env, d.num_train, d.num_test, d.seed)
  n = d.num_train - d.num_val
  return {k: v[:n] for k, v in train.items()}, {k: v[n:] for k, v in train.items()}, test


def warm_start(config, env, train, validation, workdir):
  """SFT on noisy scripted demonstrations until validation greedy accuracy reaches `stop_at`.

  Demonstrations: `warmstart.num_demos` episodes of `tool_arith.noisy_reference_policy(p_opt)`
  on training problems, in the rollout's token layout (`multiturn.scripted_rollout`); the loss
  is the action-masked cross-entropy on their action tokens (`multiturn.make_sft_loss`), Adam
  with gradient clipping 1.0; the loop and the stop are `warmstart.sft_with_progress`. The
  cache (`warmstart.cached`) is keyed by the env, policy, warmstart and data sections and a
  digest of the demonstrations and validation problems.

  Returns:
    (params, info): info holds `steps`, `validation_accuracy`, `validation_calls`,
    `demo_accuracy`, `demo_calls`, `seconds`, `curve` and the `key`.
  """
  ws = config.warmstart
  pcfg = ml_collections.ConfigDict(dict(config.policy.to_dict(), value_head=False))
  policy = transformer.make_policy(pcfg, vocab_size=env.vocab_size)
  rng = np.random.default_rng(config.data.seed + 1)
  idx = rng.integers(0, len(train['x0']), ws.num_demos)
  demo_tasks = {k: jnp.asarray(v[idx]) for k, v in train.items()}
  act = tool_arith.noisy_reference_policy(env, ws.p_opt)
  key = jax.random.key(config.data.seed)
  demos = jax.jit(lambda k, t: multiturn.scripted_rollout(env, k, t, act))(
    jax.random.fold_in(key, 1), demo_tasks
  )
  data = dict(tokens=demos.tokens, valid=demos.valid, mask=demos.mask)
  val = jax.tree.map(jnp.asarray, validation)
  section = lambda c: json.loads(c.to_json_best_effort())  # noqa: E731
  sections = dict(
    env=section(config.env), policy=section(config.policy), warmstart=section(ws),
    data=section(config.data),
    digest=warmstart.digest({k: np.asarray(v) for k, v in data.items()}, validation),
  )  # fmt: skip
  evaluate = make_evaluate(policy, env)

  def train_fn():
    t0 = time.time()
    params, step, curve = warmstart.sft_minibatches(
      multiturn.make_sft_loss(policy, env), policy.init(jax.random.fold_in(key, 2)), data,
      lr=ws.lr, batch_size=ws.batch_size, rng=rng,
      validate=lambda p: {'val_accuracy': evaluate(p, val)['accuracy']},
      max_steps=ws.max_steps, eval_every=ws.eval_every, stop_at=ws.stop_at,
      metric='val_accuracy', postfix=lambda e: dict(val=f'{e["val_accuracy"]:.2f}'),
    )  # fmt: skip
    final = evaluate(params, val)
    calls = tool_arith.call_metrics(env, demo_tasks, demos.actions, demos.active)[0]
    info = dict(
      steps=step, validation_accuracy=final['accuracy'], validation_calls=final['calls'],
      demo_accuracy=float(jnp.mean(jnp.any(demos.rewards > 0.5, -1))),
      demo_calls=float(jnp.mean(calls)), seconds=time.time() - t0, curve=curve,
    )  # fmt: skip
    runs.note(
      f'warm start: {step} steps, validation greedy accuracy {final["accuracy"]:.3f}, '
      f'{final["calls"]:.2f} calls per problem (demonstrations solve {info["demo_accuracy"]:.3f}'
      f'; {info["seconds"]:.0f} s)'
    )
    return params, info

  reused = lambda i: (  # noqa: E731
    f'warm start: reused ({i["steps"]} steps, validation accuracy {i["validation_accuracy"]:.3f})'
  )
  return warmstart.cached(workdir, sections, train_fn, reused, 'validation_greedy_accuracy')


def run_arm(config, arm, seed, params0, train, test):
  steps = loop.ArmSteps(arm.name, arm.init, arm.update, phased=False, hparams=arm.hparams)
  records, _, _ = loop.run_arm(
    steps, params0, seed, train, test, arm.evaluate, primary='accuracy', **loop.budget(config.rl)
  )
  return records


# ----------------------------------------------------------------------------- run


def run(config, workdir):
  """Every arm x seed from the warm start; writes metrics.jsonl, results.md and curves.png."""
  t_start, load_start = time.time(), bench.load_average()
  env = make_env(config)
  seeds, arms = list(config.seeds), list(config.run_arms)
  train, validation, test = make_splits(config, env)
  test = jax.tree.map(jnp.asarray, test)
  params0, ws_info = None, None
  if config.get('warmstart') is not None:
    params0, ws_info = warm_start(config, env, train, validation, workdir)
  built = {a: Arm(a, config, env) for a in arms}
  records = loop.run_grid(
    os.path.join(workdir, 'metrics.jsonl'),
    arms,
    seeds,
    lambda a, s: run_arm(config, built[a], s, params0, train, test),
    note=lambda recs: ra.run_note(recs, unit='steps', key='eval_accuracy'),
  )
  summary = report_lib.summarize(records, seeds, arms)
  labels = {a: config.arms[a].label for a in arms}
  ra.curves_figure(
    os.path.join(workdir, 'curves.png'), ra.by_run(records, arms, seeds), arms, seeds,
    report_lib.PANELS,
    labels=labels, title='ToolArith: turn-level credit (solid: first seed)',
  )  # fmt: skip
  times = dict(total_s=time.time() - t_start, load_start=load_start, load_end=bench.load_average())
  platform = jax.devices()[0].platform
  report_lib.write_results(config, workdir, summary, times, platform, ws_info)
  finals = ra.arm_means(summary, arms, seeds, 'final')
  line = ', '.join(f'{a} {report_lib.pct(v)}%' for a, v in finals.items())
  return (
    f'{NAME}: final held-out accuracy (mean of {len(seeds)} seed(s)): {line}; '
    f'{times["total_s"]:.0f} s; results in {os.path.join(workdir, "results.md")}'
  )


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
