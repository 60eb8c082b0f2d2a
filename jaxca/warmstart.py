"""Supervised warm start of the LM policy: the SFT loop, its stop rule and its workdir cache.

Host side (checkpoints, JSON, `jax.jit`); kernels never import it.

* `sft_loop` is THE warm-start loop: SFT updates, a validation evaluation every
  `eval_every` steps (and at the last step), a stop at the first validation
  evaluation whose greedy exact match reaches `stop_at`, and the SFT curve.
  `warm_start` below and the flagship's resumable phase (`experiments/arith_rl.py`)
  both run it; `sft_with_progress` adds a progress bar and per-evaluation records, and
  `cached` keys any warm start's cache by the config sections that decide it.
* The stop is judged on a **validation** split (`jaxca.tasks.arith.split_names`),
  disjoint by problem from the train problems it fits and from the held-out test
  problems that are reported, so the reported number carries no selection bias.
  Each experiment sets the band past its SFT transition, not inside it: in the middle
  of the transition the right tokens are near-ties and RL updates from there are
  mostly noise (measured on K=4 chains: BUILD_NOTES.md, issue 21).
* `validate_chunked` checks the `warmstart` section of the chunked phase (arith_rl).
* `warm_start` is the one-shot cached warm start of the reproductions that start
  every arm from one SFT policy (mc_credit, token_credit, policy_objectives; `start`
  composes it with the splits and the held-out evaluator). Its
  cache (`<workdir>/warmstart/` + `warmstart.json`) carries a key: a SHA-256 of the
  canonical JSON of the config sections that decide the warm start (`task`,
  `policy`, `warmstart`, the seed, and a digest of the train / validation
  problems). A cache whose key differs, or that has no key (made before keys), is
  never reused and never overwritten: the run stops with one line naming the
  differing keys and the way out (remove the cache, or another workdir).
  Recomputing silently would overwrite what may be another run's warm start.
"""

import csv
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxca import checkpoint
from jaxca import config_lib
from jaxca import lm
from jaxca import report
from jaxca import runs
from jaxca import train as train_lib

INFO_FILE = 'warmstart.json'
CURVE_FILE = 'warmstart_curve.csv'
CKPT_DIR = 'warmstart'
KEY_SECTIONS = ('task', 'policy', 'warmstart', 'seed', 'data')
_SPLIT_SEED_OFFSET = {'train': 0, 'test': 1, 'validation': 2}


STOP_TOL = 1e-6  # `sft_loop`'s stop: an accuracy counts as reaching `stop_at` within this


def sft_loop(
  state,
  step,
  *,
  advance,
  validate,
  max_steps,
  eval_every,
  stop_at,
  steps_per_call=1,
  on_step=None,
  metric='val_exact_match',
):
  """Runs (or resumes) SFT until `max_steps` or the first validation evaluation >= `stop_at`.

  Args:
    state: the SFT state (a dict with 'params'), at step `step`.
    step: the number of SFT steps already taken (0 for a fresh start).
    advance: `advance(state, step) -> (state, metrics)` takes `steps_per_call` SFT steps.
    validate: `validate(params) -> dict` of evaluation metrics; `metric` (validation
      greedy exact match) decides the stop. It may hold other metrics (held-out test)
      that are only recorded.
    max_steps: the most SFT steps.
    eval_every: evaluate every this many steps (a multiple of `steps_per_call`), and at
      the last step.
    stop_at: stop at the first evaluation with `metric >= stop_at` (up to `STOP_TOL`, so a
      float32 mean such as 15 / 50 = 0.29999998 reaches 0.3); 0 (or less) never stops
      early.
    steps_per_call: steps per `advance` call.
    on_step: optional `on_step(step, state, metrics, evaluation, done)` after each call
      (records, checkpoints); `evaluation` is None off the schedule.
    metric: the key of `validate`'s output the stop reads.

  A resumed loop (`step > 0`) whose step is on the schedule re-judges the stop on its
  state first, so a run stopped by the rule stays stopped.

  Returns:
    (state, step, curve): the final state and step, and the SFT curve, a list of
    (step, validation exact match) of the evaluations this call ran.
  """
  stop_at = float(stop_at)
  curve = []
  done = step >= max_steps
  if not done and step and stop_at > 0 and step % eval_every == 0:
    done = float(validate(state['params'])[metric]) >= stop_at - STOP_TOL
  while not done:
    state, m = advance(state, step)
    step += steps_per_call
    done = step >= max_steps
    evaluation = None
    if step % eval_every == 0 or done:
      evaluation = dict(validate(state['params']))
      if metric in evaluation:
        em = float(evaluation[metric])
        curve.append((step, em))
        done = done or 0 < stop_at <= em + STOP_TOL
    if on_step is not None:
      on_step(step, state, m, evaluation, done)
  return state, step, curve


def sft_minibatches(loss_fn, params, data, *, lr, batch_size, rng, **loop):
  """`sft_with_progress` of `loss_fn(params, batch)` on minibatches drawn with replacement
  from `data` (a dict of [n, ...] arrays, indices from the NumPy generator `rng`), Adam `lr`
  with gradient clipping 1.0 (the demonstration warm starts of the multi-turn reproductions).

  `loop`: `sft_with_progress`'s keywords (validate, max_steps, eval_every, stop_at, metric,
  postfix, ...). Returns (params, step, curve).
  """
  tx = train_lib.make_optimizer(dict(name='adam', lr=lr, max_grad_norm=1.0))
  grad_step = train_lib.make_gradient_step(loss_fn, tx)
  data = jax.tree.map(jnp.asarray, data)
  n = len(next(iter(data.values())))

  @jax.jit
  def update(state, idx):
    batch = jax.tree.map(lambda x: x[idx], data)
    (params, opt_state), m = grad_step((state['params'], state['opt_state']), batch)
    return dict(params=params, opt_state=opt_state), m

  state = dict(params=params, opt_state=tx.init(params))
  state, step, curve = sft_with_progress(
    state, advance=lambda s, _: update(s, jnp.asarray(rng.integers(0, n, batch_size))), **loop
  )
  return state['params'], step, curve


def sft_with_progress(
  state,
  *,
  advance,
  validate,
  max_steps,
  eval_every,
  stop_at,
  steps_per_call=1,
  metric='val_exact_match',
  on_eval=None,
  postfix=None,
  desc='warm start',
):
  """`sft_loop` from step 0 with a progress bar (a tick per `advance` call) and, at each
  evaluation, `on_eval(step, metrics, evaluation)` (e.g. a record), `postfix(evaluation)` (the
  bar's label, a dict) and the watchdog's progress (`runs.at`). Returns `sft_loop`'s."""
  bar = tqdm.tqdm(total=max_steps // steps_per_call, desc=desc)

  def on_step(step, state, m, evaluation, done):
    del state, done
    bar.update(1)
    if evaluation is not None:
      if postfix is not None:
        bar.set_postfix(postfix(evaluation))
      if on_eval is not None:
        on_eval(step, m, evaluation)
      runs.at(f'{desc} step {step}')

  try:
    return sft_loop(
      state,
      0,
      advance=advance,
      validate=validate,
      max_steps=max_steps,
      eval_every=eval_every,
      stop_at=stop_at,
      steps_per_call=steps_per_call,
      on_step=on_step,
      metric=metric,
    )
  finally:
    bar.close()


def cached(workdir, sections, train, reused, metric='validation_exact_match'):
  """(params, info) of a warm start keyed by `sections` (a JSON-able dict, `section_key`).

  The cache in `workdir` made with the same key (`load_cache`; `runs.note(reused(info))`),
  else `train() -> (params, info)`, `info` holding `steps` and `curve`, saved with its `key`
  and `key_sections` (`save_cache`) and its curve (`write_curve`, column `metric`); '' or
  None: no cache. A cache made with another key stops the run (`check_cache`).
  """
  key = section_key(sections)
  hit = load_cache(workdir, key, sections)
  if hit is not None:
    runs.note(reused(hit[1]))
    return hit
  params, info = train()
  info = dict(info, key=key, key_sections=sections)
  if workdir:
    save_cache(workdir, params, info)
    write_curve(workdir, info['curve'], metric)
  return params, info


def validate_chunked(config, task=None):
  """Checks the `warmstart` section of a chunked warm start (`loop.run_sft_chunked`: arith_rl's
  `steps`, `steps_per_call`, `eval_every`, `batch_size`, `stop_at_accuracy`, `optim`); a
  `check(config, task)` of `config_lib.validate(sections=)`. Raises ConfigError (one line)."""
  del task
  if 'warmstart' not in config or config.warmstart is None:
    return
  ws = config.warmstart
  try:
    train_lib.check_optimizer(ws.optim)
  except (ValueError, TypeError) as e:
    raise config_lib.from_section('warmstart.optim', e) from None
  for key in ('batch_size', 'steps_per_call', 'eval_every'):
    config_lib.positive(f'warmstart.{key}', ws[key])
  if ws.steps < 0:
    raise config_lib.ConfigError(f'config.warmstart.steps must be >= 0; got {ws.steps}.')
  if not 0.0 <= float(ws.stop_at_accuracy) <= 1.0:
    raise config_lib.ConfigError(
      f'config.warmstart.stop_at_accuracy must be in [0, 1]; got {ws.stop_at_accuracy!r}.'
    )


def make_splits(config, task):
  """(train, validation, test) problems of an arithmetic reproduction, disjoint by problem.

  Train and test are drawn as before the validation split existed (seeds `seeds[0]`
  and `seeds[0] + 1`; the test problems are unchanged), except that train leaves out
  the validation problems; validation holds `data.num_validation` distinct problems of
  the `data.validation_fraction` share (seed `seeds[0] + 2`).
  """
  seed, d = int(config.seeds[0]), config.data
  vf = float(d.validation_fraction)
  draw = lambda split, n, **kw: task.generate(  # noqa: E731
    seed + _SPLIT_SEED_OFFSET[split], n, split=split, validation_fraction=vf, **kw
  )
  keep = lambda b: {k: np.asarray(v) for k, v in b.items() if k in task.batch_keys}  # noqa: E731
  return (
    keep(draw('train', d.num_train)),
    keep(draw('validation', d.num_validation, distinct=True)),
    keep(draw('test', d.num_test)),
  )


def _section(config, name):
  value = config[name]
  return json.loads(value.to_json_best_effort()) if hasattr(value, 'to_json_best_effort') else value


def _digest(*batches) -> str:
  h = hashlib.sha256()
  for batch in batches:
    for k in sorted(batch):
      a = np.ascontiguousarray(np.asarray(batch[k]))
      h.update(f'{k}{a.dtype}{a.shape}'.encode())
      h.update(a.tobytes())
  return h.hexdigest()[:16]


def cache_key(config, train, validation) -> tuple[str, dict]:
  """(key, sections): the SHA-256 (16 hex digits) of the canonical JSON of `sections`.

  `sections` holds the config's `task`, `policy` and `warmstart` sections, the seed
  (`seeds[0]`) and `data`, a digest of the train and validation problems (they follow
  from the task, `data.num_train`, `data.validation_fraction`, `data.num_validation`
  and the seed).
  """
  sections = dict(
    task=_section(config, 'task'),
    policy=_section(config, 'policy'),
    warmstart=_section(config, 'warmstart'),
    seed=int(config.seeds[0]),
    data=_digest(train, validation),
  )
  return section_key(sections), sections


def section_key(sections: dict) -> str:
  """The SHA-256 (16 hex digits) of the canonical JSON of `sections` (a JSON-able dict)."""
  canonical = json.dumps(sections, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def digest(*batches) -> str:
  """16 hex digits of SHA-256 over the arrays (dtype, shape, bytes) of dicts of arrays: a key
  section standing for data that follow from the config (problems, demonstrations)."""
  return _digest(*batches)


def check_cache(info, key, sections, where):
  """Raises ConfigError (one line) unless the cache `info` was made with `key`."""
  remedy = (
    f'remove {where}/{CKPT_DIR}/ and {where}/{INFO_FILE} to recompute it, or use another --workdir'
  )
  if 'key' not in info:
    raise runs.ConfigError(
      f'the warm-start cache in {where} has no key (made before keyed caches), so it may not '
      f'match this config ({", ".join(sorted(sections))}); {remedy}.'
    )
  if info['key'] == key:
    return
  diffs = runs.config_diff(info.get('key_sections', {}), sections)
  names = ', '.join(d[0] for d in diffs) or 'unknown'
  raise runs.ConfigError(
    f'the warm-start cache in {where} was made with a different config (differs: {names}; '
    f'key {info["key"]} != {key}); {remedy}.'
  )


def write_curve(workdir, curve, metric: str = 'validation_exact_match'):
  """Writes the SFT curve as `<workdir>/warmstart_curve.csv` (step, `metric`: the validation
  score the stop was judged on)."""
  with open(os.path.join(workdir, CURVE_FILE), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(('step', metric))
    w.writerows((int(s), f'{em:.6f}') for s, em in curve)


def curve_of(records) -> list:
  """The SFT curve [(step, validation exact match)] of a run's `metrics.jsonl` records (phase
  'warmstart', those with `val_exact_match`)."""
  return [
    (r['step'], r['val_exact_match'])
    for r in records
    if r.get('phase') == 'warmstart' and 'val_exact_match' in r
  ]


def load_init_from(path: str, fresh):
  """The warm-start parameters of another run (`init_from`): `path` is its workdir (read from
  its `checkpoints/warmstart`) or a checkpoint directory; a parameter missing there (e.g. a
  value head) keeps its value in `fresh` (`lm.merge_params`)."""
  if os.path.isdir(os.path.join(path, 'checkpoints', 'warmstart')):
    path = os.path.join(path, 'checkpoints', 'warmstart')
  return lm.merge_params(fresh, checkpoint.load_params(path))


def warm_start(config, task, policy, train, validation, test, evaluate, workdir):
  """SFT until validation greedy exact match first reaches `warmstart.band[0]`; cached.

  Args:
    config: with sections `task`, `policy`, `seeds`, `data` and `warmstart`
      (`max_steps`, `batch_size`, `eval_every`, `band`, `lr`).
    task, policy: the task and the policy (`jaxca.lm`).
    train, validation, test: problem batches (`make_splits`), disjoint by problem.
    evaluate: `evaluate(params, batch) -> {'exact_match': ...}` (greedy).
    workdir: where the cache lives ('' or None: no cache).

  Returns:
    (params, info): info holds `steps`, `validation_exact_match` (the stop's value),
    `exact_match` (held-out test greedy exact match of the warm start, the reported
    number), `seconds`, `curve` [(step, validation exact match)] and the cache `key`.

  Raises:
    ConfigError: the workdir holds a warm-start cache made with another key.
  """
  ws = config.warmstart
  _, sections = cache_key(config, train, validation)

  def fit():
    tx = train_lib.make_optimizer(dict(name='adam', lr=ws.lr, max_grad_norm=1.0))
    state = lm.make_init(policy, tx)(jax.random.key(config.seeds[0] + 1000))
    update = jax.jit(lm.make_sft_update(policy, task, tx))
    rng = np.random.default_rng(config.seeds[0] + 7)
    val = {k: jnp.asarray(v) for k, v in validation.items()}

    def advance(state, step):
      del step
      idx = rng.integers(0, len(train['prompts']), ws.batch_size)
      return update(state, {'prompts': train['prompts'][idx], 'targets': train['targets'][idx]})

    def on_step(step, state, m, evaluation, done):
      del state, m, evaluation, done
      runs.at(f'warm start step {step}')

    t0 = time.time()
    state, step, curve = sft_loop(
      state,
      0,
      advance=advance,
      validate=lambda p: {'val_exact_match': evaluate(p, val)['exact_match']},
      max_steps=ws.max_steps,
      eval_every=ws.eval_every,
      stop_at=ws.band[0],
      on_step=on_step,
    )
    val_em = curve[-1][1] if curve else 0.0
    test_em = float(evaluate(state['params'], test)['exact_match'])
    info = dict(
      steps=step,
      validation_exact_match=val_em,
      exact_match=test_em,
      seconds=time.time() - t0,
      curve=curve,
    )
    runs.note(
      f'warm start: {step} steps, validation exact match {val_em:.3f}, held-out {test_em:.3f} '
      f'({info["seconds"]:.0f} s)'
    )
    return state['params'], info

  def reused(info):
    return (
      f'warm start: reused ({info["steps"]} steps, validation exact match '
      f'{info["validation_exact_match"]:.3f}, held-out {info["exact_match"]:.3f})'
    )

  return cached(workdir, sections, fit, reused)


def load_cache(workdir, key, sections):
  """(params, info) of the warm-start cache in `workdir` made with `key`; None if there is none.

  The cache is `<workdir>/warmstart/` (the parameters) and `<workdir>/warmstart.json` (`info`,
  with `key` and `key_sections`). '' or None: no cache.

  Raises:
    ConfigError: the cache was made with another key (or none), or the checkpoint exists
      without its info file (an interrupted warm start).
  """
  if not workdir:
    return None
  path, info_path = os.path.join(workdir, CKPT_DIR), os.path.join(workdir, INFO_FILE)
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
    check_cache(info, key, sections, workdir)
    return jax.tree.map(jnp.asarray, checkpoint.load_params(path)), info
  if os.path.exists(path):
    raise runs.ConfigError(
      f'{path}/ exists without {INFO_FILE} (an interrupted warm start?); remove it to recompute.'
    )
  return None


def save_cache(workdir, params, info):
  """Writes the cache `load_cache` reads: `params` at step `info['steps']` and `info` (JSON,
  holding `key` and `key_sections`)."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, CKPT_DIR), every=1, max_to_keep=1)
  ckpt.maybe_save(int(info['steps']), dict(params=params), force=True)
  ckpt.close()
  with open(os.path.join(workdir, INFO_FILE), 'w') as f:
    json.dump(info, f)


def describe(config, info) -> str:
  """The warm start in a sentence for a results.md: optimiser, steps, the stop and its scores.

  `info` is `warm_start`'s; the stop threshold is `warmstart.band[0]` (one above 1 says that
  no early stop was possible: `report.percent_target`).
  """
  ws = config.warmstart
  return (
    f'SFT (Adam {ws.lr}, batch {ws.batch_size}) for {info["steps"]} steps, stopped at the first '
    f'evaluation whose validation greedy exact match reached '
    f'{report.percent_target(ws.band[0])} (validation '
    f'{100 * info["validation_exact_match"]:.1f}%, held-out {100 * info["exact_match"]:.1f}%; '
    f'SFT curve in {CURVE_FILE})'
  )


def held_out_evaluator(policy, task):
  """`evaluate(params, batch) -> {metric: float}`: the task's greedy metrics averaged over the
  batch (`lm.make_eval_fn`, `lm.mean_metrics`), jitted once."""
  ev = jax.jit(lambda p, b: lm.mean_metrics(lm.make_eval_fn(policy, task)(p, b)))

  def evaluate(params, batch):
    return {k: float(v) for k, v in jax.device_get(ev(params, batch)).items()}

  return evaluate


def start(config, task, policy, workdir):
  """The common start of the reproductions that run every arm from one warm start.

  `make_splits`, the held-out evaluator (`held_out_evaluator`) and the cached `warm_start`.

  Returns:
    (params0, info, train, test, evaluate): the warm-start parameters and `warm_start`'s
    info, the training split (host arrays), the held-out split (device arrays) and
    `evaluate(params, batch) -> {metric: float}`.
  """
  train, validation, test = make_splits(config, task)
  test = {k: jnp.asarray(v) for k, v in test.items()}
  evaluate = held_out_evaluator(policy, task)
  params0, info = warm_start(config, task, policy, train, validation, test, evaluate, workdir)
  return params0, info, train, test, evaluate
