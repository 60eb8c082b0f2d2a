"""RL with verifiable rewards on arithmetic chains: warm start, then PPO with an estimator.

Commands and expected results: configs/arith_rl.py.

Resume order (jaxca.checkpoint): (1) the latest RL checkpoint in the workdir;
(2) else the warm start -- resumed from checkpoints/warmstart, or taken from
`config.init_from` (params only); (3) else a fresh init. Randomness is
fold_in(key, step), data batches are a function of (seed, step), so a resumed
run computes what an uninterrupted one would.
"""

import collections
import logging as pylogging
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import tqdm

from jaxca import checkpoint
from jaxca import config_lib
from jaxca import data
from jaxca import estimators
from jaxca import lm
from jaxca import metrics
from jaxca import parallel
from jaxca import tasks
from jaxca import train as train_lib
from jaxca.networks import transformer

FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a script, so tests can import several experiments."""
  config_flags.DEFINE_config_file('config', None, 'configs/arith_rl.py[:args]', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Checkpoints, metrics, results; resumes if non-empty.')
  flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first (multi-host).')
  flags.DEFINE_list('compare', None, 'Workdirs to compare: writes a table + plot to --workdir.')


Parts = collections.namedtuple(
  'Parts', 'task policy estimator sft_init sft_update rl_init rl_update evaluate'
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
  rl_update = lm.make_rl_update(
    policy,
    task,
    estimator,
    rl_tx,
    group_size=config.rl.group_size,
    num_epochs=config.rl.num_epochs,
    num_minibatches=config.rl.num_minibatches,
    temperature=config.rl.temperature,
    reward=config.rl.reward,
    loss_cfg=config.loss,
  )
  return Parts(
    task,
    policy,
    estimator,
    lm.make_init(policy, sft_tx),
    lm.make_sft_update(policy, task, sft_tx),
    lambda params: lm.init_from_params(params, rl_tx, with_ref=with_ref),
    rl_update,
    lm.make_eval_fn(policy, task),
  )


def _chunks(source, batch_size, seed, start, per_call):
  it = data.batch_iterator(source, batch_size, seed=seed, start_step=start)
  while True:
    batches = [next(it) for _ in range(per_call)]
    yield {k: np.stack([b[k] for b in batches]) for k in BATCH_KEYS}


def train(config, workdir=None):
  """Warm start (or init_from), then RL; returns the final RL state (a dict of arrays)."""
  config_lib.validate(config)
  start, cpu_start = time.time(), time.process_time()
  parts = build(config)
  mesh = parallel.make_mesh()
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh, batch_axis=1)
  data_dir = config.data.dir or (os.path.join(workdir, 'data') if workdir else tempfile.mkdtemp())
  src = data.load(
    parts.task.config, data_dir, num_train=config.data.num_train, num_test=config.data.num_test
  )
  test = parallel.shard_batch(
    {
      k: v
      for k, v in data.get_batch(src['test'], np.arange(config.eval.num_prompts)).items()
      if k in BATCH_KEYS
    },
    mesh,
  )
  key = jax.random.key(config.seed)
  nan_after = config.debug.nan_after_step

  def rl_chunk(state, batches, key):
    def body(s, b):
      s, m = parts.rl_update(s, b, jax.random.fold_in(key, s['step']))
      if nan_after >= 0:  # fault injection (tests): poison the params after that step
        s['params'] = jax.tree.map(
          lambda p: jax.numpy.where(s['step'] > nan_after, np.nan, p), s['params']
        )
      return s, m

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

  def run_eval(params):
    return {f'eval_{k}': float(v) for k, v in jax.device_get(evaluate(params, test)).items()}

  ckdir = os.path.join(workdir, 'checkpoints') if workdir else None

  def new_ckpt(name):
    return (
      checkpoint.Checkpointer(
        os.path.join(ckdir, name),
        every=config.train.ckpt_every,
        max_to_keep=config.train.max_to_keep,
      )
      if ckdir
      else None
    )

  rl_ckpt, ws_ckpt = new_ckpt('rl'), new_ckpt('warmstart')
  rl_step = rl_ckpt.latest_step() if rl_ckpt else None
  ws_step = ws_ckpt.latest_step() if ws_ckpt else None
  # Records written after the checkpoint we resume from are dropped (and recomputed).
  if rl_step is not None:
    keep = lambda r: r['phase'] == 'warmstart' or r['step'] <= rl_step  # noqa: E731
  else:
    keep = lambda r: r['phase'] == 'warmstart' and r['step'] <= (ws_step or 0)  # noqa: E731
  kept = [r for r in (metrics.read(workdir) if workdir else []) if keep(r)]
  base = max([r['time'] for r in kept] + [0.0])
  cpu_base = max([r.get('cpu_time', 0.0) for r in kept] + [0.0]) - cpu_start

  def now():  # wall clock and process CPU time (all threads) across resumes, in seconds
    return dict(time=base + time.time() - start, cpu_time=cpu_base + time.process_time())

  def stop_if_bad(m, phase, step, ckpt):
    if not metrics.all_finite(m, ('loss', 'grad_norm')) or np.min(m['params_finite']) < 1:
      last = None
      if ckpt:
        ckpt.wait()
        last = ckpt.latest_step()
      raise FloatingPointError(
        f'Non-finite loss or parameters in the {phase} phase at step {step} (loss per step: '
        f'{np.asarray(m["loss"]).ravel().tolist()}); stopping without saving. The last good '
        f'checkpoint is step {last} in {ckpt.directory if ckpt else "(no workdir)"}; fix the '
        'config (e.g. a smaller optim.lr) and rerun to resume from it.'
      )

  writer = metrics.Writer(
    workdir if jax.process_index() == 0 else None,  # one writer on multi-host runs
    keep=lambda r: r in kept,
    purge_steps=dict(warmstart=(ws_step or 0) + 1, rl=(rl_step or -1) + 1),
  )
  try:
    if rl_step is None:  # warm start (resumed or from init_from), then a fresh RL state
      if config.init_from:
        path = config.init_from
        if os.path.isdir(os.path.join(path, 'checkpoints', 'warmstart')):
          path = os.path.join(path, 'checkpoints', 'warmstart')
        params = jax.device_put(  # a value head missing from the warm start is initialised
          lm.merge_params(parts.policy.init(key), checkpoint.load_params(path)), repl
        )
      else:
        params = _warm_start(
          config,
          parts,
          ws_ckpt,
          ws_step,
          src,
          mesh,
          sft_chunk,
          run_eval,
          repl,
          key,
          writer,
          now,
          stop_if_bad,
        )
      state = jax.jit(parts.rl_init, out_shardings=repl)(params)
      writer.write(0, dict(phase='rl', **now(), **run_eval(state['params'])))
      if rl_ckpt:
        rl_ckpt.maybe_save(0, state, force=True)
    else:
      abstract = jax.eval_shape(lambda: parts.rl_init(parts.policy.init(key)))
      state = rl_ckpt.restore(abstract, rl_step, sharding=repl)
      logging.info('Resumed RL from step %d', rl_step)
    step, k = int(rl_step or 0), config.rl.steps_per_call
    batches = _chunks(src['train'], config.rl.prompts_per_step, config.seed + 1, step, k)
    rl_key = jax.random.fold_in(key, 1)
    with tqdm.tqdm(total=config.rl.steps, initial=step, desc=f'RL {parts.estimator.name}') as bar:
      while step < config.rl.steps:
        state, m = rl_chunk(state, parallel.shard_batch(next(batches), mesh, 1), rl_key)
        m = jax.device_get(m)
        step += k
        stop_if_bad(m, 'RL', step, rl_ckpt)
        rec = dict(phase='rl', **metrics.summarize(m))
        if step % config.eval.every == 0 or step == config.rl.steps:
          rec.update(run_eval(state['params']))
        writer.write(step, dict(rec, **now()))
        bar.update(k)
        bar.set_postfix(acc=f'{rec["accuracy"]:.2f}', em=rec.get('eval_exact_match', '-'))
        if rl_ckpt:
          rl_ckpt.maybe_save(step, state, force=step == config.rl.steps)
  finally:
    writer.close()
    for c in (rl_ckpt, ws_ckpt):
      if c:
        c.close()
  if workdir and jax.process_index() == 0:
    metrics.write_results(
      workdir,
      metrics.read(workdir),
      title=f'arith_rl: {parts.estimator.name} on {parts.task.config.name}',
      notes=f'Config: `{workdir}/config.json`. Times are wall-clock seconds '
      'from the start of the run (warm start included).',
    )
  return state


def _warm_start(
  config, parts, ckpt, step, src, mesh, sft_chunk, run_eval, repl, key, writer, now, stop_if_bad
):
  """Runs (or resumes from `step`) the supervised warm start; returns its final params."""
  ws = config.warmstart
  init = jax.jit(parts.sft_init, out_shardings=repl)
  if step is None:
    state, step = init(key), 0
  else:
    state = ckpt.restore(jax.eval_shape(init, key), step, sharding=repl)
  done = step >= ws.steps
  if not done and step and ws.stop_at_accuracy and step % ws.eval_every == 0:
    done = run_eval(state['params'])['eval_exact_match'] >= ws.stop_at_accuracy
  batches = _chunks(src['train'], ws.batch_size, config.seed, step, ws.steps_per_call)
  with tqdm.tqdm(total=ws.steps, initial=step, desc='warm start') as bar:
    while not done:
      state, m = sft_chunk(state, parallel.shard_batch(next(batches), mesh, 1))
      m = jax.device_get(m)
      step += ws.steps_per_call
      stop_if_bad(m, 'warm-start', step, ckpt)
      rec = dict(phase='warmstart', **metrics.summarize(m))
      done = step >= ws.steps
      if step % ws.eval_every == 0 or done:
        rec.update(run_eval(state['params']))
        done = done or (0 < ws.stop_at_accuracy <= rec['eval_exact_match'])
        bar.set_postfix(em=f'{rec["eval_exact_match"]:.2f}')
      writer.write(step, dict(rec, **now()))
      bar.update(ws.steps_per_call)
      if ckpt:
        ckpt.maybe_save(step, state, force=done)
  return state['params']


class _QuietOrbax(pylogging.Filter):
  def filter(self, record):
    return record.levelno >= pylogging.WARNING or 'orbax' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  logging.get_absl_handler().addFilter(_QuietOrbax())  # orbax logs every save at INFO
  parallel.maybe_initialize_distributed(FLAGS.multihost)
  jax.config.update('jax_threefry_partitionable', True)
  if FLAGS.compare:
    print(
      metrics.compare(
        FLAGS.compare,
        FLAGS.workdir or 'results/arith_rl',
        title='arith_rl: estimators from the same warm start',
      )
    )
    return
  if FLAGS.config is None:
    raise app.UsageError('--config is required (unless --compare is given).')
  logging.info('Config:\n%s', FLAGS.config)
  if FLAGS.workdir:
    metrics.write_config(FLAGS.workdir, FLAGS.config)
  train(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
