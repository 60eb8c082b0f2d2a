"""RL with verifiable rewards for a pretrained Llama / Qwen2 model on GSM8K-format problems.

Commands and expected results: configs/llm_rl.py.

The checkpoint is read by `jaxca.networks.hf.load_pretrained`, the text by
`jaxca.tokenizer`, the problems by `jaxca.tasks.gsm8k`; the RL iteration is the flagship's
(`jaxca.lm.make_rl_update`: sampling with the KV cache, the task's outcome reward, the
estimator by name, PPO-clip). Parameters and optimizer state are sharded over the 'fsdp'
mesh axis, the batch over all devices (`jaxca.parallel`).

Resume order: the latest RL checkpoint in the workdir, else the pretrained checkpoint.
Randomness is fold_in(key, step) and batches are a function of (seed, step), so a resumed
run computes what an uninterrupted one would. Where runs write, config changes on resume,
errors and the closing summary: `jaxca.runs`.
"""

import collections
import contextlib
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxca import checkpoint
from jaxca import data
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import metrics
from jaxca import parallel
from jaxca import report
from jaxca import runs
from jaxca import tokenizer as tokenizer_lib
from jaxca import train as train_lib
from jaxca.networks import hf
from jaxca.tasks import gsm8k

FLAGS = flags.FLAGS

NAME = 'llm_rl'
SAFE_KEYS = ('rl.steps', 'eval.every', 'train.ckpt_every', 'train.max_to_keep')
# The model (refused on resume even with --allow_config_change; other shape changes are
# caught when the checkpoint is restored).
SHAPE_KEYS = ('model.path', 'model.build_tiny')
ConfigError = runs.ConfigError
Parts = collections.namedtuple('Parts', 'task policy params estimator rl_init rl_update evaluate')


def define_flags():
  runs.define_flags(NAME)
  flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first (multi-host).')


def validate(config, device_count=None):
  """Raises ConfigError naming the offending field; returns `config`."""
  n_dev = jax.device_count() if device_count is None else int(device_count)
  if not config.model.path and not config.model.build_tiny:
    raise ConfigError(
      'Set --config.model.path to a local Hugging Face checkpoint directory '
      '(or use configs/llm_rl.py:smoke, which builds a tiny one).'
    )
  if not config.data.path and not config.model.build_tiny:
    raise ConfigError('Set --config.data.path to a GSM8K-format JSONL/Parquet file or directory.')
  for path in (config.model.path, config.data.path, config.tokenizer.path):
    if path and not os.path.exists(path):
      raise ConfigError(f'{path!r} does not exist.')
  if config.model.path and not os.path.isfile(os.path.join(config.model.path, 'config.json')):
    raise ConfigError(
      f'config.model.path={config.model.path!r} is not a Hugging Face checkpoint directory '
      '(no config.json).'
    )
  for key in ('dtype', 'param_dtype'):
    if config.model[key] not in ('float32', 'bfloat16'):
      raise ConfigError(
        f'config.model.{key} must be float32 or bfloat16; got {config.model[key]!r}.'
      )
  try:
    est = estimators.from_config(config.credit)
  except (ValueError, TypeError) as e:
    raise ConfigError(f'config.credit: {e}') from None
  rl = config.rl
  for key in ('steps', 'prompts_per_step', 'group_size', 'num_epochs', 'num_minibatches'):
    if not rl[key] >= 1:
      raise ConfigError(f'config.rl.{key} must be >= 1; got {rl[key]}.')
  if not rl.steps_per_call >= 1:
    raise ConfigError(f'config.rl.steps_per_call must be >= 1; got {rl.steps_per_call}.')
  if rl.group_size < est.min_group_size:
    raise ConfigError(f'config.rl.group_size must be >= 2 for {est.name!r}.')
  for key, value in (
    ('rl.prompts_per_step', rl.prompts_per_step),
    ('eval.num_prompts', config.eval.num_prompts),
  ):
    if value % n_dev:
      raise ConfigError(f'config.{key} ({value}) must be divisible by the {n_dev} devices.')
  if (rl.prompts_per_step * rl.group_size) % rl.num_minibatches:
    raise ConfigError('config.rl.num_minibatches must divide prompts_per_step * group_size.')
  for key in ('eval.every', 'train.ckpt_every'):
    section, name = key.split('.')
    value = config[section][name]
    if value < 1 or value % rl.steps_per_call:
      raise ConfigError(f'config.{key} ({value}) must be a positive multiple of rl.steps_per_call.')
  fsdp = config.mesh.fsdp or n_dev
  if n_dev % fsdp:
    raise ConfigError(f'config.mesh.fsdp ({fsdp}) must divide the {n_dev} devices.')
  try:
    train_lib.make_optimizer(config.optim)
  except (ValueError, TypeError) as e:
    raise ConfigError(f'config.optim: {e}') from None
  lm.validate_sections(config)  # the learner's own sections: loss, rl reward options
  return config


TINY = dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)


def build_tiny_assets(directory: str, seed: int = 0) -> tuple[str, str]:
  """Host side: a tiny tokenizer + random Qwen2-shaped checkpoint and a generated dataset.

  Returns (checkpoint directory, dataset directory). Rebuilt identically from `seed`.
  """
  model_dir, data_dir = os.path.join(directory, 'model'), os.path.join(directory, 'data')
  if os.path.exists(os.path.join(model_dir, 'model.safetensors')):
    return model_dir, data_dir
  records = gsm8k.generate(400, seed=seed)
  corpus = [r['question'] + '\n' + r['answer'] for r in records] + [gsm8k.INSTRUCTION] * 20
  tok = tokenizer_lib.train_tiny(model_dir, corpus, vocab_size=400)
  cfg = hf.HFConfig(
    family='qwen2',
    vocab_size=tok.vocab_size,
    head_dim=TINY['hidden_size'] // TINY['num_heads'],
    qkv_bias=True,
    tie_embeddings=True,
    max_position_embeddings=512,
    rope_theta=10_000.0,
    **TINY,
  )
  params = hf.make_policy(cfg).init(jax.random.key(seed))
  hf.save_pretrained(model_dir, cfg, jax.device_get(params))
  os.makedirs(data_dir, exist_ok=True)
  gsm8k.write_jsonl(os.path.join(data_dir, 'train.jsonl'), records[:300])
  gsm8k.write_jsonl(os.path.join(data_dir, 'test.jsonl'), records[300:])
  return model_dir, data_dir


def build(config, model_path):
  """Loads the checkpoint (host arrays) and composes the learner; no jit, no devices."""
  estimator = estimators.from_config(config.credit)
  value_head = 'values' in estimator.requires
  try:
    policy, params = hf.load_pretrained(
      model_path,
      dtype=config.model.dtype,
      param_dtype=config.model.param_dtype,
      value_head=value_head,
      max_len=config.task.prompt_len + config.task.response_len,
      key=jax.random.key(config.seed),
    )
  except (OSError, ValueError, KeyError) as e:  # missing, truncated or foreign files
    lines = str(e).strip().splitlines() or ['']
    raise ConfigError(
      f'cannot load the checkpoint {model_path!r} (config.model.path): '
      f'{type(e).__name__}: {lines[0][:200]}'
    ) from None
  task = gsm8k.make_task(dict(config.task.to_dict(), tokenizer=config.tokenizer.path or model_path))
  if task.vocab.size > policy.vocab_size:
    raise ConfigError(
      f'The tokenizer has {task.vocab.size} ids, the model only {policy.vocab_size}.'
    )
  tx = train_lib.make_optimizer(config.optim)
  with_ref = config.loss.kl_coef > 0
  update = lm.make_rl_update(
    policy,
    task,
    estimator,
    tx,
    group_size=config.rl.group_size,
    num_epochs=config.rl.num_epochs,
    num_minibatches=config.rl.num_minibatches,
    temperature=config.rl.temperature,
    reward='outcome',
    loss_cfg=config.loss,
  )
  return Parts(
    task,
    policy,
    params,
    estimator,
    lambda p: lm.init_from_params(p, tx, with_ref=with_ref),
    update,
    lm.make_eval_fn(policy, task),
  )


def train(config, workdir=None):
  """RL from the pretrained checkpoint; returns the final state (a dict of arrays)."""
  validate(config)
  with contextlib.ExitStack() as stack:
    model_path, data_path = config.model.path, config.data.path
    if config.model.build_tiny:
      assets = (
        os.path.join(workdir, 'assets')
        if workdir
        else stack.enter_context(tempfile.TemporaryDirectory(prefix='jaxca_llm_'))
      )
      tiny_model, tiny_data = build_tiny_assets(assets, config.seed)
      model_path, data_path = model_path or tiny_model, data_path or tiny_data
    return _train(config, workdir, model_path, data_path)


def _train(config, workdir, model_path, data_path):
  start = time.time()
  parts = build(config, model_path)
  n_dev = jax.device_count()
  mesh = parallel.make_fsdp_mesh(config.mesh.fsdp or n_dev)
  repl = parallel.replicated(mesh)
  batch_sh = parallel.batch_sharding(mesh, 1, parallel.BATCH_AXES)
  src = parts.task.load_data(
    data_path,
    num_train=config.data.num_train or None,
    num_test=config.data.num_test or None,
    seed=config.seed,
  )
  if len(src['test']['prompts']) < config.eval.num_prompts:
    raise ConfigError(
      f'config.eval.num_prompts ({config.eval.num_prompts}) exceeds the '
      f'{len(src["test"]["prompts"])} test problems.'
    )
  test = parallel.shard_batch(data.get_batch(src['test'], np.arange(config.eval.num_prompts)), mesh)
  key = jax.random.key(config.seed)

  abstract = jax.eval_shape(parts.rl_init, parts.params)
  state_sh = parallel.fsdp_shardings(abstract, mesh)

  def rl_chunk(state, batches, key):
    return jax.lax.scan(
      lambda s, b: parts.rl_update(s, b, jax.random.fold_in(key, s['step'])), state, batches
    )

  rl_chunk = jax.jit(
    rl_chunk,
    in_shardings=(state_sh, batch_sh, repl),
    out_shardings=(state_sh, repl),
    donate_argnums=0,
  )
  evaluate = jax.jit(lambda p, b: lm.mean_metrics(parts.evaluate(p, b)), out_shardings=repl)

  evaluated = []  # non-empty once `evaluate` has compiled in this process

  def run_eval(params):
    evaluated.append(True)
    return {f'eval_{k}': float(v) for k, v in jax.device_get(evaluate(params, test)).items()}

  ckpt = None
  if workdir:
    ckpt = checkpoint.Checkpointer(
      os.path.join(workdir, 'checkpoints', 'rl'),
      every=config.train.ckpt_every,
      max_to_keep=config.train.max_to_keep,
    )
  # Restored before anything is written (a checkpoint that cannot be read is skipped,
  # one with other shapes refused: checkpoint.Checkpointer.restore_latest).
  target = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_sh
  )
  restored, rl_step = ckpt.restore_latest(target) if ckpt else (None, None)
  runs.begin()  # setup succeeded: the run record may be written (jaxca.runs)
  kept = [r for r in (metrics.read(workdir) if workdir else []) if r['step'] <= (rl_step or 0)]
  if rl_step is None:
    kept = []
  base = max([r['time'] for r in kept] + [0.0])

  def now():
    return dict(time=base + time.time() - start)

  writer = metrics.Writer(
    workdir if jax.process_index() == 0 else None,
    keep=lambda r: r in kept,
    purge_steps=dict(rl=(rl_step or -1) + 1),
  )
  try:
    if rl_step is None:
      params = parallel.shard_params(parts.params, mesh)
      state = jax.jit(parts.rl_init, out_shardings=state_sh)(params)
      del params
      writer.write(0, dict(phase='rl', **now(), **run_eval(state['params'])))
      if ckpt:
        ckpt.maybe_save(0, state, force=True)
    else:
      state = restored
      if rl_step < config.rl.steps:
        runs.note(f'resumed RL from step {rl_step}')
    step, k = int(rl_step or 0), config.rl.steps_per_call
    it = data.batch_iterator(
      src['train'], config.rl.prompts_per_step, seed=config.seed + 1, start_step=step
    )
    rl_key = jax.random.fold_in(key, 1)

    def advance(state, step):
      del step  # the chunk reads it from the state
      chunk = [next(it) for _ in range(k)]
      batches = {key_: np.stack([b[key_] for b in chunk]) for key_ in parts.task.batch_keys}
      state, m = rl_chunk(state, parallel.shard_batch(batches, mesh, 1), rl_key)
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
      checkpointer=ckpt,
      desc=f'RL {parts.estimator.name}',
      postfix=lambda rec: dict(acc=f'{rec["accuracy"]:.2f}'),
    )
  finally:
    writer.close()
    if ckpt:
      ckpt.close()
  if workdir and jax.process_index() == 0:
    report.write_results(
      workdir,
      metrics.read(workdir),
      title=f'llm_rl: {parts.estimator.name} on {os.path.basename(os.path.normpath(data_path))}',
      notes=f'Model: `{model_path}`. Config: `{workdir}/config.json`. Times are wall-clock '
      'seconds from the start of the run.',
    )
  return state


def summary_line(records, workdir, estimator):
  """Held-out final-answer accuracy before -> after RL, wall clock, where the results are."""
  acc = report.run_summary(records, 'eval_final_answer')
  if acc['start'] is None:
    return f'no evaluation recorded; see {workdir}/metrics.jsonl'
  return (
    f'pretrained {100 * acc["start"]:.1f}% -> RL ({estimator}, {acc["rl_steps"]} steps) '
    f'{100 * acc["final"]:.1f}% held-out final-answer accuracy in {acc["total_time"]:.0f} s; '
    f'results in {os.path.join(workdir, "results.md")}'
  )


def run(config, workdir):
  train(config, workdir)
  return summary_line(metrics.read(workdir), workdir, config.credit.estimator)


def _setup():
  parallel.maybe_initialize_distributed(FLAGS.multihost)
  jax.config.update('jax_threefry_partitionable', True)


EXPERIMENT = runs.Experiment(
  NAME,
  run,
  validate=validate,
  safe_keys=SAFE_KEYS,
  shape_keys=SHAPE_KEYS,
  setup=_setup,
  outputs=(metrics.FILENAME, 'results.md', 'learning_curve.png'),
  check_workdir=lambda config, workdir: runs.check_steps_reached(
    os.path.join(workdir, 'checkpoints', 'rl'), 'rl.steps', config.rl.steps
  ),
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
