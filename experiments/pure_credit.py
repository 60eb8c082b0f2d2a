"""PURE (arXiv 2504.15275): sum-form PRM credit is reward-hacked, min-form is not.

Commands and what to expect: configs/pure_credit.py. One process: a shared
supervised warm start on arithmetic chains with filler steps (`THINK ;`), then
every arm x seed of PPO-clip from it with the `pure` estimator stage; the arm
(PRM variant, transform, baseline, PRM / VR / KL coefficients, separator mask,
shuffled VR for the noise floor) is a set of traced arrays, so the RL chunk
compiles once per PRM variant, and an arm's seeds run batched (vmap) in one call.
Every default run holds the VR-only baseline and the shuffled-reward noise floor:
the claims are judged behind `jaxca.report.gate` (UNTESTABLE when the baseline does
not learn in every seed). The scripted PRM (`jaxca.prm`)
rewards a filler step (+f) above a correct value step (+c), so a learner that
sums step rewards gains by writing fillers; min-form credit sees only the worst
step. PURE's traced probes (PRM and step-kind metrics, the THINK probe):
`pure_credit_probe`; statistics, the H1-H4 rules, figures and results.md:
`pure_credit_report`. Where runs write, config drift, errors and the closing line: `jaxca.runs`.
"""

import collections
import os
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import pure_credit as config_mod
from experiments import pure_credit_probe as probe_lib
from experiments import pure_credit_report as report_lib
from jaxca import arms as arms_lib
from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import metrics
from jaxca import prm as prm_lib
from jaxca import runs
from jaxca import tasks
from jaxca import train as train_lib
from jaxca import warmstart
from jaxca.networks import transformer

FLAGS = flags.FLAGS
NAME = 'pure_credit'
SAFE_KEYS = ()
BATCH_KEYS = ('prompts', 'targets', 'answers', 'intermediates', 'index')
TRANSFORMS = estimators.pure.PURE_TRANSFORMS
BASELINES = estimators.pure.PURE_BASELINES


def define_flags():
  runs.define_flags(NAME)


def validate(config):
  """Raises `runs.ConfigError` on a config that cannot run (before anything is written)."""
  unknown = [a for a in config.arms if a not in config_mod.ARMS]
  if unknown:
    raise runs.ConfigError(f'Unknown arm(s) {unknown}; known: {sorted(config_mod.ARMS)}.')
  if not config.seeds:
    raise runs.ConfigError('config.seeds is empty.')
  rl, ws = config.rl, config.warmstart
  if rl.iterations % rl.iters_per_call or config.eval.every % rl.iters_per_call:
    raise runs.ConfigError('rl.iterations and eval.every must be multiples of rl.iters_per_call.')
  if ws.eval_every % ws.steps_per_call:
    raise runs.ConfigError('warmstart.eval_every must be a multiple of warmstart.steps_per_call.')
  if (rl.prompts_per_iter * rl.group_size) % rl.num_minibatches:
    raise runs.ConfigError('rl.num_minibatches must divide prompts_per_iter * group_size.')
  if rl.group_size < 2:
    raise runs.ConfigError('rl.group_size must be >= 2 (RLOO baselines).')
  task = make_task(config)
  if task.prompt_len + task.response_len > config.policy.max_len:
    raise runs.ConfigError(
      f'policy.max_len {config.policy.max_len} < prompt + response '
      f'{task.prompt_len + task.response_len}.'
    )


def make_task(config):
  try:
    return tasks.make('arith', **{k: v for k, v in config.task.items() if k != 'name'})
  except ValueError as e:
    raise runs.ConfigError(f'config.task: {e}') from None


def arm_hparams(estimator, arm: dict, config):
  """The traced hyper-parameters of one arm (structure of `estimator.hparams`)."""
  hp = jax.tree.map(np.asarray, estimator.hparams)
  term = dict(hp['terms'][0])
  term.update(
    transform_id=np.float32(TRANSFORMS.index(arm['transform'])),
    baseline_id=np.float32(BASELINES.index(arm['baseline'])),
    prm_coef=np.float32(arm['prm_coef']),
    vr_coef=np.float32(config.credit.vr_coef if arm['vr'] > 0 else 0.0),
    vr_all=np.float32(arm['vr'] >= 1.0),
    mask_separators=np.float32(arm.get('mask', config.credit.mask_separators)),
    shuffle_vr=np.float32(arm.get('shuffle', False)),
  )
  return dict(hp, terms=(term,))


# ----------------------------------------------------------------------------- build


Parts = collections.namedtuple(
  'Parts', 'task policy estimator prms sft_init sft_update rl_init rl_update evaluate probe'
)


def build(config):
  """Composition only: no jit, no I/O."""
  task = make_task(config)
  policy = transformer.make_policy(
    ml_collections.ConfigDict(dict(config.policy, value_head=False)), vocab_size=task.vocab.size
  )
  estimator = estimators.make(
    'pure | whiten',
    temperature=config.credit.temperature,
    kl_coef=config.credit.kl_coef,
    mask_separators=config.credit.mask_separators,
    skip_zeros=True,
  )
  p = config.prm
  prms = {
    v: prm_lib.scripted_prm(
      task, c=p.c, w=p.w, f=p.f, blind_first=v == 'B', noise=p.noise, noise_sigma=p.noise_sigma
    )
    for v in ('A', 'B')
  }
  sft_tx = train_lib.make_optimizer(dict(name='adam', lr=config.warmstart.lr, max_grad_norm=1.0))
  rl_tx = train_lib.make_optimizer(config.optim)
  providers = {
    'vr_reference': lambda ctx: dict(vr_reference=(ctx.batch['index'] % 10 == 0)),
  }
  rl_update = {}
  for v, prm in prms.items():
    rl_update[v] = lm.make_rl_update(
      policy,
      task,
      estimator,
      rl_tx,
      **arms_lib.learner_options(config.rl),
      reward='outcome',
      loss_cfg=config.loss,
      providers=dict(providers, step_rewards=prm_lib.provider(prm)),
      metrics_fn=probe_lib.make_metrics_fn(task),
    )
  sample = lm.make_sampler(policy, task)
  return Parts(
    task,
    policy,
    estimator,
    prms,
    lm.make_init(policy, sft_tx),
    lm.make_sft_update(policy, task, sft_tx),
    lambda params: lm.init_from_params(params, rl_tx, with_ref=True),
    rl_update,
    probe_lib.make_evaluate(task, sample, prms['B']),
    probe_lib.make_think_probe(task, sample),
  )


# ----------------------------------------------------------------------------- data


def make_data(task, config):
  """Host side: fixed train / validation / test problems, disjoint by problem.

  index = train position, for the VR subset. The validation problems (where the warm
  start's stop is judged) are carved out of the train side by problem hash
  (`jaxca.tasks.arith.split_names`); train draws none of them, test is unchanged.
  """
  vf = float(config.data.validation_fraction)
  train = task.generate(
    np.random.default_rng([config.seed, 0]),
    config.data.num_train,
    split='train',
    validation_fraction=vf,
  )
  train['index'] = np.arange(config.data.num_train, dtype=np.int32)
  test = task.generate(
    np.random.default_rng([config.seed, 1]), config.data.num_test, split='test', distinct=True
  )
  test['index'] = np.full(config.data.num_test, -1, np.int32)  # no test row has a reference
  val = task.generate(
    np.random.default_rng([config.seed, 2]),
    config.data.num_validation,
    split='validation',
    validation_fraction=vf,
    distinct=True,
  )
  val['index'] = np.full(config.data.num_validation, -1, np.int32)
  return train, val, test


# ----------------------------------------------------------------------------- run


def run(config, workdir):
  """Warm start, then every arm x seed; writes metrics.jsonl, results.md and figures."""
  start = time.time()
  load_start = bench.load_average()
  parts = build(config)
  train, val, test = make_data(parts.task, config)
  test_b = {k: jnp.asarray(v) for k, v in test.items() if k in BATCH_KEYS}
  val_b = {k: jnp.asarray(v) for k, v in val.items() if k in BATCH_KEYS}
  writer = metrics.Writer(workdir, tensorboard=False)
  evaluate = jax.jit(parts.evaluate)
  run_eval = lambda p: {k: float(v) for k, v in jax.device_get(evaluate(p, test_b)).items()}  # noqa: E731

  # Warm start: jaxca.warmstart.sft_loop, stopped on VALIDATION greedy accuracy.
  ws = config.warmstart
  sft_chunk = jax.jit(lambda s, b: jax.lax.scan(parts.sft_update, s, b))
  state = jax.jit(parts.sft_init)(jax.random.key(config.seed))
  t0 = time.time()
  n_chunks = ws.max_steps // ws.steps_per_call
  chunks = loop.seed_batches(
    train, ('prompts', 'targets'), ws.batch_size, config.seed + 1000, n_chunks, ws.steps_per_call
  )

  def on_eval(step, m, evaluation):
    writer.write(step, dict(phase='warmstart', loss=float(m['loss'][-1]), **evaluation))

  state, step, curve = warmstart.sft_with_progress(
    state,
    advance=lambda state, step: sft_chunk(state, next(chunks)),
    # validation decides the stop; the held-out metrics are recorded
    validate=lambda p: dict(val_accuracy=float(evaluate(p, val_b)['accuracy']), **run_eval(p)),
    max_steps=n_chunks * ws.steps_per_call,
    eval_every=ws.eval_every,
    stop_at=ws.target_low,
    steps_per_call=ws.steps_per_call,
    metric='val_accuracy',
    on_eval=on_eval,
  )
  warmstart.write_curve(workdir, curve, 'validation_final_answer')
  ws_params = state['params']
  ws_eval = run_eval(ws_params)
  probe_b = {k: jnp.asarray(v[: ws.think_probe_prompts]) for k, v in test.items()}
  probe = {k: float(v) for k, v in jax.device_get(
    jax.jit(parts.probe)(ws_params, probe_b, jax.random.key(7))).items()}  # fmt: skip
  ws_info = dict(
    steps=step,
    seconds=time.time() - t0,
    greedy_accuracy=ws_eval['accuracy'],
    exact_match=ws_eval['exact_match'],
    validation_accuracy=curve[-1][1] if curve else float('nan'),
    curve=curve,
    in_band=ws.target_low <= ws_eval['accuracy'] <= ws.target_high,
    sampled_think_per_response=probe['think_per_response'],
    sampled_accuracy=probe['accuracy'],
    think_ok=probe['think_per_response'] >= 0.1,
  )
  runs.note(
    f'warm start: {step} steps, greedy accuracy {ws_eval["accuracy"]:.3f}, sampled THINK/response '
    f'{probe["think_per_response"]:.3f} ({"ok" if ws_info["think_ok"] else "BELOW 0.1"})'
  )

  # RL: every arm from the warm start, its seeds batched (vmap) in one program; one jitted
  # chunk per PRM variant, the arm's choices traced.
  rl, seeds = config.rl, list(config.seeds)
  per_call = rl.iters_per_call
  chunks = {v: loop.seeds_chunk(u) for v, u in parts.rl_update.items()}
  rl_init = jax.jit(parts.rl_init)
  seed_keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(config.seed), 100 + s))(
    jnp.asarray(seeds, jnp.int32)
  )
  greedy = report_lib.make_greedy(parts)
  compile_s = {}
  rows, walls = [], {}
  for arm_name in config.arms:
    arm = config_mod.ARMS[arm_name]
    hp = arm_hparams(parts.estimator, arm, config)
    state = rl_init(ws_params)
    state = jax.tree.map(lambda x: jnp.stack([x] * len(seeds)), state)
    fresh = arm['prm'] not in compile_s  # this arm's first chunk compiles
    t_arm = time.time()
    per_seed = [
      loop.seed_batches(
        train, BATCH_KEYS, rl.prompts_per_iter, 10_000 + seed, rl.iterations // per_call, per_call
      )
      for seed in seeds
    ]
    state, recs, first_s = loop.run_seeds_batched(
      chunks[arm['prm']], state, per_seed, seed_keys, hp, name=arm_name, seeds=seeds,
      iterations=rl.iterations, per_call=per_call, eval_every=config.eval.every,
      run_eval=run_eval, write=writer.write, evaluation0=ws_eval,
    )  # fmt: skip
    rows += recs
    if fresh:
      compile_s[arm['prm']] = first_s
    wall = time.time() - t_arm
    for seed in seeds:
      walls[(arm_name, seed)] = wall  # the arm's seeds run together
    per_it = (wall - (compile_s[arm['prm']] if fresh else 0.0)) / rl.iterations
    runs.note(
      f'{arm_name} ({len(seeds)} seeds batched): {rl.iterations} iterations in {wall:.0f} s '
      f'({per_it:.2f} s/iteration for all seeds, incl. evaluation, compile excluded); compile '
      f'{compile_s.get(arm["prm"], 0.0):.0f} s'
    )
    if not config.smoke:
      for j, seed in enumerate(seeds):
        params = jax.tree.map(lambda x, j=j: x[j], state['params'])
        report_lib.write_samples(workdir, parts, greedy, params, test_b, arm_name, seed)
  writer.close()
  info = dict(
    warmstart=ws_info,
    compile_s=compile_s,
    wall_s=time.time() - start,
    load_start=load_start,
    load_end=bench.load_average(),
    commit=runs.git_commit(),
    cpu=platform.processor() or platform.machine(),
    cpus=os.cpu_count(),
  )
  return report_lib.write_results(workdir, config, rows, walls, info)


def _setup():
  jax.config.update('jax_threefry_partitionable', True)


EXPERIMENT = runs.Experiment(NAME, run, validate=validate, safe_keys=SAFE_KEYS, setup=_setup)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
