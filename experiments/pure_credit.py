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
step. Where runs write, config drift, errors and the closing line: `jaxca.runs`.
"""

import collections
import json
import os
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from configs import pure_credit as config_mod
from jaxca import bench
from jaxca import credit
from jaxca import estimators
from jaxca import lm
from jaxca import metrics
from jaxca import ops
from jaxca import prm as prm_lib
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import sampling
from jaxca import tasks
from jaxca import train as train_lib
from jaxca import warmstart
from jaxca.networks import transformer
from jaxca.objectives import kl
from jaxca.objectives import losses
from jaxca.tasks import base

FLAGS = flags.FLAGS
NAME = 'pure_credit'
SAFE_KEYS = ()
BATCH_KEYS = ('prompts', 'targets', 'answers', 'intermediates', 'index')
TRANSFORMS = estimators.pure.PURE_TRANSFORMS
BASELINES = estimators.pure.PURE_BASELINES
# The gate's VR-only baseline, in order of preference (see configs/pure_credit.py): with one-token
# steps, masking the closers leaves stop/continue without a gradient and the VR-only learner
# drifts to malformed endings (the masked A1 collapsed in 3 of 4 seeds after ~100 iterations).
BASELINE_ARMS = ('A1n_vr_only_nomask', 'A1_vr_only')


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


# ----------------------------------------------------------------------------- metrics


def batch_metrics(task, prm_scores, responses, mask, prompts, ref_log_probs=None, log_probs=None):
  """Per-batch scalars of responses (traced): PRM, step kinds, length, step correctness."""
  steps = task.parse_steps(responses, mask)
  chk = prm_lib.step_checks(task, prompts, responses, mask, steps)
  valid = steps.valid
  k = task.num_steps
  big = 2.0
  pr = jnp.where(valid, prm_scores, 0.0)
  pr_min = jnp.min(jnp.where(valid, pr, big), axis=-1)
  pr_min = jnp.where(jnp.any(valid, -1), pr_min, 0.0)
  softmin = jnp.sum(credit.min_form_rewards(pr, 0.1, mask=valid), axis=-1)
  kinds = steps.kinds
  count = lambda kind: jnp.sum(kinds == kind, axis=-1).astype(jnp.float32)  # noqa: E731
  tok = jnp.where(mask, responses, task.vocab.pad_id)
  has_eos = jnp.any(tok == task.vocab.eos_id, axis=-1)
  out = dict(
    prm_sum=jnp.mean(jnp.sum(pr, -1)),
    prm_min=jnp.mean(pr_min),
    prm_softmin=jnp.mean(softmin),
    value_steps=jnp.mean(count(base.STEP_VALUE)),
    think_steps=jnp.mean(count(base.STEP_FILLER)),
    malformed_steps=jnp.mean(count(base.STEP_MALFORMED)),
    length=jnp.mean(jnp.sum(mask, -1).astype(jnp.float32)),
    truncated=jnp.mean((~has_eos).astype(jnp.float32)),
    step1_global=jnp.mean(jnp.any(chk.global_ok & (chk.value_index == 0), -1).astype(jnp.float32)),
  )
  for j in range(k):
    at_j = chk.value_index == j
    has_j = jnp.any(at_j, -1)
    local = jnp.any(chk.local_ok & at_j, -1)
    out[f'local_ok_{j + 1}'] = jnp.sum(local) / jnp.maximum(jnp.sum(has_j), 1)
    glob = jnp.any(chk.global_ok & at_j, -1)
    out[f'global_ok_{j + 1}'] = jnp.mean(glob.astype(jnp.float32))
  if ref_log_probs is not None:
    k3 = kl.kl_k3(log_probs, ref_log_probs, mask)
    out['kl_tok'] = ops.masked_mean(k3, mask)
    out['kl_seq'] = jnp.mean(jnp.sum(jnp.where(mask, k3, 0.0), -1))
  return out


def canonical(task, responses, mask, batch):
  """[B] 1.0 where a response is the filler-free chain `v1 ; v2 ; ... vK EOS` with every value
  right (greedy exact match; the SFT targets carry random fillers, so they are not the key)."""
  steps = task.parse_steps(responses, mask)
  chk = prm_lib.step_checks(task, batch['prompts'], responses, mask, steps)
  kinds = steps.kinds
  clean = ~jnp.any(steps.valid & (kinds != base.STEP_VALUE), axis=-1)
  right = jnp.sum(chk.global_ok & steps.valid, axis=-1) == task.num_steps
  return (clean & right).astype(jnp.float32)


def make_metrics_fn(task):
  def metrics_fn(ctx, traj, targets):
    del targets
    out = batch_metrics(
      task,
      traj.step_rewards,
      ctx.responses,
      ctx.mask,
      ctx.batch['prompts'],
      ctx.ref_log_probs,
      ctx.log_probs,
    )
    out['entropy'] = ops.masked_mean(losses.entropy_from_logits(ctx.response_logits), ctx.mask)
    correct = task.outcome(ctx.responses, ctx.mask, ctx.batch)
    ref = ctx.batch['index'] % 10 == 0
    out['acc_ref'] = jnp.sum(jnp.where(ref, correct, 0.0)) / jnp.maximum(jnp.sum(ref), 1)
    out['acc_noref'] = jnp.sum(jnp.where(ref, 0.0, correct)) / jnp.maximum(jnp.sum(~ref), 1)
    return out

  return metrics_fn


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
      group_size=config.rl.group_size,
      num_epochs=config.rl.num_epochs,
      num_minibatches=config.rl.num_minibatches,
      temperature=config.rl.temperature,
      reward='outcome',
      loss_cfg=config.loss,
      providers=dict(providers, step_rewards=prm_lib.provider(prm)),
      metrics_fn=make_metrics_fn(task),
    )
  voc = task.vocab

  def generate(params, prompts, key, greedy, num_samples=1):
    return sampling.sample(
      policy,
      params,
      key,
      prompts,
      lm.prompt_mask(task, prompts),
      num_samples=num_samples,
      max_new_tokens=task.response_len,
      temperature=1.0,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
      greedy=greedy,
    )

  def evaluate(params, batch):
    s = generate(params, batch['prompts'], jax.random.key(0), True)
    out = batch_metrics(task, prms['B'].score(None, batch['prompts'], s.responses, s.mask),
                        s.responses, s.mask, batch['prompts'])  # fmt: skip
    correct = task.outcome(s.responses, s.mask, batch)
    out['accuracy'] = jnp.mean(correct)  # greedy final answer
    out['exact_match'] = jnp.mean(canonical(task, s.responses, s.mask, batch) * correct)
    return out

  def probe(params, batch, key):  # sampled (T=1) responses of the warm start
    s = generate(params, batch['prompts'], key, False)
    steps = task.parse_steps(s.responses, s.mask)
    return dict(
      think_per_response=jnp.mean(jnp.sum(steps.kinds == base.STEP_FILLER, -1).astype(jnp.float32)),
      accuracy=jnp.mean(task.outcome(s.responses, s.mask, batch)),
    )

  return Parts(
    task,
    policy,
    estimator,
    prms,
    lm.make_init(policy, sft_tx),
    lm.make_sft_update(policy, task, sft_tx),
    lambda params: lm.init_from_params(params, rl_tx, with_ref=True),
    rl_update,
    evaluate,
    probe,
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


def batches(data, batch_size, seed, num, per_call):
  """[per_call, batch_size, ...] chunks of train batches, a function of (seed, chunk)."""
  n = len(data['index'])
  for c in range(num):
    rng = np.random.default_rng([seed, c])
    idx = rng.integers(0, n, size=(per_call, batch_size))
    yield {k: data[k][idx] for k in BATCH_KEYS}


# ----------------------------------------------------------------------------- run


def run(config, workdir):
  """Warm start, then every arm x seed; writes metrics.jsonl, results.md and figures."""
  start = time.time()
  load_start = bench.load_average()
  parts = build(config)
  task = parts.task
  train, val, test = make_data(task, config)
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
  ws_rows = []
  chunks = batches(train, ws.batch_size, config.seed + 1000, n_chunks, ws.steps_per_call)
  bar = tqdm.tqdm(total=n_chunks, desc='warm start')

  def advance(state, step):
    del step
    chunk = {k: v for k, v in next(chunks).items() if k in ('prompts', 'targets')}
    return sft_chunk(state, chunk)

  def validate(params):  # validation decides the stop; the held-out metrics are recorded
    val_acc = float(evaluate(params, val_b)['accuracy'])
    return dict(val_accuracy=val_acc, **run_eval(params))

  def on_step(step, state, m, evaluation, done):
    del state, done
    bar.update(1)
    if evaluation is not None:
      rec = dict(phase='warmstart', loss=float(m['loss'][-1]), **evaluation)
      ws_rows.append(writer.write(step, rec))
      runs.at(f'warm-start step {step}')

  state, step, curve = warmstart.sft_loop(
    state,
    0,
    advance=advance,
    validate=validate,
    max_steps=n_chunks * ws.steps_per_call,
    eval_every=ws.eval_every,
    stop_at=ws.target_low,
    steps_per_call=ws.steps_per_call,
    on_step=on_step,
    metric='val_accuracy',
  )
  bar.close()
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
  rl = config.rl
  per_call = rl.iters_per_call
  seeds = list(config.seeds)

  def make_chunk(update):
    def chunk(state, batches_, key, hparams):
      def body(s, b):
        return update(s, b, jax.random.fold_in(key, s['step']), hparams)

      return jax.lax.scan(body, state, batches_)

    return jax.jit(jax.vmap(chunk, in_axes=(0, 0, 0, None)))  # seeds on axis 0

  chunks = {v: make_chunk(u) for v, u in parts.rl_update.items()}
  rl_init = jax.jit(parts.rl_init)
  seed_keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(config.seed), 100 + s))(
    jnp.asarray(seeds, jnp.int32)
  )
  at = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
  greedy = make_greedy(parts)
  compile_s = {}
  rows, walls = [], {}
  for arm_name in config.arms:
    arm = config_mod.ARMS[arm_name]
    hp = arm_hparams(parts.estimator, arm, config)
    state = rl_init(ws_params)
    state = jax.tree.map(lambda x: jnp.stack([x] * len(seeds)), state)
    fresh = arm['prm'] not in compile_s  # this arm's first chunk compiles
    t_arm = time.time()
    for seed in seeds:
      rec = dict(
        phase='rl',
        arm=arm_name,
        seed=seed,
        iteration=0,
        **{f'eval_{k}': v for k, v in ws_eval.items()},
      )
      rows.append(writer.write(0, rec))
    it = 0
    bar = tqdm.tqdm(total=rl.iterations, desc=f'{arm_name} ({len(seeds)} seeds)')
    per_seed = [
      batches(train, rl.prompts_per_iter, 10_000 + seed, rl.iterations // per_call, per_call)
      for seed in seeds
    ]
    for bs in zip(*per_seed):
      b = {k: np.stack([x[k] for x in bs]) for k in bs[0]}
      tc = time.time()
      state, m = chunks[arm['prm']](state, b, seed_keys, hp)
      m = jax.device_get(m)
      if arm['prm'] not in compile_s:
        compile_s[arm['prm']] = time.time() - tc
      runs.check_finite(dict(loss=m['loss']), ('loss',), phase=f'RL {arm_name}', step=it + per_call)
      evaluate_now = (it + per_call) % config.eval.every == 0
      evals = [run_eval(at(state['params'], j)) for j in range(len(seeds))] if evaluate_now else []
      for i in range(per_call):
        it += 1
        for j, seed in enumerate(seeds):
          rec = dict(phase='rl', arm=arm_name, seed=seed, iteration=it)
          rec.update({k: float(v[j, i]) for k, v in m.items()})
          if i == per_call - 1 and evals:
            rec.update({f'eval_{k}': v for k, v in evals[j].items()})
            rec['wall'] = time.time() - t_arm
          rows.append(writer.write(it, rec))
      bar.update(per_call)
      runs.at(f'{arm_name}, iteration {it} of {rl.iterations}')
    bar.close()
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
        _write_samples(workdir, parts, greedy, at(state['params'], j), test_b, arm_name, seed)
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
  summary = write_results(workdir, config, rows, walls, info)
  return summary


def make_greedy(parts):
  """A jitted greedy sampler of a few responses (compiled once, shared by every arm)."""
  voc = parts.task.vocab
  return jax.jit(lambda p, b: sampling.sample(
    parts.policy, p, jax.random.key(0), b['prompts'], lm.prompt_mask(parts.task, b['prompts']),
    num_samples=1, max_new_tokens=parts.task.response_len, eos_id=voc.eos_id, pad_id=voc.pad_id,
    greedy=True))  # fmt: skip


def _write_samples(workdir, parts, greedy, params, test_b, arm_name, seed):
  """A few greedy responses of the final policy, decoded (samples.json)."""
  small = {k: v[:4] for k, v in test_b.items()}
  voc = parts.task.vocab
  s = jax.device_get(greedy(params, small))
  path = os.path.join(workdir, 'samples.json')
  data = json.load(open(path)) if os.path.exists(path) else {}
  data[f'{arm_name}/seed{seed}'] = [
    f'{voc.decode(p)}  ->  {voc.decode(r[m])}'
    for p, r, m in zip(np.asarray(small['prompts']), s.responses, s.mask)
  ]
  with open(path, 'w') as f:
    json.dump(data, f, indent=1)


# ----------------------------------------------------------------------------- results

COLS = (
  'accuracy',
  'malformed_steps',
  'prm_sum',
  'prm_min',
  'think_steps',
  'value_steps',
  'length',
  'truncated',
  'kl_seq',
  'step1_global',
)


def curves(rows, arm, key, seed=None):
  """(iterations, values [seeds, iters]) of a training metric for one arm."""
  by_seed = collections.defaultdict(list)
  for r in rows:
    if r.get('arm') == arm and r['iteration'] > 0 and key in r:
      by_seed[r['seed']].append((r['iteration'], r[key]))
  seeds = sorted(by_seed) if seed is None else [seed]
  its = [i for i, _ in by_seed[seeds[0]]]
  return np.asarray(its), np.asarray([[v for _, v in by_seed[s]] for s in seeds])


def eval_curve(rows, arm, key='eval_accuracy'):
  by_seed = collections.defaultdict(list)
  for r in rows:
    if r.get('arm') == arm and key in r:
      by_seed[r['seed']].append((r['iteration'], r[key]))
  seeds = sorted(by_seed)
  its = [i for i, _ in by_seed[seeds[0]]]
  return np.asarray(its), np.asarray([[v for _, v in by_seed[s]] for s in seeds])


def arm_stats(rows, arm, walls, warm, tail=5):
  """Per-seed numbers for the results table (training metrics averaged over the last `tail`)."""
  out = collections.defaultdict(list)
  its, acc = eval_curve(rows, arm)
  _, exact = eval_curve(rows, arm, 'eval_exact_match')
  for si, seed in enumerate(sorted({r['seed'] for r in rows if r.get('arm') == arm})):
    out['final_acc'].append(acc[si, -1])
    out['final_exact'].append(exact[si, -1])
    best = int(np.argmax(acc[si]))
    out['best_acc'].append(acc[si, best])
    out['best_iter'].append(its[best])
    for c in COLS:
      _, v = curves(rows, arm, c, seed)
      out[c].append(float(np.mean(v[0, -tail:])))
    _, th = curves(rows, arm, 'think_steps', seed)
    over = np.flatnonzero(th[0] > 2)
    out['think_gt2_iter'].append(int(over[0]) + 1 if len(over) else None)
    _, th_eval = eval_curve(rows, arm, 'eval_think_steps')
    out['eval_think'].append(th_eval[si, -1])
    _, ps = curves(rows, arm, 'prm_sum', seed)
    out['prm_sum_first'].append(float(np.mean(ps[0, :tail])))
    _, s1 = curves(rows, arm, 'step1_global', seed)
    out['step1_first'].append(float(np.mean(s1[0, :tail])))
    out['wall'].append(walls.get((arm, seed), float('nan')))
    out['collapsed'].append(acc[si, -1] < 0.5 * warm)
  return out


def _fmt(vals, pct=False, digits=2):
  return report.fmt_range(vals, digits, pct, empty='never')


METRICS = (
  ('final_exact', 'greedy exact match %'),
  ('final_acc', 'greedy final answer %'),
  ('accuracy', 'sampled accuracy % (last 5 it.)'),
)


def metrics_table(stats, arms, warm_exact, warm):
  """Markdown: per arm, the three held-out / training metrics per seed and mean [95% CI]."""
  lines = [
    '| arm | ' + ' | '.join(f'{t} per seed | {t} mean ± sd [95% CI]' for _, t in METRICS) + ' |',
    '|' + '---|' * (1 + 2 * len(METRICS)),
    f'| warm start | {100 * warm_exact:.1f} | - | {100 * warm:.1f} | - | - | - |',
  ]
  for a in arms:
    cells = []
    for key, _ in METRICS:
      vals = stats[a][key]
      cells += [', '.join(report.fmt(v, pct=True) for v in vals), report.fmt_ci(vals, pct=True)]
    lines.append(f'| {a} | ' + ' | '.join(cells) + ' |')
  return lines


def mask_line(stats):
  """The separator-masking ablation (A3 vs A3n), reported, not judged."""
  a, b = stats.get('A3_min_prm'), stats.get('A3n_min_nomask')
  if not (a and b):
    return []
  return [
    '- **Separator masking** (reported, no rule): A3_min_prm (closers masked, the official '
    "code's default) vs A3n_min_nomask (closers keep their advantage): final greedy accuracy "
    f'{_fmt(a["final_acc"], True, 1)}% vs {_fmt(b["final_acc"], True, 1)}%, value steps / '
    f'response {_fmt(a["value_steps"])} vs {_fmt(b["value_steps"])}, length '
    f'{_fmt(a["length"], digits=1)} vs {_fmt(b["length"], digits=1)} tokens, malformed steps '
    f'/ response {_fmt(a["malformed_steps"])} vs {_fmt(b["malformed_steps"])}.'
  ]


def baseline_arm(arms):
  """The VR-only arm the gate reads: without separator masking if run, else the masked one."""
  return next((a for a in BASELINE_ARMS if a in arms), BASELINE_ARMS[0])


def _h2(a3, warm, label):
  """H2 (min-PRM is not hacked and improves accuracy) for one min-PRM arm's stats."""
  ok = (
    all(t < 0.5 for t in a3['think_steps'])
    and all(t < 0.05 for t in a3['truncated'])
    and all(f >= warm + 0.10 for f in a3['final_acc'])
  )
  bad = any(ln > 12 for ln in a3['length']) or any(f < warm for f in a3['final_acc'])
  outcome = 'CONFIRMED' if ok else ('REFUTED' if bad else 'INCONCLUSIVE')
  return report.Verdict(
    f'H2 (min-PRM not hacked, improves accuracy; {label})',
    outcome,
    'confirmed if THINK/resp < 0.5, trunc. < 5% and final accuracy >= warm + 10 points in '
    'every seed; refuted by length inflation or accuracy below warm',
    {
      'THINK/resp': _fmt(a3['think_steps']),
      'truncation %': _fmt(a3['truncated'], True, 1),
      'final accuracy %': _fmt(a3['final_acc'], True, 1),
      'warm %': f'{100 * warm:.1f}',
    },
    '' if ok or bad else 'not confirmed: no inflation, gain < 10 points',
  )


def judge(stats, warm, have, smoke=False):
  """The H1-H3 confirm / refute rules (REPRODUCTIONS-style criteria, stated in full), judged
  behind the VR-only (GRPO) baseline gate of `jaxca.report`; returns markdown lines."""
  claims = []
  a1, a2, a3, a4 = (stats.get(k) for k in have)
  a3n = stats.get('A3n_min_nomask')
  if a2:
    hacked = all(t > 3 for t in a2['think_steps'])
    collapsed = all(a2['collapsed'])
    rises = all(b > a for a, b in zip(a2['prm_sum_first'], a2['prm_sum']))
    note = ''
    if hacked and collapsed and rises:
      outcome = 'CONFIRMED'
    elif all(t < 1 for t in a2['think_steps']) and all(f >= warm for f in a2['final_acc']):
      outcome = 'REFUTED'
    elif any(t > 1 for t in a2['think_steps']) or any(ln > 10 for ln in a2['length']):
      outcome = 'INCONCLUSIVE'
      note = 'partial: hacked but not collapsed' if not collapsed else 'partial'
    else:
      outcome = 'INCONCLUSIVE'
    claims.append(
      report.Verdict(
        'H1 (sum-PRM is hacked and collapses)',
        outcome,
        'confirmed if in every seed THINK/resp > 3, final greedy accuracy < 0.5 x warm start '
        'and PRM-sum rising; refuted if THINK/resp < 1 and accuracy >= warm in every seed; '
        '"hacked but not collapsed" is partial',
        {
          'THINK/resp': _fmt(a2['think_steps']),
          'final accuracy %': _fmt(a2['final_acc'], True, 1),
          'warm %': f'{100 * warm:.1f}',
          'PRM-sum': f'{_fmt(a2["prm_sum_first"])} -> {_fmt(a2["prm_sum"])}',
        },
        note,
      )
    )
  for arm, label in ((a3, 'closers masked, the official code'), (a3n, 'closers not masked')):
    if arm:
      claims.append(_h2(arm, warm, label))
  if a3 and a4:
    diff = [b - a for a, b in zip(a3['final_acc'], a4['final_acc'])]
    s1_4 = all(b > a for a, b in zip(a4['step1_first'], a4['step1_global']))
    s1_3 = all(b > a for a, b in zip(a3['step1_first'], a3['step1_global']))
    note = ''
    if all(d >= 0.10 for d in diff) and s1_4 and not s1_3:
      outcome = 'CONFIRMED'
    elif np.mean(diff) <= 0:
      outcome = 'REFUTED'
    else:
      outcome, note = 'INCONCLUSIVE', 'not confirmed: A4 > A3 but below the bar'
    claims.append(
      report.Verdict(
        'H3 (10% VR helps min-PRM)',
        outcome,
        "confirmed if A4 - A3 >= +10 points final accuracy and A4's step-1 accuracy rises while "
        "A3's does not; refuted if A4 <= A3",
        {
          'A4 - A3 points': _fmt(diff, True, 1),
          'step-1 accuracy A3 %': f'{_fmt(a3["step1_first"], True, 1)} -> '
          f'{_fmt(a3["step1_global"], True, 1)}',
          'step-1 accuracy A4 %': f'{_fmt(a4["step1_first"], True, 1)} -> '
          f'{_fmt(a4["step1_global"], True, 1)}',
        },
        note,
      )
    )
  gate = None
  if a1:
    noise = stats.get(report.NOISE_FLOOR_ARM)
    gate = report.gate(
      a1['final_acc'], warm, noise['final_acc'] if noise else None, baseline=have[0]
    )
  return [report.expected_vs_observed(claims, gate, smoke)]


def h4_line(rows, stats, have):
  a1, _, a3, _ = have
  if not (stats.get(a1) and stats.get(a3)):
    return []
  target = 0.9 * np.mean(stats[a1]['final_acc'])
  out = []
  for arm in (a1, a3):
    its, acc = eval_curve(rows, arm)
    first = []
    for s in range(acc.shape[0]):
      hit = np.flatnonzero(acc[s] >= target)
      first.append(int(its[hit[0]]) if len(hit) else None)
    out.append(f'{arm}: {first}')
  return [
    f"- **H4** (measured, not pass/fail at K=3): first evaluated iteration reaching 90% of A1's "
    f'final accuracy ({100 * target:.1f}%), per seed: ' + '; '.join(out) + '.'
  ]


F1_PANELS = tuple(
  ra.Panel(
    'iteration', key, ylabel='', title=title, where=lambda r: r['iteration'] > 0, marker=False
  )
  for key, title in (
    ('accuracy', 'true accuracy (sampled)'),
    ('prm_sum', 'PRM sum'),
    ('think_steps', 'THINK steps / response'),
    ('length', 'length (tokens)'),
    ('truncated', 'truncation rate'),
    ('kl_seq', 'KL / sequence (k3)'),
  )
)


def write_results(workdir, config, rows, walls, info):
  """results.md, the figures F1-F3; returns the summary line."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  warm = info['warmstart']['greedy_accuracy']
  arms = list(config.arms)
  stats = {a: arm_stats(rows, a, walls, warm) for a in arms}
  have = (baseline_arm(arms), 'A2_sum_prm', 'A3_min_prm', 'A4_min_prm_vr10')
  with open(os.path.join(workdir, 'stats.json'), 'w') as f:
    json.dump(dict(stats=stats, info=info), f, indent=1, default=float)

  seeds = list(config.seeds)
  ra.curves_figure(  # F1: training metrics, mean over seeds, shaded between min and max
    os.path.join(workdir, 'f1_curves.png'), ra.by_run(rows, arms, seeds), arms, seeds,
    F1_PANELS, mean_over_seeds=True, band=True, ncols=3, dpi=90,
  )  # fmt: skip
  # F2
  fig, ax = plt.subplots(figsize=(6, 5))
  for a in arms:
    _, x = curves(rows, a, 'prm_sum')
    _, y = curves(rows, a, 'accuracy')
    ax.plot(x.mean(0), y.mean(0), '-o', ms=2, label=a)
    ax.plot(x.mean(0)[-1:], y.mean(0)[-1:], 'k*')
  ax.set(
    xlabel='PRM reward (sum over steps)', ylabel='true accuracy (sampled)', title='Goodhart plot'
  )
  ax.legend(fontsize=7)
  fig.savefig(os.path.join(workdir, 'f2_goodhart.png'), dpi=90, bbox_inches='tight')
  plt.close(fig)
  # F3
  fig, ax = plt.subplots(figsize=(6, 4))
  for a, style in (('A3_min_prm', '-'), ('A4_min_prm_vr10', '--')):
    if a not in arms:
      continue
    for j in range(config.task.num_steps):
      its, v = curves(rows, a, f'global_ok_{j + 1}')
      ax.plot(its, v.mean(0), style, label=f'{a} step {j + 1}')
  ax.set(xlabel='iteration', ylabel='step correct (vs truth)', title='Per-step accuracy')
  ax.legend(fontsize=7)
  fig.savefig(os.path.join(workdir, 'f3_step_accuracy.png'), dpi=90, bbox_inches='tight')
  plt.close(fig)

  ws = info['warmstart']
  lines = [
    '# PURE reproduction: sum-form vs min-form PRM credit (arXiv 2504.15275)',
    '',
    ra.run_header(
      ra.command_line(f'experiments.{NAME}'),
      info['commit'],
      platform=info['cpu'],
      load_start=info['load_start'],
      load_end=info['load_end'],
      total_s=info['wall_s'],
      cores=info['cpus'],
      note='Results are deterministic given the config (in `config.json`). Compile of the RL '
      'chunk (first call, per PRM variant): '
      + ', '.join(f'PRM-{k} {v:.0f} s' for k, v in info['compile_s'].items())
      + '; every arm of a PRM variant reuses it (the arm is traced).',
    ),
    '',
    f'Task: K={config.task.num_steps}, M={config.task.modulus}, invertible ops, filler_rate '
    f'{config.task.filler_rate}, L_max {config.task.max_response_len}. PRM c={config.prm.c}, '
    f'w={config.prm.w}, f={config.prm.f}, noise {config.prm.noise}. G={config.rl.group_size}, '
    f'{config.rl.prompts_per_iter} prompts/iteration, {config.rl.iterations} iterations, seeds '
    f'{list(config.seeds)}, PPO-clip 0.2, {config.rl.num_epochs} epoch(s) x '
    f'{config.rl.num_minibatches} minibatches, Adam {config.optim.lr} (grad-norm clip 1), entropy '
    f'bonus {config.loss.ent_coef}, KL-in-reward k1 beta={config.credit.kl_coef}, softmin T='
    f'{config.credit.temperature}; held-out evaluation every {config.eval.every} iterations.',
    '',
    f'Warm start: {ws["steps"]} SFT steps ({ws["seconds"]:.0f} s), stopped at the first '
    f'validation greedy accuracy >= {report.percent_target(config.warmstart.target_low)} '
    '(validation '
    f'{100 * ws.get("validation_accuracy", float("nan")):.1f}%; validation problems disjoint '
    'from train and held-out; SFT curve in warmstart_curve.csv); held-out greedy accuracy '
    f'{100 * warm:.1f}% (exact match {100 * ws.get("exact_match", float("nan")):.1f}%; '
    f'{"in" if ws["in_band"] else "NOT in"} the band '
    f'[{report.percent_target(config.warmstart.target_low)}, '
    f'{report.percent_target(config.warmstart.target_high)}]); sampled (T=1) '
    f'THINK steps per response {ws["sampled_think_per_response"]:.3f} '
    f'({"meets" if ws["think_ok"] else "BELOW"} >= 0.1 needed to discover the hack).',
    '',
    '| arm | PRM | warm acc | final greedy acc | best acc (iter) | collapsed? | PRM-sum | PRM-min '
    '| THINK/resp | value steps/resp | length (tok) | trunc % | KL/seq | step-1 acc | iter THINK>2 '
    '| wall s |',
    '|' + '---|' * 16,
  ]
  for a in arms:
    s = stats[a]
    lines.append(
      f'| {a} | {config_mod.ARMS[a]["prm"]} | {100 * warm:.1f} | {_fmt(s["final_acc"], True, 1)} | '
      f'{_fmt(s["best_acc"], True, 1)} ({_fmt(s["best_iter"], digits=0)}) | '
      f'{sum(s["collapsed"])}/{len(s["collapsed"])} | {_fmt(s["prm_sum"])} | '
      f'{_fmt(s["prm_min"])} | '
      f'{_fmt(s["think_steps"])} | {_fmt(s["value_steps"])} | {_fmt(s["length"], digits=1)} | '
      f'{_fmt(s["truncated"], True, 1)} | {_fmt(s["kl_seq"], digits=3)} | '
      f'{_fmt(s["step1_global"], True, 1)} | {_fmt(s["think_gt2_iter"], digits=0)} | '
      f'{_fmt(s["wall"], digits=0)} |'
    )
  lines += [
    '',
    'Accuracies are held-out greedy (512 prompts) at the last iteration, mean [min, max] over '
    'seeds; PRM-sum ... step-1 acc are sampled training-batch means over the last 5 iterations. '
    '"collapsed" = final < 0.5 x warm. Figures: `f1_curves.png` (F1), `f2_goodhart.png` (F2), '
    '`f3_step_accuracy.png` (F3); per-iteration metrics in `metrics.jsonl`; greedy samples of '
    'the final policies in `samples.json`.',
    '',
    '## Held-out greedy metrics and sampled accuracy, per seed',
    '',
  ]
  lines += metrics_table(stats, arms, ws.get('exact_match', float('nan')), warm)
  lines += [
    '',
    'Greedy exact match: the response is the filler-free chain with every value right; greedy '
    'final answer: the verifier of the claims and the gate (EOS, exactly K value steps, fillers '
    'allowed, last value right); sampled accuracy: training batches (T=1), the mean of the '
    'last 5 iterations. Mean ± sd over seeds, percentile bootstrap 95% CI of the mean '
    '(`jaxca.report.fmt_ci`).',
    '',
    '## Expected vs observed (written by the experiment from the H1-H4 rules)',
    '',
  ]
  lines += judge(stats, warm, have, config.smoke) + h4_line(rows, stats, have) + mask_line(stats)
  if 'A4_min_prm_vr10' not in arms:
    lines.append('- **H3** (10% VR helps min-PRM): not run here (A4 runs in `:full`).')
  lines += [
    '',
    '## Honesty notes',
    '',
    '- **The result is largely designed in.** An incentive analysis of the PRM table predicts it: '
    'a filler step scores +f > +c, so under sum-form credit every extra THINK step adds reward, '
    'while under min-form credit the return is about the worst step, which a filler never '
    'lowers nor raises above c. What this run adds is evidence that the full LM pipeline '
    '(transform, RLOO token baseline, separator masking, skip-zero whitening, KL-in-reward, '
    'PPO-clip, truncation at L_max) behaves as the incentive analysis says, how fast the hack '
    'appears, and (with `:full`) which component protects min-form.',
    f'- Horizon: {config.rl.iterations} iterations; PURE saw min-form hacks appear within ~200 '
    'steps at scale, so slow hacks may not show here.',
    '- Implementation readings (corrections from the official code): the advantage is zeroed at '
    'every step closer, EOS and the last token included (PURE `nomask_separator_adv=False`); '
    "the token baseline counts each step's tokens without its closing separator "
    '(`credit.pure_baseline`); whitening excludes exact zeros (PURE `normalize`); strict '
    "min-form (`:full` only) is the paper's minimum over step rewards, not the official "
    "code's minimum over all token rewards; sum-form uses the same token baseline.",
    '- Greedy accuracy is the final-answer verifier (EOS-terminated, exactly K value steps, '
    'fillers anywhere, last value right); exact match is not used because targets with fillers '
    'are not unique.',
    '- Settings tried: the committed config only. The warm-start band (first validation '
    'final answer >= 35%) and the base recipe follow the protocol of the arith reproductions '
    '(`configs/common.ARITH_RL_RECIPE`); a 20-iteration pilot chose neither (it timed the run).',
    '- The table\'s "wall s" is the arm\'s wall clock for all its seeds together (they run '
    'batched in one program).',
  ]
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  short = {a: _fmt(stats[a]['final_acc'], True, 1) for a in arms}
  return (
    f'PURE: warm {100 * warm:.1f}% -> final greedy accuracy '
    + ', '.join(f'{a} {v}%' for a, v in short.items())
    + f' in {info["wall_s"]:.0f} s; results in {os.path.join(workdir, "results.md")}'
  )


def _setup():
  jax.config.update('jax_threefry_partitionable', True)


EXPERIMENT = runs.Experiment(NAME, run, validate=validate, safe_keys=SAFE_KEYS, setup=_setup)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
