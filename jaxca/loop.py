"""Host loops over jitted learner callables: one arm's learning run, with evaluation.

`run_chunked` is the single-run experiments' loop (`arith_rl`, `llm_rl`): jitted chunks of
iterations from a resumable step, a finiteness check, evaluation on a schedule, records,
progress, the watchdog and checkpoints, with `resumed_writer` (records and clock across
resumes); `run_sft_chunked` is its warm-start phase
(`warmstart.sft_loop` in chunks) and `dynamic_sampling_advance` its DAPO dynamic-sampling
iteration.

`run_arm` is the loop every reproduction shares: from a start state, iterations on batches
drawn the same way for every arm of a seed (so arms see the same prompts), evaluation on a
schedule, wall-clock seconds without compiles, token counts (policy samples and host-side
Monte-Carlo completions), a finiteness check with a one-line error, progress for the
watchdog. An `ArmSteps` is either one jitted iteration (`step`, e.g. `lm.make_rl_update`) or
collect, host providers and update (`lm.host.make_iteration`). `run_grid` runs every arm for
every seed (seed-major) and appends each run's records to `metrics.jsonl`; `run_seeds_batched`
trains an arm's seeds together (`seeds_chunk`: scanned chunks vmapped over seeds, on
`seed_batches`); `header` is the
results.md paragraph of the run (command, commit, hardware, load, wall time). Host-side: it
calls jitted functions and reads arrays back; kernels never import it.
"""

import json
import time
from typing import Callable
from typing import Mapping
from typing import NamedTuple
from typing import Optional
from typing import Sequence

import jax
import numpy as np
import tqdm

from jaxca import bench
from jaxca import lm
from jaxca import metrics
from jaxca import report_arms
from jaxca import runs
from jaxca import warmstart


class ArmSteps(NamedTuple):
  """What `run_arm` iterates.

  Attributes:
    name: the arm's name (in every record).
    init: `init(params0, seed) -> state`, the learner state at iteration 0.
    step: either `lm.host.make_iteration(...)` (with `phased=True`), or a jitted
      `step(state, batch, key, hparams) -> (state, metrics)` such as `lm.make_rl_update`'s.
    phased: whether `step` is a `make_iteration` step.
    hparams: the estimator's traced hyper-parameters (single-step arms only).
  """

  name: str
  init: Callable
  step: Callable
  phased: bool = False
  hparams: Optional[Mapping] = None


def single_step(fn) -> Callable:
  """Wraps a jittable `fn(state, batch, key, hparams)` as an ahead-of-time compiled step."""
  return bench.Aot(fn)


def budget(rl) -> dict:
  """`run_arm`'s budget keywords from an `rl` config section (iterations, prompts, eval_every,
  max_wall_s), so the reproductions' configs spell them once."""
  return dict(
    iterations=rl.iterations,
    prompts=rl.prompts,
    eval_every=rl.eval_every,
    max_wall_s=rl.max_wall_s,
  )


def _evaluate(evaluate, params, test):
  return {f'eval_{k}': v for k, v in evaluate(params, test).items()}


def batch_indices(seed: int, iteration: int, num_train: int, size: int) -> np.ndarray:
  """The training prompts of one iteration: the same for every arm of a seed."""
  rng = np.random.default_rng([seed, iteration])
  return rng.choice(num_train, size, replace=False)


def run_arm(
  arm: ArmSteps,
  params0,
  seed: int,
  train: Mapping[str, np.ndarray],
  test,
  evaluate: Callable,
  *,
  iterations: int,
  prompts: int,
  eval_every: int,
  max_wall_s: float = float('inf'),
  max_tokens: float = float('inf'),
  primary: str = 'exact_match',
  keep: tuple = (),
  snapshot: Optional[Callable] = None,
  counters: tuple = (),
):
  """One learning run; returns (records, final state, snapshots {iteration: snapshot(state)}).

  Args:
    arm: the arm's jitted pieces.
    params0: start parameters (the warm start).
    seed: the run's seed (PRNG key `jax.random.key(seed)`, folded with the iteration).
    train: the training split, arrays with a leading prompt axis.
    test: what `evaluate` takes.
    evaluate: `evaluate(params, test) -> {metric: float}`, recorded as `eval_<metric>`.
    iterations: the budget in iterations; `max_wall_s` in seconds (compiles excluded);
      `max_tokens` in generated tokens (the `counters`' sum, `tokens`; phased arms): the run
      stops after the iteration that reaches it.
    prompts: prompts per iteration.
    eval_every: evaluation period (iterations); iteration 0 and the last are evaluated.
    primary: the task's main metric (`eval_<primary>` must be in the last record).
    keep: iterations to snapshot (and evaluate); -1 means the last.
    snapshot: `snapshot(state)`, what to keep (default: the parameters).
    counters: cumulative token counts to record (phased arms): 'policy_tokens' (sampled
      tokens) and `<name>_tokens` for a host stat `<name>_tokens_iter`; `tokens` is their sum.

  Records: arm, seed, iteration, wall (seconds without compiles), elapsed (with them),
  compile_s, the update's metrics, the host providers' stats, the `counters` and `tokens`,
  and for phased arms the sample_s / host_s / train_s split.

  Raises:
    FloatingPointError: a non-finite loss or parameters (one line; try a smaller lr).
  """
  key = jax.random.key(seed)
  state = arm.init(params0, seed)
  snapshot = snapshot or (lambda s: jax.device_get(s['params']))
  t_run = time.time()
  totals = {c: 0.0 for c in counters}
  rec0 = dict(arm=arm.name, seed=seed, iteration=0, wall=0.0, elapsed=0.0, compile_s=0.0)
  if totals:
    rec0.update(totals, tokens=0.0)
  rec0.update(_evaluate(evaluate, state['params'], test))
  records, snaps, wall, it = [rec0], {}, 0.0, 0
  num_train = len(next(iter(train.values())))
  while it < iterations and wall < max_wall_s and sum(totals.values()) < max_tokens:
    it += 1
    idx = batch_indices(seed, it, num_train, prompts)
    batch = {k: jax.numpy.asarray(v[idx]) for k, v in train.items()}
    k_iter = jax.random.fold_in(key, it)
    rec = dict(arm=arm.name, seed=seed, iteration=it)
    if arm.phased:
      state, m, stats, p_tok, timing = arm.step(state, batch, k_iter)
      compile_iter = timing.compile_s
      wall += timing.sample_s + timing.host_s + timing.train_s
      if 'policy_tokens' in totals:
        totals['policy_tokens'] += p_tok
      for k, v in stats.items():
        if k.endswith('_tokens_iter') and k[: -len('_iter')] in totals:
          totals[k[: -len('_iter')]] += v
      rec.update(wall=wall)
      if totals:
        rec.update(totals, tokens=sum(totals.values()))
      rec.update(timing._asdict(), **stats)
    else:
      t0, c0 = time.time(), arm.step.compile_s
      state, m = arm.step(state, batch, k_iter, arm.hparams)
      m = jax.device_get(jax.block_until_ready(m))
      compile_iter = arm.step.compile_s - c0
      wall += time.time() - t0 - compile_iter
      rec.update(wall=wall, compile_s=compile_iter)
    rec.update({k: float(v) for k, v in m.items()})
    rec['compile_s'] = compile_iter
    if not (np.isfinite(rec['loss']) and rec.get('params_finite', 1.0) == 1.0):
      raise FloatingPointError(
        f'{arm.name} seed {seed}: non-finite loss or parameters at iteration {it}; '
        'try a smaller learning rate.'
      )
    if it % eval_every == 0 or it in keep:
      rec.update(_evaluate(evaluate, state['params'], test))
    rec['elapsed'] = time.time() - t_run
    records.append(rec)
    if it in keep:
      snaps[it] = snapshot(state)
    runs.at(f'{arm.name} seed {seed} iteration {it}')
  if f'eval_{primary}' not in records[-1]:
    records[-1].update(_evaluate(evaluate, state['params'], test))
    records[-1]['elapsed'] = time.time() - t_run
  if -1 in keep:
    snaps[it] = snapshot(state)
  return records, state, snaps


def run_grid(
  path: str,
  arms: Sequence[str],
  seeds: Sequence[int],
  run_one: Callable[[str, int], list],
  note: Optional[Callable[[list], str]] = None,
) -> list:
  """Every arm for every seed, seed-major (all arms of a seed, then the next seed).

  `run_one(arm, seed) -> records` is one learning run (e.g. `run_arm`'s records); each run's
  records are appended to `path` (a fresh `metrics.jsonl`, one JSON object a line) as soon as
  the run ends, and `note(records)`, when given, goes to the log (`runs.note`). Returns every
  record, in order.
  """
  records = []
  with open(path, 'w') as f:
    for s in seeds:
      for a in arms:
        recs = run_one(a, s)
        for r in recs:
          f.write(json.dumps(r) + '\n')
        f.flush()
        records.extend(recs)
        if note is not None:
          runs.note(note(recs))
  return records


def seed_batches(
  data: Mapping[str, np.ndarray],
  keys: Sequence[str],
  batch_size: int,
  seed,
  num: int,
  per_call: int,
):
  """`num` chunks of training batches, each {key: [per_call, batch_size, ...]} drawn with
  replacement from `data` (arrays with a leading example axis); chunk `c` is a function of
  (`seed`, c) alone (`np.random.default_rng([seed, c])`)."""
  n = len(data[keys[0]])
  for c in range(num):
    idx = np.random.default_rng([seed, c]).integers(0, n, size=(per_call, batch_size))
    yield {k: data[k][idx] for k in keys}


def seeds_chunk(update: Callable) -> Callable:
  """`chunk(states, batches, keys, hparams) -> (states, metrics)`, jitted: a chunk of
  iterations `update(state, batch, key, hparams)` (`lax.scan` over the batches' leading
  axis; an iteration's key is `fold_in(key, state['step'])`), vmapped over seeds on axis 0 of
  the states, batches and keys; `hparams` (e.g. an arm's traced estimator options) shared."""

  def chunk(state, batches, key, hparams):
    def body(s, b):
      return update(s, b, jax.random.fold_in(key, s['step']), hparams)

    return jax.lax.scan(body, state, batches)

  return jax.jit(jax.vmap(chunk, in_axes=(0, 0, 0, None)))


def run_seeds_batched(
  chunk: Callable,
  state,
  per_seed: Sequence,
  keys,
  hparams,
  *,
  name: str,
  seeds: Sequence[int],
  iterations: int,
  per_call: int,
  eval_every: int,
  run_eval: Callable,
  write: Callable,
  evaluation0: Mapping = (),
  phase: str = 'rl',
):
  """One arm's seeds trained together: `chunk` (`seeds_chunk`) on batches stacked over seeds.

  Args:
    chunk: `chunk(states, batches, keys, hparams) -> (states, metrics)`, seeds on axis 0.
    state: the seeds' learner states stacked on axis 0.
    per_seed: one iterator of chunks of batches per seed (`seed_batches`), in `seeds`' order.
    keys: the seeds' PRNG keys stacked on axis 0.
    hparams: the arm's traced hyper-parameters.
    name, seeds: the arm and its seeds (in every record).
    iterations, per_call: the run's iterations and iterations per chunk.
    eval_every: evaluate every seed's parameters (`run_eval(params) -> {metric: float}`,
      recorded as `eval_<metric>` with `wall`, the seconds so far) when a chunk ends on a
      multiple of it.
    write: `write(iteration, record) -> record` (`metrics.Writer.write`).
    evaluation0: the evaluation at iteration 0, the same for every seed (one start).
    phase: every record's `phase`.

  Records: one per seed at iteration 0, then one per iteration and seed (iteration-major)
  with the update's metrics. Raises (`runs.check_finite`) on a non-finite loss.

  Returns:
    (state, records, first_call_s): the final states, the records and the seconds of the
    first chunk call (its compile, when nothing compiled it before).
  """
  t0 = time.time()
  at = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
  rows = []
  for seed in seeds:
    rec = dict(phase=phase, arm=name, seed=seed, iteration=0)
    rows.append(write(0, dict(rec, **{f'eval_{k}': v for k, v in dict(evaluation0).items()})))
  it, first_call_s = 0, None
  bar = tqdm.tqdm(total=iterations, desc=f'{name} ({len(seeds)} seeds)')
  for bs in zip(*per_seed):
    b = {k: np.stack([x[k] for x in bs]) for k in bs[0]}
    tc = time.time()
    state, m = chunk(state, b, keys, hparams)
    m = jax.device_get(m)
    if first_call_s is None:
      first_call_s = time.time() - tc
    runs.check_finite(dict(loss=m['loss']), ('loss',), phase=f'RL {name}', step=it + per_call)
    due = (it + per_call) % eval_every == 0
    evals = [run_eval(at(state['params'], j)) for j in range(len(seeds))] if due else []
    for i in range(per_call):
      it += 1
      for j, seed in enumerate(seeds):
        rec = dict(phase=phase, arm=name, seed=seed, iteration=it)
        rec.update({k: float(v[j, i]) for k, v in m.items()})
        if i == per_call - 1 and evals:
          rec.update({f'eval_{k}': v for k, v in evals[j].items()})
          rec['wall'] = time.time() - t0
        rows.append(write(it, rec))
    bar.update(per_call)
    runs.at(f'{name}, iteration {it} of {iterations}')
  bar.close()
  return state, rows, first_call_s


def header(name: str, t_start: float, load_start: float, **kwargs) -> str:
  """`report_arms.run_header` of experiment `name`'s run started at `t_start` (time.time())
  with the load average `load_start`: this process's command, the code's commit, the
  platform, the load now and the wall time so far; `kwargs` as `run_header`'s (parts,
  compiles, note)."""
  return report_arms.run_header(
    report_arms.command_line(f'experiments.{name}'),
    runs.git_commit(),
    platform=jax.devices()[0].platform,
    load_start=load_start,
    load_end=bench.load_average(),
    total_s=time.time() - t_start,
    **kwargs,
  )


def resumed_writer(workdir, keep: Callable, purge_steps: Mapping, start: float, cpu_start=None):
  """(writer, now) of a single run resumed in `workdir` (None: no files).

  The records of `metrics.jsonl` that `keep(record)` (those up to the checkpoint it resumes
  from) are kept, the others dropped and recomputed (`metrics.Writer`'s `purge_steps`);
  `now()` gives the clock fields of a record across resumes: `time`, the wall clock since the
  run's first start (`start` = this process's `time.time()` at its start), and with
  `cpu_start` (this process's `time.process_time()` then) `cpu_time`, the CPU time of all
  threads. One writer on multi-host runs (process 0).
  """
  kept = [r for r in (metrics.read(workdir) if workdir else []) if keep(r)]
  base = max([r['time'] for r in kept] + [0.0])
  cpu_base = None
  if cpu_start is not None:
    cpu_base = max([r.get('cpu_time', 0.0) for r in kept] + [0.0]) - cpu_start

  def now():
    out = dict(time=base + time.time() - start)
    if cpu_base is not None:
      out['cpu_time'] = cpu_base + time.process_time()
    return out

  writer = metrics.Writer(
    workdir if jax.process_index() == 0 else None,
    keep=lambda r: r in kept,
    purge_steps=dict(purge_steps),
  )
  return writer, now


def check_finite(m, phase: str, step: int, checkpointer=None):
  """Stops the run with one line (`runs.check_finite`) on a non-finite loss, gradient norm or
  parameters (`m['params_finite'] < 1`) in a chunk's metrics `m`."""
  checks = dict(m, params_finite=np.where(np.asarray(m['params_finite']) < 1, np.nan, 1.0))
  runs.check_finite(
    checks,
    ('loss', 'grad_norm', 'params_finite'),
    phase=phase,
    step=step,
    checkpointer=checkpointer,
  )


def run_chunked(
  advance: Callable,
  state,
  *,
  step: int,
  steps: int,
  per_call: int,
  eval_every: int,
  run_eval: Callable,
  writer,
  now: Callable,
  evaluated: Callable,
  checkpointer=None,
  desc: str = 'RL',
  postfix: Optional[Callable] = None,
):
  """Runs `advance` from `step` until `steps`; returns the final state.

  Args:
    advance: `advance(state, step) -> (state, metrics)`: `per_call` iterations (one jitted
      chunk), metrics on the host with a leading iteration axis.
    state: the learner state at `step` (fresh or restored).
    step, steps, per_call: where the run is, its budget, iterations per chunk.
    eval_every: evaluation period; the last step is always evaluated.
    run_eval: `run_eval(params) -> {eval_<metric>: float}`.
    writer: a `metrics.Writer`; each chunk writes one record at its last step (phase 'rl':
      `metrics.summarize` of the chunk, the evaluation when due, and `now()`).
    now: `now() -> {time: ...}`, the clock fields of a record.
    evaluated: `evaluated() -> bool`, whether `run_eval` has compiled in this process (the
      watchdog allows a slow next step while it has not).
    checkpointer: saves on its schedule and at the last step.
    desc, postfix: the progress bar's label and `postfix(record) -> dict`.
  """

  def evals_first(step):  # the chunk after `step` compiles `run_eval` (a resumed run)
    nxt = step + per_call
    return not evaluated() and (nxt % eval_every == 0 or nxt >= steps)

  # The first chunk compiles (on a resume too): the watchdog's first-step allowance.
  runs.at(f'RL step {step} of {steps}', next_compiles=True)
  with tqdm.tqdm(total=steps, initial=step, desc=desc) as bar:
    while step < steps:
      state, m = advance(state, step)
      step += per_call
      check_finite(m, 'RL', step, checkpointer)
      rec = dict(phase='rl', **metrics.summarize(m))
      if step % eval_every == 0 or step >= steps:
        rec.update(run_eval(state['params']))
      writer.write(step, dict(rec, **now()))
      bar.update(per_call)
      if postfix:
        bar.set_postfix(postfix(rec))
      # After the last step the results and the plot are written (matplotlib loads).
      slow = evals_first(step) or step >= steps
      runs.at(f'RL step {step} of {steps}', next_compiles=slow)
      if checkpointer:
        checkpointer.maybe_save(step, state, force=step >= steps)
  return state


def dynamic_sampling_advance(
  collect: Callable,
  update: Callable,
  batches: Callable,
  rl_key,
  *,
  group_size: int,
  max_gen_batches: int,
  place: Callable = lambda rows: rows,
) -> Callable:
  """`advance(state, step) -> (state, metrics)` for `run_chunked` with DAPO dynamic sampling
  (arXiv 2503.14476): one RL iteration per call.

  `lm.collect_dynamic` draws generation batches from `batches(step)` (an iterator: a resumed
  run sees the prompts an uninterrupted one would) with `collect` until the informative groups
  fill the batch, `place(rows)` puts the rows on the devices, and `update(state, rows, key)`
  runs the epochs. The sampling and epoch keys come from `fold_in(rl_key, step)`.
  """

  def advance(state, step):
    it = batches(step)
    sample_key, epoch_key = jax.random.split(jax.random.fold_in(rl_key, step))
    rows, gen = lm.collect_dynamic(
      collect,
      state,
      lambda: next(it),
      sample_key,
      group_size=group_size,
      max_gen_batches=max_gen_batches,
    )
    state, m = update(state, place(rows), epoch_key)
    return state, dict(jax.device_get(m), **gen)

  return advance


def run_sft_chunked(
  advance: Callable,
  state,
  *,
  step: int,
  ws,
  validate: Callable,
  writer,
  now: Callable,
  checkpointer=None,
):
  """Runs (or resumes from `state` at `step`) a chunked warm start; returns its parameters.

  The loop is `warmstart.sft_loop`: it stops at `ws.steps` or at the first evaluation whose
  VALIDATION exact match (`val_exact_match`) reaches `ws.stop_at_accuracy`. Each chunk is
  checked for finiteness (`check_finite`), writes one record (phase 'warmstart': the chunk's
  `metrics.summarize`, the evaluation when due and `now()`), reports progress to the watchdog
  (the step after the last compiles RL) and saves on the checkpointer's schedule.

  Args:
    advance: `advance(state) -> (state, metrics)`: `ws.steps_per_call` SFT steps (one jitted
      chunk), metrics with a leading step axis.
    state, step: the SFT state and its step (0 for a fresh start).
    ws: the `warmstart` section (`steps`, `steps_per_call`, `eval_every`, `stop_at_accuracy`).
    validate: `validate(params) -> dict` with `val_exact_match` (and recorded `eval_*`).
    writer, now, checkpointer: as `run_chunked`'s.
  """
  if step:
    runs.note(f'resumed the warm start from step {step}')
  with tqdm.tqdm(total=ws.steps, initial=step, desc='warm start') as bar:

    def chunk(state, step):
      state, m = advance(state)
      m = jax.device_get(m)
      check_finite(m, 'warm-start', step + ws.steps_per_call, checkpointer)
      return state, m

    def on_step(step, state, m, evaluation, done):
      rec = dict(phase='warmstart', **metrics.summarize(m))
      if evaluation is not None:
        rec.update(evaluation)
        bar.set_postfix(em=f'{rec["eval_exact_match"]:.2f}')
      writer.write(step, dict(rec, **now()))
      bar.update(ws.steps_per_call)
      runs.at(f'warm-start step {step} of {ws.steps}', next_compiles=done)  # then RL compiles
      if checkpointer:
        checkpointer.maybe_save(step, state, force=done)

    state, step, curve = warmstart.sft_loop(
      state,
      step,
      advance=chunk,
      validate=validate,
      max_steps=ws.steps,
      eval_every=ws.eval_every,
      stop_at=ws.stop_at_accuracy,
      steps_per_call=ws.steps_per_call,
      on_step=on_step,
    )
    if curve and step < ws.steps:  # close the bar at 100%, saying why it stopped
      bar.total = step
      bar.set_description(
        f'warm start (stopped early: validation target {ws.stop_at_accuracy:.0%} reached)'
      )
      bar.refresh()
  return state['params']
