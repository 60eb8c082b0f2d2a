"""RL with verifiable rewards on arithmetic chains: warm start, then PPO with an estimator.

Commands and expected results: configs/arith_rl.py.

Resume order (jaxca.checkpoint): (1) the latest RL checkpoint in the workdir;
(2) else the warm start -- resumed from checkpoints/warmstart, or taken from
`config.init_from` (params only); (3) else a fresh init. Randomness is
fold_in(key, step), data batches are a function of (seed, step), so a resumed
run computes what an uninterrupted one would. Where runs write, how a changed
config is treated on resume (only `SAFE_KEYS` may change), errors and the closing
summary: `jaxca.runs`.
"""

import collections
import contextlib
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from jaxca import checkpoint
from jaxca import config_lib
from jaxca import data
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import metrics
from jaxca import parallel
from jaxca import report
from jaxca import runs
from jaxca import tasks
from jaxca import train as train_lib
from jaxca import warmstart
from jaxca.networks import transformer

FLAGS = flags.FLAGS


NAME = 'arith_rl'
# Keys that may differ when a workdir is resumed: they change how long the run is and
# how often it evaluates / checkpoints, not what a step computes.
SAFE_KEYS = ('rl.steps', 'eval.every', 'train.ckpt_every', 'train.max_to_keep')
# Keys that change the shapes of the checkpointed state (refused on resume even with
# --allow_config_change; any other shape change is caught when the checkpoint is restored).
SHAPE_KEYS = ('task.', 'policy.width', 'policy.depth', 'policy.num_heads', 'policy.max_len')


def validate(config, device_count=None):
  """Each section by its component (the learner's `lm.validate_sections`, the warm start's
  `warmstart.validate_chunked`), then what spans sections (`config_lib.validate`)."""
  checks = (lm.validate_sections, warmstart.validate_chunked)
  return config_lib.validate(config, device_count, sections=checks)


def define_flags():
  """Defined only when run as a script, so tests can import several experiments."""
  runs.define_flags(NAME)
  flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first (multi-host).')
  flags.DEFINE_list(
    'compare',
    None,
    f'Workdirs to compare: table + plot into --workdir (default runs/{NAME}_compare).',
  )


Parts = collections.namedtuple(
  'Parts', 'task policy estimator sft_init sft_update rl_init rl_update evaluate rl_phases'
)
BATCH_KEYS = ('prompts', 'targets', 'answers', 'intermediates')


def build(config):
  """Composition only: no jit, no devices, no I/O."""
  task = tasks.make(config.task.name, **{k: v for k, v in config.task.items() if k != 'name'})
  estimator = estimators.from_config(config.credit)
  pcfg = ml_collections.ConfigDict(config.policy.to_dict())
  pcfg.value_head = bool(config.policy.value_head or 'values' in estimator.requires)
  policy = transformer.make_policy(pcfg, vocab_size=task.vocab.size)
  sft_tx = train_lib.make_optimizer(config.warmstart.optim)
  rl_tx = train_lib.make_optimizer(config.optim)
  with_ref = config.loss.kl_coef > 0
  opts = lm.loss_options(config.loss)  # an adaptive KL coefficient lives in the RL state
  kl_state = opts.kl_coef if opts.kl_ctrl == 'adaptive' else None
  shaping = config.rl.get('reward_shaping')
  learner = dict(
    group_size=config.rl.group_size,
    num_epochs=config.rl.num_epochs,
    num_minibatches=config.rl.num_minibatches,
    temperature=config.rl.temperature,
    reward=config.rl.reward,
    loss_cfg=config.loss,
    reward_shaping=None if shaping is None else shaping.to_dict(),
  )
  rl_update = lm.make_rl_update(policy, task, estimator, rl_tx, **learner)
  # Dynamic sampling runs the two phases with the host loop `lm.collect_dynamic` between them.
  dynamic = config.rl.get('dynamic_sampling', False)
  rl_phases = lm.make_rl_phases(policy, task, estimator, rl_tx, **learner) if dynamic else None
  return Parts(
    task,
    policy,
    estimator,
    lm.make_init(policy, sft_tx),
    lm.make_sft_update(policy, task, sft_tx),
    lambda params: lm.init_from_params(params, rl_tx, with_ref=with_ref, kl_coef=kl_state),
    rl_update,
    lm.make_eval_fn(policy, task),
    rl_phases,
  )


def _chunks(source, batch_size, seed, start, per_call):
  it = data.batch_iterator(source, batch_size, seed=seed, start_step=start)
  while True:
    batches = [next(it) for _ in range(per_call)]
    yield {k: np.stack([b[k] for b in batches]) for k in BATCH_KEYS}


def train(config, workdir=None):
  """Warm start (or init_from), then RL; returns the final RL state (a dict of arrays)."""
  validate(config)
  with contextlib.ExitStack() as stack:
    data_dir = config.data.dir or (
      os.path.join(workdir, 'data')
      if workdir
      else stack.enter_context(tempfile.TemporaryDirectory(prefix='jaxca_data_'))
    )
    return _train(config, workdir, data_dir)


def _train(config, workdir, data_dir):
  start, cpu_start = time.time(), time.process_time()
  parts = build(config)
  mesh = parallel.make_mesh()
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh, batch_axis=1)
  src = data.load(
    parts.task.config,
    data_dir,
    num_train=config.data.num_train,
    num_test=config.data.num_test,
    validation_fraction=config.data.get('validation_fraction', 0.0),
    num_validation=config.data.get('num_validation', 0),
  )

  def fixed_batch(split, n):
    batch = data.get_batch(src[split], np.arange(n))
    return parallel.shard_batch({k: v for k, v in batch.items() if k in BATCH_KEYS}, mesh)

  test = fixed_batch('test', config.eval.num_prompts)
  # The warm start's stop is judged on the validation problems (disjoint from train and test).
  val = fixed_batch('validation', config.data.num_validation) if 'validation' in src else None
  key = jax.random.key(config.seed)
  nan_after = config.debug.nan_after_step

  def rl_chunk(state, batches, key):
    def body(s, b):
      s, m = parts.rl_update(s, b, jax.random.fold_in(key, s['step']))
      return _poison(s, nan_after), m

    return jax.lax.scan(body, state, batches)

  sft_chunk = jax.jit(
    lambda s, b: jax.lax.scan(parts.sft_update, s, b),
    in_shardings=(repl, batch_sh),
    out_shardings=repl,
    donate_argnums=0,
  )
  rl_chunk = jax.jit(
    rl_chunk, in_shardings=(repl, batch_sh, repl), out_shardings=repl, donate_argnums=0
  )
  evaluate = jax.jit(lambda p, b: lm.mean_metrics(parts.evaluate(p, b)), out_shardings=repl)
  evaluated = []  # non-empty once `evaluate` has compiled in this process

  def run_eval(params):
    evaluated.append(True)
    return {f'eval_{k}': float(v) for k, v in jax.device_get(evaluate(params, test)).items()}

  def run_val(params):  # the warm start's evaluations: validation (val_*) and held-out (eval_*)
    out = {} if val is None else {'val_exact_match': float(evaluate(params, val)['exact_match'])}
    return dict(out, **run_eval(params))

  ckdir = os.path.join(workdir, 'checkpoints') if workdir else None

  def new_ckpt(name):
    if not ckdir:
      return None
    tc = config.train
    return checkpoint.Checkpointer(
      os.path.join(ckdir, name), every=tc.ckpt_every, max_to_keep=tc.max_to_keep
    )

  rl_ckpt, ws_ckpt = new_ckpt('rl'), new_ckpt('warmstart')
  # Restored before anything is written (a checkpoint that cannot be read is skipped,
  # one with other shapes refused: checkpoint.Checkpointer.restore_latest).
  rl_state, rl_step = None, None
  if rl_ckpt:
    rl_abstract = jax.eval_shape(lambda: parts.rl_init(parts.policy.init(key)))
    rl_state, rl_step = rl_ckpt.restore_latest(rl_abstract, sharding=repl)
  ws_state, ws_step = None, ws_ckpt.latest_step() if ws_ckpt else None
  if ws_ckpt and rl_step is None and not config.init_from:
    ws_state, ws_step = ws_ckpt.restore_latest(jax.eval_shape(parts.sft_init, key), sharding=repl)
  runs.begin()  # setup succeeded: the run record may be written (jaxca.runs)
  # Records written after the checkpoint we resume from are dropped (and recomputed).
  if rl_step is not None:
    keep = lambda r: r['phase'] == 'warmstart' or r['step'] <= rl_step  # noqa: E731
  else:
    keep = lambda r: r['phase'] == 'warmstart' and r['step'] <= (ws_step or 0)  # noqa: E731
  writer, now = loop.resumed_writer(
    workdir, keep, dict(warmstart=(ws_step or 0) + 1, rl=(rl_step or -1) + 1), start, cpu_start
  )
  try:
    if rl_step is None:  # warm start (resumed or from init_from), then a fresh RL state
      if config.init_from:
        fresh = parts.policy.init(key)  # a value head missing from the warm start keeps it
        params = jax.device_put(warmstart.load_init_from(config.init_from, fresh), repl)
      else:
        params = _warm_start(
          config, parts, ws_ckpt, ws_state, ws_step, src, mesh, sft_chunk, run_val, repl, key,
          writer, now,
        )  # fmt: skip
      state = jax.jit(parts.rl_init, out_shardings=repl)(params)
      writer.write(0, dict(phase='rl', **now(), **run_eval(state['params'])))
      if rl_ckpt:
        rl_ckpt.maybe_save(0, state, force=True)
    else:
      state = rl_state
      if rl_step < config.rl.steps:
        runs.note(f'resumed RL from step {rl_step}')
    step, k = int(rl_step or 0), config.rl.steps_per_call
    rl_key = jax.random.fold_in(key, 1)
    if parts.rl_phases is not None:
      advance = _dynamic_iteration(config, parts, src, mesh, repl, batch_sh, rl_key, nan_after)
    else:
      batches = _chunks(src['train'], config.rl.prompts_per_step, config.seed + 1, step, k)

      def advance(state, step):
        del step  # the chunk reads it from the state
        state, m = rl_chunk(state, parallel.shard_batch(next(batches), mesh, 1), rl_key)
        return state, jax.device_get(m)

    state = loop.run_chunked(
      advance,
      state,
      step=step,
      steps=config.rl.steps,
      per_call=k,
      eval_every=config.eval.every,
      run_eval=run_eval,
      writer=writer,
      now=now,
      evaluated=lambda: bool(evaluated),
      checkpointer=rl_ckpt,
      desc=f'RL {parts.estimator.name}',
      postfix=progress_postfix,
    )
  finally:
    writer.close()
    for c in (rl_ckpt, ws_ckpt):
      if c:
        c.close()
  if workdir and jax.process_index() == 0:
    records = metrics.read(workdir)
    warmstart.write_curve(workdir, warmstart.curve_of(records))
    report.write_results(
      workdir,
      records,
      title=f'arith_rl: {parts.estimator.name} on {parts.task.config.name}',
      notes=f'Config: `{workdir}/config.json`. Times are wall-clock seconds '
      'from the start of the run (warm start included).',
    )
  return state


def progress_postfix(rec):
  """The RL progress bar's numbers: sampled accuracy and the latest held-out exact match."""
  em = rec.get('eval_exact_match')
  return dict(acc=f'{rec["accuracy"]:.2f}', em='-' if em is None else f'{em:.2f}')


def _poison(state, nan_after):
  """Fault injection (tests): NaN params after RL step `nan_after` (None: off)."""
  if nan_after is None:
    return state
  state['params'] = jax.tree.map(
    lambda p: jax.numpy.where(state['step'] > nan_after, np.nan, p), state['params']
  )
  return state


def _dynamic_iteration(config, parts, src, mesh, repl, batch_sh, rl_key, nan_after):
  """advance(state, step) -> (state, metrics) for DAPO dynamic sampling: one RL iteration
  (`loop.dynamic_sampling_advance`). Generation batch i of iteration `step` reads the prompts
  of data step `step * max_gen_batches + i`, so a resumed run sees the prompts an
  uninterrupted one would."""
  rl, phases = config.rl, parts.rl_phases
  row_sh = parallel.batch_sharding(mesh, batch_axis=0)
  collect = jax.jit(phases.collect, in_shardings=(repl, row_sh, repl))

  def update_fn(state, rows, key):
    state, m = phases.update(state, rows, {}, key)
    return _poison(state, nan_after), m

  def batches(step):
    start = step * rl.max_gen_batches
    it = data.batch_iterator(
      src['train'], rl.prompts_per_step, seed=config.seed + 1, start_step=start
    )
    return ({k: v for k, v in b.items() if k in BATCH_KEYS} for b in it)

  return loop.dynamic_sampling_advance(
    collect, jax.jit(update_fn, out_shardings=repl, donate_argnums=0), batches, rl_key,
    group_size=rl.group_size, max_gen_batches=rl.max_gen_batches,
    place=lambda r: parallel.shard_batch(r._replace(key=None), mesh, 0)._replace(key=r.key),
  )  # fmt: skip


def _warm_start(config, parts, ckpt, state, step, src, mesh, sft_chunk, run_val, repl, key, w, now):
  """Runs (or resumes from `state` at `step`) the supervised warm start; returns its params
  (`loop.run_sft_chunked`: it stops at `warmstart.steps` or at the first evaluation whose
  VALIDATION exact match reaches `warmstart.stop_at_accuracy`)."""
  ws = config.warmstart
  if state is None:
    state, step = jax.jit(parts.sft_init, out_shardings=repl)(key), 0
  batches = _chunks(src['train'], ws.batch_size, config.seed, step, ws.steps_per_call)
  return loop.run_sft_chunked(
    lambda s: sft_chunk(s, parallel.shard_batch(next(batches), mesh, 1)),
    state, step=step, ws=ws, validate=run_val, writer=w, now=now, checkpointer=ckpt,
  )  # fmt: skip


def summary_line(records, workdir, estimator):
  """The closing line: warm start -> RL held-out exact match, wall clock, where the results are."""
  em = report.run_summary(records, 'eval_exact_match')
  if em['start'] is None:
    return f'no RL evaluation recorded; see {workdir}/metrics.jsonl'
  return (
    f'warm start {100 * em["start"]:.1f}% -> RL ({estimator}, {em["rl_steps"]} steps) '
    f'{100 * em["final"]:.1f}% held-out exact match ({100 * (em["final"] - em["start"]):+.1f}) '
    f'in {em["total_time"]:.0f} s; results in {os.path.join(workdir, "results.md")}'
  )


def run(config, workdir):
  """Trains into `workdir` (warm start, RL, results.md); returns the summary line."""
  train(config, workdir)
  return summary_line(metrics.read(workdir), workdir, config.credit.estimator)


def next_steps(config, workdir):
  """The closing hint: another estimator from this run's warm start, then the comparison."""
  other = 'rloo' if config.credit.estimator != 'rloo' else 'grpo'
  dest = f'{os.path.normpath(workdir)}_{other}'
  return (
    f'the same command with --config.credit.estimator={other} --config.init_from={workdir} '
    f'--workdir={dest} (same warm start), then --compare {workdir},{dest} for one table.'
  )


def _setup():
  parallel.maybe_initialize_distributed(FLAGS.multihost)
  jax.config.update('jax_threefry_partitionable', True)


EXPERIMENT = runs.Experiment(
  NAME,
  run,
  validate=validate,
  safe_keys=SAFE_KEYS,
  shape_keys=SHAPE_KEYS,
  next_steps=next_steps,
  setup=_setup,
  outputs=(metrics.FILENAME, 'results.md', 'learning_curve.png'),
  check_workdir=lambda config, workdir: runs.check_steps_reached(
    os.path.join(workdir, 'checkpoints', 'rl'), 'rl.steps', config.rl.steps
  ),
)


# Keys that may differ between the runs of one comparison (`--compare`): the estimator, where
# the warm start comes from, and the run's length and cadence.
COMPARE_KEYS = ('credit.', 'init_from', *SAFE_KEYS)


def main(argv):
  if FLAGS.compare:
    runs.quiet_logs(FLAGS.debug)
    dirs, out = FLAGS.compare, FLAGS.workdir
    go = lambda: report.compare_workdirs(dirs, out, name=NAME, ignore=COMPARE_KEYS)  # noqa: E731
    runs.guarded(go, FLAGS.debug)
    return
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
