"""GiGPO vs GRPO (and a shuffled-reward noise floor) on KeyDoor, multi-turn in jit.

Config: configs/gigpo_keydoor.py. Every arm x seed is one run; all runs advance in lockstep
under one `jax.vmap` (the estimator's term weights, omega, normalisation mode, episode
statistics and anchor key, and the learning rate, are traced per run), so one iteration
compiles once. The estimator is `gigpo_episode + omega*gigpo_step + 0*shuffled_reward`:
GiGPO / GRPO arms weight the terms (1, omega, 0), the noise-floor arm (0, 0, 1). Every run
starts from one warm start (`warm_start`: SFT on noisy-BFS demonstrations, cached in
`<workdir>/warmstart` under a key; `config.warmstart = None`: random init, one per seed);
seeds share the task stream across arms (paired comparison). Resume: the state is
checkpointed at every evaluation; rerunning the same command continues.
Where runs write, drift refusal, errors, the closing line: `jaxca.runs`.
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
import tqdm

from jaxca import bench
from jaxca import checkpoint
from jaxca import estimators
from jaxca import lm
from jaxca import metrics
from jaxca import report
from jaxca import report_arms as ra
from jaxca import runs
from jaxca import train as train_lib
from jaxca import warmstart
from jaxca.credit import gigpo
from jaxca.envs import keydoor
from jaxca.lm import multiturn
from jaxca.networks import transformer

NAME = 'gigpo_keydoor'
# Term weights per arm: (1 - shuffle, omega, shuffle); shuffled_reward is the noise floor.
SPEC = 'gigpo_episode + gigpo_step + 0*shuffled_reward'
BASELINE = 'grpo_msn'
TARGET = 0.5  # the design's bar: GRPO ends at >= 50% greedy eval success in every seed
# Anchor kinds for the group-size histograms: (name, use_state, use_turn, use_history).
ANCHORS = (
  ('state', 1.0, 0.0, 0.0),
  ('state+turn', 1.0, 1.0, 0.0),
  ('history', 0.0, 0.0, 1.0),
  ('turn', 0.0, 1.0, 0.0),
)


def define_flags():
  runs.define_flags(NAME)


def validate(config):
  names = [a['name'] for a in config.arms]
  if len(set(names)) != len(names) or not names:
    raise runs.ConfigError(f'config.arms: names must be unique and non-empty; got {names}.')
  if config.rl.group_size < 2:
    raise runs.ConfigError(f'config.rl.group_size must be >= 2; got {config.rl.group_size}.')
  b = config.rl.tasks_per_iter * config.rl.group_size
  if b % config.rl.num_minibatches:
    raise runs.ConfigError(
      f'config.rl.num_minibatches={config.rl.num_minibatches} must divide P*G={b}.'
    )
  if config.eval.every < 1 or config.rl.iterations < 1 or not config.seeds:
    raise runs.ConfigError(
      'config.eval.every and config.rl.iterations must be >= 1, config.seeds non-empty.'
    )
  ws = config.get('warmstart')
  if ws is not None:
    if not 0.0 <= ws.p_opt <= 1.0:
      raise runs.ConfigError(f'config.warmstart.p_opt must be in [0, 1]; got {ws.p_opt}.')
    if min(ws.num_demos, ws.batch_size, ws.max_steps, ws.eval_every) < 1:
      raise runs.ConfigError(
        'config.warmstart.num_demos, batch_size, max_steps and eval_every must be >= 1.'
      )
  try:
    lm.loss_options(config.loss)  # the learner's own check of the loss section
  except ValueError as e:
    raise runs.ConfigError(str(e)) from None


def build(config):
  """Composition only: (env, policy, estimator, tx, update): the one LM learner with the
  multi-turn seams (`multiturn.make_collect`, `multiturn.make_score_fn`) and `diagnostics`."""
  e = config.env
  env = keydoor.make(e.size, e.num_walls, e.horizon, e.num_layouts, e.layout_seed)
  need = env.prompt_len + env.obs_len + env.horizon * (env.obs_len + 1)
  pcfg = ml_collections.ConfigDict(dict(config.policy.to_dict(), max_len=max(need, 8)))
  policy = transformer.make_policy(pcfg, vocab_size=env.vocab_size)
  est = estimators.make(SPEC, history=True, gamma=config.credit.gamma, eps=config.credit.eps)
  tx = optax.chain(
    optax.clip_by_global_norm(config.optim.max_grad_norm),
    optax.inject_hyperparams(optax.adam)(learning_rate=config.optim.lr),
  )
  g, temperature = config.rl.group_size, config.rl.temperature
  update = lm.make_rl_update(
    policy,
    env,
    est,
    tx,
    group_size=g,
    num_epochs=config.rl.num_epochs,
    num_minibatches=config.rl.num_minibatches,
    temperature=temperature,
    loss_cfg=config.loss,
    collect=multiturn.make_collect(policy, env, group_size=g, temperature=temperature),
    score_fn=multiturn.make_score_fn(policy, env, temperature),
    metrics_fn=lambda ctx, traj, targets: diagnostics(ctx, traj, g),
  )
  return env, policy, est, tx, update


def arm_hparams(est, arm):
  """The estimator hyper-parameters of one arm (a pytree like `est.hparams`)."""
  hp = jax.tree.map(np.copy, est.hparams)
  shuffle = float(arm.get('shuffle', 0.0))
  hp['weights'][:] = (1.0 - shuffle, arm['omega'], shuffle)
  ep, st = dict(hp['terms'][0]), dict(hp['terms'][1])
  ep.update(std_norm=np.float32(arm['std_norm']), per_trajectory=np.float32(arm['per_trajectory']))
  st.update({k: np.float32(arm[k]) for k in ('std_norm', 'key_state', 'key_turn', 'key_history')})
  hp['terms'] = (ep, st, *hp['terms'][2:])
  return hp


def diagnostics(ctx, traj, group_size):
  """Per-run scalars: A^S / A^E statistics and step-group-size histograms for every anchor kind.

  The learner's `metrics_fn`: `ctx.extras` is the rollout's `multiturn.Turns`, `ctx.hparams`
  the run's estimator hyper-parameters. A^E and A^S are those of the rollout's own returns
  with the arm's mode and anchor key, whatever the arm's term weights (for GRPO and the
  noise floor: what GiGPO would compute on the same rollouts). `mean_abs_step_adv` /
  `mean_abs_episode_adv`: mean |A^S| / |A^E| over the step rows.
  """
  s = ctx.extras
  b, h = s.active.shape
  steps = s.active
  lengths = jnp.sum(steps, axis=-1, dtype=jnp.int32)
  gid = jnp.arange(b, dtype=jnp.int32) // group_size
  ep, st = ctx.hparams['terms'][:2]
  a_e = gigpo.episode_advantages(
    s.returns, gid, b // group_size, steps, ep['std_norm'], ep['per_trajectory']
  )
  a_e = jnp.broadcast_to(a_e[:, None], (b, h))
  hist = traj.get('history_ids')
  keys = gigpo.anchor_keys(
    gid, s.anchors, hist, use_state=st['key_state'], use_turn=st['key_turn'],
    use_history=st['key_history'],
  )  # fmt: skip
  a_s = gigpo.step_advantages(s.rewards, steps, keys, st['gamma'], st['std_norm'])
  n = jnp.maximum(jnp.sum(steps), 1)
  out = dict(
    frac_step_adv_nonzero=jnp.sum(steps & (jnp.abs(a_s) > 1e-6)) / n,
    mean_abs_step_adv=jnp.sum(jnp.where(steps, jnp.abs(a_s), 0.0)) / n,
    mean_abs_episode_adv=jnp.sum(jnp.where(steps, jnp.abs(a_e), 0.0)) / n,
    success_len=jnp.sum(lengths * s.returns) / jnp.maximum(jnp.sum(s.returns), 1.0),
  )
  ids = gigpo.step_group_ids(keys, steps)
  sizes = gigpo.group_sizes(ids, steps)
  flat = jnp.sort(jnp.where(steps.reshape(-1), sizes, jnp.inf))
  out['median_group_size'] = flat[jnp.sum(steps) // 2]
  out['singleton_rows'] = jnp.sum(steps.reshape(-1) & (sizes == 1)) / n
  groups, rows = [], []
  for _, us, ut, uh in ANCHORS:
    k = gigpo.anchor_keys(gid, s.anchors, hist, use_state=us, use_turn=ut, use_history=uh)
    g, r = gigpo.size_histogram(gigpo.step_group_ids(k, steps), steps)
    groups.append(g)
    rows.append(r)
  out['hist_groups'] = jnp.stack(groups)
  out['hist_rows'] = jnp.stack(rows)
  return out


def make_fns(config):
  env, policy, est, tx, update = build(config)
  opts = lm.loss_options(config.loss)

  def init(params, lr):
    state = lm.init_from_params(
      params,
      tx,
      with_ref=opts.kl_coef > 0,
      kl_coef=opts.kl_coef if opts.kl_ctrl == 'adaptive' else None,
    )
    state['opt_state'][1].hyperparams['learning_rate'] = jnp.asarray(lr, jnp.float32)
    return state

  def one(state, tasks, key, hp):
    return update(state, tasks, key, hp)

  def evaluate(params, tasks, key, greedy):
    s = multiturn.rollout(policy, params, key, env, tasks, group_size=1, greedy=greedy)
    return jnp.mean(s.returns)

  init_fn = jax.jit(jax.vmap(init))
  step_fn = jax.jit(jax.vmap(one), donate_argnums=0)
  eval_fn = jax.jit(jax.vmap(evaluate, in_axes=(0, None, 0, None)), static_argnums=3)
  return env, policy, est, init_fn, step_fn, eval_fn


# ----------------------------------------------------------------------------- warm start


def validation_tasks(env, eval_tasks, num, seed):
  """`num` in-pool tasks (layout, start) distinct from each other and from `eval_tasks`.

  The warm start's stop is judged on them, never on the reported evaluation tasks
  (training tasks are drawn from the whole pool, as in the RL phase).
  """
  taken = set(zip(np.asarray(eval_tasks.layout).tolist(), np.asarray(eval_tasks.start).tolist()))
  ok = env.layouts['start_ok'][: env.num_layouts]
  pairs = [(int(l), int(c)) for l, c in zip(*np.nonzero(ok)) if (l, c) not in taken]
  pick = np.random.default_rng(seed).permutation(len(pairs))[:num]
  chosen = np.asarray([pairs[i] for i in np.sort(pick)], np.int32).reshape(-1, 2)
  return keydoor.Task(jnp.asarray(chosen[:, 0]), jnp.asarray(chosen[:, 1]))


def warm_start(config, env, policy, eval_tasks, workdir):
  """SFT on noisy-BFS demonstrations until validation greedy success reaches `stop_at`; cached.

  Demonstrations: `warmstart.num_demos` episodes of `keydoor.noisy_bfs_policy(p_opt)` on
  in-pool tasks, in the rollout's token layout (`multiturn.scripted_rollout`); the loss is
  the action-masked cross-entropy on their action tokens (`multiturn.make_sft_loss`), Adam
  with gradient clipping 1.0. The loop and the stop are `jaxca.warmstart.sft_loop`, judged
  on `validation_tasks`; the cache (`jaxca.warmstart.load_cache` / `save_cache`) is keyed
  by the env, policy and warmstart sections, the base seed and a digest of the
  demonstrations and validation tasks.

  Returns:
    (params, info): info holds `steps`, `validation_success` (the stop's value),
    `demo_success` (the demonstrations' success rate), `seconds`, `curve` and the `key`.
  """
  ws = config.warmstart
  base = jax.random.key(config.seed)
  demo_tasks = env.sample_tasks(jax.random.fold_in(base, 10**6 + 2), ws.num_demos)
  act = keydoor.noisy_bfs_policy(env, ws.p_opt)
  demos = jax.jit(lambda k, t: multiturn.scripted_rollout(env, k, t, act))(
    jax.random.fold_in(base, 10**6 + 3), demo_tasks
  )
  data = dict(tokens=demos.tokens, valid=demos.valid, mask=demos.mask)
  val = validation_tasks(env, eval_tasks, config.eval.num_tasks, config.seed + 17)
  sections = dict(
    env=json.loads(config.env.to_json_best_effort()),
    policy=json.loads(config.policy.to_json_best_effort()),
    warmstart=json.loads(ws.to_json_best_effort()),
    seed=int(config.seed),
    data=warmstart.digest(
      {k: np.asarray(v) for k, v in data.items()}, dict(layout=val.layout, start=val.start)
    ),
  )
  key = warmstart.section_key(sections)
  cached = warmstart.load_cache(workdir, key, sections)
  if cached is not None:
    info = cached[1]
    runs.note(
      f'warm start: reused ({info["steps"]} steps, validation success '
      f'{info["validation_success"]:.3f})'
    )
    return cached
  tx = train_lib.make_optimizer(dict(name='adam', lr=ws.lr, max_grad_norm=1.0))
  params = policy.init(jax.random.fold_in(base, 10**6 + 4))
  state = dict(params=params, opt_state=tx.init(params))
  grad_step = train_lib.make_gradient_step(multiturn.make_sft_loss(policy, env), tx)

  @jax.jit
  def update(state, idx):
    batch = jax.tree.map(lambda x: x[idx], data)
    (params, opt_state), m = grad_step((state['params'], state['opt_state']), batch)
    return dict(params=params, opt_state=opt_state), m

  greedy = jax.jit(
    lambda p: jnp.mean(
      multiturn.rollout(policy, p, jax.random.key(0), env, val, group_size=1, greedy=True).returns
    )
  )
  rng = np.random.default_rng(config.seed + 7)
  bar = tqdm.tqdm(total=ws.max_steps, desc='warm start')

  def advance(state, step):
    del step
    return update(state, jnp.asarray(rng.integers(0, ws.num_demos, ws.batch_size)))

  def on_step(step, state, m, evaluation, done):
    del state, m, done
    bar.update(1)
    if evaluation is not None:
      bar.set_postfix(val=f'{evaluation["val_success"]:.2f}')
      runs.at(f'warm start step {step}')

  t0 = time.time()
  state, step, curve = warmstart.sft_loop(
    state,
    0,
    advance=advance,
    validate=lambda p: {'val_success': float(greedy(p))},
    max_steps=ws.max_steps,
    eval_every=ws.eval_every,
    stop_at=ws.stop_at,
    on_step=on_step,
    metric='val_success',
  )
  bar.close()
  info = dict(
    steps=step,
    validation_success=curve[-1][1] if curve else 0.0,
    demo_success=float(jnp.mean(demos.returns)),
    seconds=time.time() - t0,
    curve=curve,
    key=key,
    key_sections=sections,
  )
  if workdir:
    warmstart.save_cache(workdir, state['params'], info)
    warmstart.write_curve(workdir, curve, 'validation_greedy_success')
  runs.note(
    f'warm start: {step} steps, validation greedy success {info["validation_success"]:.3f} '
    f'(demonstrations succeed {info["demo_success"]:.3f}; {info["seconds"]:.0f} s)'
  )
  return state['params'], info


def run(config, workdir):
  """Trains every arm x seed; writes metrics.jsonl, results.md, F4.png, F5.png."""
  t_start, load_start = time.time(), bench.load_average()
  env, policy, est, init_fn, step_fn, eval_fn = make_fns(config)
  arms = [dict(a) for a in config.arms]
  runs_ = [(a, s) for a in arms for s in config.seeds]
  r = len(runs_)
  base = jax.random.key(config.seed)
  seed_keys = {s: jax.random.fold_in(base, s) for s in config.seeds}
  init_keys = jnp.stack([jax.random.fold_in(seed_keys[s], 0) for _, s in runs_])
  lrs = jnp.asarray([a['lr'] or config.optim.lr for a, _ in runs_], jnp.float32)
  hps = jax.tree.map(lambda *x: jnp.stack(x), *[arm_hparams(est, a) for a, _ in runs_])
  eval_tasks = env.sample_tasks(jax.random.fold_in(base, 10**6), config.eval.num_tasks)
  held_tasks = env.sample_tasks(jax.random.fold_in(base, 10**6 + 1), config.eval.num_tasks, True)
  p, g = config.rl.tasks_per_iter, config.rl.group_size

  ws_info = None
  if config.get('warmstart') is not None:  # every run starts from the one warm start
    params0, ws_info = warm_start(config, env, policy, eval_tasks, workdir)
    params = jax.tree.map(lambda x: jnp.broadcast_to(x, (r,) + x.shape), params0)
  else:  # random init, one per seed
    params = jax.jit(jax.vmap(policy.init))(init_keys)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), max_to_keep=1)
  state, step = ckpt.restore_or_init(lambda: init_fn(params, lrs))
  step = step or 0
  if step:
    runs.note(f'resumed from iteration {step}')
  writer = metrics.Writer(workdir, keep=lambda rec: rec['step'] <= step, tensorboard=False)
  records = list(writer.kept)

  def run_eval(state, it, held_out=False):
    tasks = held_tasks if held_out else eval_tasks
    keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, 2), it)] * r)
    prefix = 'heldout' if held_out else 'eval'
    greedy = eval_fn(state['params'], tasks, keys, True)
    sampled = eval_fn(state['params'], tasks, keys, False)
    return {f'{prefix}_greedy': np.asarray(greedy), f'{prefix}_sampled': np.asarray(sampled)}

  compile_s = None
  iters = config.rl.iterations
  hist_iters = sorted({0, iters // 2, iters - 1})
  try:
    if step == 0:
      t0 = time.time()
      records.append(writer.write(0, dict(episodes=0, **run_eval(state, 0))))
      runs.note(f'initial evaluation (incl. compile) {time.time() - t0:.1f} s')
    bar = tqdm.tqdm(total=iters, initial=step, unit='it', desc=NAME)
    while step < iters:
      t0 = time.time()
      tasks = jax.tree.map(
        lambda *x: jnp.stack(x),
        *[env.sample_tasks(jax.random.fold_in(seed_keys[s], 10 + step), p) for _, s in runs_],
      )
      keys = jnp.stack(
        [jax.random.fold_in(jax.random.fold_in(base, 1 + i), step) for i in range(r)]
      )
      state, m = step_fn(state, tasks, keys, hps)
      m = jax.device_get(m)
      dt = time.time() - t0
      if compile_s is None:
        compile_s = dt
      runs.check_finite(m, ('loss', 'grad_norm'), phase='RL', step=step + 1, checkpointer=ckpt)
      rec = {k: v for k, v in m.items() if not k.startswith('hist_')}
      if step in hist_iters:
        rec['hist_groups'] = m['hist_groups'].reshape(-1)
        rec['hist_rows'] = m['hist_rows'].reshape(-1)
      step += 1
      rec.update(episodes=step * p * g, iteration_s=dt)
      if step % config.eval.every == 0 or step == iters:
        rec.update(run_eval(state, step))
        ckpt.maybe_save(step, state, force=True)
      if step == iters:
        rec.update(run_eval(state, step, held_out=True))
      records.append(
        writer.write(
          step, {k: (np.asarray(v).tolist() if np.ndim(v) else v) for k, v in rec.items()}
        )
      )
      bar.update(1)
      bar.set_postfix(success=f'{np.mean(m["success"]):.2f}')
      runs.at(f'iteration {step} of {iters}')
    bar.close()
  finally:
    writer.close()
    ckpt.wait()
    ckpt.close()
  wall = time.time() - t_start
  iter_s = [rec['iteration_s'] for rec in records if 'iteration_s' in rec]
  timing = dict(
    load_start=load_start,
    wall_s=wall,
    compile_s=compile_s,
    s_per_iteration=float(np.median(iter_s[1:])) if len(iter_s) > 1 else None,
  )
  runs.note(
    f'seconds per iteration (all {r} runs): {timing["s_per_iteration"]}; '
    f'first iteration incl. compile: {compile_s}'
  )
  return write_report(workdir, config, records, runs_, timing, ws_info)


# ----------------------------------------------------------------------------- report


def _per_run(records, key):
  """(iterations [n], values [n, R]) of the records holding `key`."""
  rows = [rec for rec in records if key in rec]
  return np.asarray([rec['step'] for rec in rows]), np.asarray([rec[key] for rec in rows], float)


def _first_reach(its, curve, thresh, per_iter):
  hit = np.flatnonzero(curve >= thresh)
  return float(its[hit[0]] * per_iter) if hit.size else np.inf


def arm_stats(config, records, runs_):
  """{arm: dict of per-seed arrays and summaries} from the records."""
  per_iter = config.rl.tasks_per_iter * config.rl.group_size
  its, greedy = _per_run(records, 'eval_greedy')
  _, sampled = _per_run(records, 'eval_sampled')
  _, held = _per_run(records, 'heldout_greedy')
  train_its, success = _per_run(records, 'success')
  _, slen = _per_run(records, 'success_len')
  _, single = _per_run(records, 'singleton_rows')
  _, median = _per_run(records, 'median_group_size')
  _, nonzero = _per_run(records, 'frac_step_adv_nonzero')
  _, abs_s = _per_run(records, 'mean_abs_step_adv')
  _, abs_e = _per_run(records, 'mean_abs_episode_adv')
  hist_its, hist_g = _per_run(records, 'hist_groups')
  _, hist_r = _per_run(records, 'hist_rows')
  hist_g = hist_g.reshape(len(hist_its), len(runs_), len(ANCHORS), -1)
  hist_r = hist_r.reshape(len(hist_its), len(runs_), len(ANCHORS), -1)
  out = {}
  for name in dict.fromkeys(a['name'] for a, _ in runs_):
    idx = [i for i, (a, _) in enumerate(runs_) if a['name'] == name]
    arm = runs_[idx[0]][0]
    last = slice(max(len(train_its) - 10, 0), None)
    at = {k: (greedy[list(its).index(k), idx] if k in its else None) for k in (20, 40, 80)}
    out[name] = dict(
      arm=arm,
      its=its,
      episodes=its * per_iter,
      greedy=greedy[:, idx],
      sampled=sampled[:, idx],
      at=at,
      auc=greedy[:, idx].mean(0),
      to50=np.asarray([_first_reach(its, greedy[:, i], 0.5, per_iter) for i in idx]),
      to80=np.asarray([_first_reach(its, greedy[:, i], 0.8, per_iter) for i in idx]),
      held=held[-1, idx] if len(held) else np.full(len(idx), np.nan),
      success_len=slen[last][:, idx].mean(0),
      train_success=success[:, idx],
      singleton=(single[0, idx], single[-1, idx]),
      median=median[-1, idx],
      nonzero=nonzero[:, idx].mean(0),
      step_share=step_share(abs_s[:, idx], abs_e[:, idx]),
      hist_its=hist_its,
      hist_groups=hist_g[:, idx],
      hist_rows=hist_r[:, idx],
    )
  return out


def step_share(abs_step, abs_episode):
  """[runs] share of the step term in the advantage magnitude, mean|A^S| / (mean|A^S| + mean|A^E|).

  abs_step, abs_episode: [iterations, runs] mean |A^S| and |A^E| over each iteration's step
  rows; the means are taken over the whole run first. It stays in [0, 1] and is defined
  whenever either term is ever nonzero (a per-iteration ratio |A^S| / |A^E| is not: once
  every group of a batch succeeds in every rollout, A^E is 0 while A^S is not). nan: both 0.
  """
  s = np.mean(np.asarray(abs_step, float), axis=0)
  e = np.mean(np.asarray(abs_episode, float), axis=0)
  total = s + e
  return np.where(total > 0, s / np.where(total > 0, total, 1.0), np.nan)


def _anchor_name(arm):
  if arm['omega'] == 0:
    return '-'
  for name, us, ut, uh in ANCHORS:
    if (arm['key_state'], arm['key_turn'], arm['key_history']) == (us, ut, uh):
      return name
  return 'custom'


def _rng(x, pct=True, digits=0):
  return report.fmt_range(x, digits, pct)


def _eps(x):
  x = np.asarray(x, float)
  if np.all(np.isinf(x)):
    return 'not reached'
  reached = x[np.isfinite(x)]
  return f'{reached.mean():.0f}' + ('' if len(reached) == len(x) else f' ({len(reached)}/{len(x)})')


def verdict(stats, smoke=False, start='iteration-0 eval success (no warm start)'):
  """The confirm / refute rules of the design (see results.md) applied to `stats`.

  The rule is applied in every normalisation mode the run has both arms of (default:
  mean_std_norm; `:full` adds mean_norm). The gate (`report.gate`): the baseline must end at
  >= TARGET greedy eval success, >= 8 points above iteration 0, and above the noise floor,
  in every seed; else the claim reads UNTESTABLE. `start` names what the iteration-0 success
  is, for the rule text. Returns (markdown, headline outcome).
  """
  lines, confirmed_modes, refuted_modes, na, nums, modes = [], [], [], [], {}, []
  for mode in ('mn', 'msn'):
    gi, gr = stats.get(f'gigpo_{mode}'), stats.get(f'grpo_{mode}')
    if gi is None or gr is None:
      continue
    modes.append(mode)
    wins = gi['auc'] > gr['auc']
    t_gi, t_gr = gi['to50'], gr['to50']
    if np.all(np.isinf(t_gr)) and np.any(np.isfinite(t_gi)):
      fall = 1.0
    elif np.all(np.isfinite(t_gr)) and np.all(np.isfinite(t_gi)):
      fall = 1.0 - t_gi.mean() / t_gr.mean()
    else:
      fall = float('nan')
    nonsingleton = 1.0 - float(np.mean(gi['singleton'][1]))
    lines.append(
      f'- {mode}: GiGPO AUC {_rng(gi["auc"], digits=1)} vs GRPO {_rng(gr["auc"], digits=1)} '
      f'(GiGPO higher in {int(wins.sum())}/{len(wins)} seeds); episodes to 50% '
      f'{_eps(t_gi)} vs {_eps(t_gr)} (reduction {100 * fall:.0f}%); rows in non-singleton '
      f'anchor groups at the end {100 * nonsingleton:.0f}%.'
    )
    nums[f'{mode}: GiGPO / GRPO AUC %'] = (
      f'{_rng(gi["auc"], digits=1)} / {_rng(gr["auc"], digits=1)}'
    )
    nums[f'{mode}: episodes-to-50% reduction %'] = 100 * fall
    nums[f'{mode}: non-singleton rows %'] = 100 * nonsingleton
    if nonsingleton < 0.5:
      na.append(mode)
    elif wins.all() and fall >= 0.25:
      confirmed_modes.append(mode)
    elif gi['auc'].mean() <= gr['auc'].max():
      refuted_modes.append(mode)
  if not modes:
    outcome, note = 'UNTESTABLE', 'the run has no GiGPO / GRPO pair of one mode'
  elif confirmed_modes == modes:
    outcome, note = 'CONFIRMED', ''
  elif refuted_modes == modes:
    outcome, note = 'REFUTED', 'at this scale'
  elif na:
    outcome, note = (
      'UNTESTABLE',
      f'not applicable in mode(s) {na}: anchor groups are mostly singletons',
    )
  else:
    outcome = 'INCONCLUSIVE'
    note = (
      f'confirmed in {confirmed_modes or "no mode"}, refuted in {refuted_modes or "no mode"}; '
      f'the rule needs every mode run ({modes}) to agree'
    )
  claim = report.Verdict(
    'GiGPO beats GRPO',
    outcome,
    'confirmed if, in every normalisation mode run (mn: mean_norm, msn: mean_std_norm), GiGPO '
    'AUC > GRPO AUC in every seed and episodes-to-50% fall by >= 25%; refuted if in every mode '
    'run GiGPO mean AUC <= the best GRPO seed while >= 50% of rows are in non-singleton anchor '
    'groups; not applicable if the groups are mostly singletons',
    {**nums, 'modes confirmed': confirmed_modes, 'modes refuted': refuted_modes},
    note,
  )
  base = stats.get(BASELINE)
  gate = None
  if base is not None:
    noise = stats.get(report.NOISE_FLOOR_ARM)
    gate = report.gate(
      base['greedy'][-1],
      base['greedy'][0],
      None if noise is None else noise['greedy'][-1],
      baseline=f'{BASELINE} (final greedy eval success)',
      start=start,
      target=TARGET,
    )
  judged = report.judge([claim], gate, smoke)
  head = judged[0].outcome
  out = [report.expected_vs_observed([claim], gate, smoke), ''] + lines
  hist, grpo = stats.get('gigpo_msn_hist'), stats.get('grpo_msn')
  if hist is not None and grpo is not None:
    lo, hi = grpo['auc'].min(), grpo['auc'].max()
    spread = max(hi - lo, 0.05)
    ok = abs(hist['auc'].mean() - grpo['auc'].mean()) <= spread
    out.append(
      f'- Negative control (history-hash anchor) AUC {_rng(hist["auc"], digits=1)} vs GRPO '
      f'{_rng(grpo["auc"], digits=1)}: {"about equal, as expected" if ok else "NOT equal"} '
      f'(tolerance max(GRPO seed range, 5 points)).'
    )
  turn, gi = stats.get('mtgrpo_msn'), stats.get('gigpo_msn')
  if turn is not None and gi is not None:
    out.append(
      f'- Turn-index groups (MT-GRPO) AUC {_rng(turn["auc"], digits=1)} vs anchor-state groups '
      f'{_rng(gi["auc"], digits=1)} and GRPO {_rng(stats["grpo_msn"]["auc"], digits=1)}.'
    )
  for mode in ('msn',):
    a, b = stats.get(f'gigpo_{mode}_traj'), stats.get(f'gigpo_{mode}')
    if a is not None and b is not None:
      out.append(
        f'- Per-trajectory episode statistics: GiGPO AUC {_rng(a["auc"], digits=1)} vs '
        f'step-weighted {_rng(b["auc"], digits=1)}; GRPO '
        f'{_rng(stats[f"grpo_{mode}_traj"]["auc"], digits=1)} vs '
        f'{_rng(stats[f"grpo_{mode}"]["auc"], digits=1)}.'
      )
  return '\n'.join(out), head


def _plots(workdir, stats):
  import matplotlib  # noqa: PLC0415 (host-side, only when writing results)

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, st in stats.items():
    y = st['greedy']
    ax.plot(st['episodes'], y.mean(1), label=name, lw=1.5)
    ax.fill_between(st['episodes'], y.min(1), y.max(1), alpha=0.15)
  ax.set_xlabel('training episodes')
  ax.set_ylabel('eval success (greedy, in-pool tasks)')
  ax.set_title('F4: KeyDoor eval success (mean, seed range)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'F4.png'), dpi=110)
  plt.close(fig)
  name = 'gigpo_msn' if 'gigpo_msn' in stats else next(iter(stats))
  st = stats[name]
  n_it = len(st['hist_its'])
  fig, axes = plt.subplots(len(ANCHORS), n_it, figsize=(3.2 * n_it, 2.2 * len(ANCHORS)))
  axes = np.asarray(axes).reshape(len(ANCHORS), n_it)
  x = np.arange(len(gigpo.SIZE_BIN_LABELS))
  for i, (anchor, *_) in enumerate(ANCHORS):
    for j, it in enumerate(st['hist_its']):
      a = axes[i, j]
      a.bar(x - 0.2, st['hist_groups'][j, :, i].mean(0), 0.4, label='groups')
      a.bar(x + 0.2, st['hist_rows'][j, :, i].mean(0), 0.4, label='rows')
      a.set_xticks(x, gigpo.SIZE_BIN_LABELS, fontsize=7)
      a.set_ylim(0, 1)
      a.set_title(f'{anchor}, iteration {int(it) - 1}', fontsize=8)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f'F5: step-group sizes ({name}; fraction of groups / of rows)', fontsize=9)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'F5.png'), dpi=110)
  plt.close(fig)


def describe_warm_start(config, info) -> str:
  """The warm start in a sentence for results.md (None: random init)."""
  if info is None:
    return 'Start: random initialisation, no SFT (no warm start).'
  ws = config.warmstart
  return (
    f'Start: one warm start shared by every run: SFT (Adam {ws.lr:g}, batch {ws.batch_size}) on '
    f'{ws.num_demos} noisy-BFS demonstrations (each turn the BFS-optimal action with '
    f'probability {ws.p_opt:g}, else a uniformly random legal move; they succeed in '
    f'{100 * info["demo_success"]:.1f}%) for {info["steps"]} steps, stopped at the first '
    f'evaluation (every {ws.eval_every} steps) whose greedy success on '
    f'{config.eval.num_tasks} validation tasks (in-pool, disjoint from the evaluation tasks) '
    f'reached {report.percent_target(ws.stop_at)} (validation '
    f'{100 * info["validation_success"]:.1f}%; SFT curve in {warmstart.CURVE_FILE}).'
  )


def write_report(workdir, config, records, runs_, timing, ws_info=None):
  """results.md, F4.png, F5.png; returns the closing summary line."""
  stats = arm_stats(config, records, runs_)
  _plots(workdir, stats)
  start = (
    'iteration-0 eval success (no warm start)'
    if ws_info is None
    else 'iteration-0 eval success (the noisy-BFS warm start)'
  )
  text, head = verdict(stats, config.get('smoke', False), start)
  lines = [
    '# GiGPO vs GRPO on KeyDoor (multi-turn)',
    '',
    ra.run_header(
      ra.command_line(f'experiments.{NAME}'),
      runs.git_commit(),
      platform=f'{jax.devices()[0].platform} x{jax.device_count()}',
      load_start=timing['load_start'],
      load_end=bench.load_average(),
      total_s=timing['wall_s'],
      note=f'All {len(runs_)} runs train together (vmapped): first iteration incl. compile '
      f'{timing["compile_s"]:.1f} s, then {timing["s_per_iteration"] or 0:.2f} s per '
      'iteration for all runs.',
    ),
    f'Env: KeyDoor {config.env.size}x{config.env.size}, {config.env.num_walls} walls, H='
    f'{config.env.horizon}; {config.rl.tasks_per_iter} tasks x G={config.rl.group_size} per '
    f'iteration, {config.rl.iterations} iterations, {len(config.seeds)} seed(s); eval on '
    f'{config.eval.num_tasks} in-pool tasks every {config.eval.every} iterations, held-out '
    'layouts at the end.',
    describe_warm_start(config, ws_info),
    '',
    '## Expected vs observed',
    '',
    f'Gate (first): {BASELINE} must end at >= {100 * TARGET:g}% greedy eval success (the '
    "design's target), >= 8 points above its iteration-0 success (its start) and above the "
    'shuffled-reward '
    'noise floor, in every seed; if not, the claim reads UNTESTABLE. Rule: confirmed if GiGPO '
    'AUC > GRPO AUC in every seed and episodes-to-50% fall by >= 25%, in every normalisation '
    'mode run; refuted if GiGPO <= GRPO within the seed range while >= 50% of rows are in '
    'non-singleton groups; "not applicable" if groups are mostly singletons. The history-hash '
    'anchor (`:full`) should about equal GRPO.',
    '',
    text,
    '',
    '## Table',
    '',
    'Eval success: greedy, in-pool tasks, % (mean [min, max] over seeds). AUC: mean eval '
    'success over all evaluations (iteration 0 included). Singleton rows / median group size '
    "for the arm's own step-group key (GRPO arms: the state anchor they would use).",
    '',
    "Step share %: the step term's share of the advantage magnitude, mean|A^S| / (mean|A^S| + "
    "mean|A^E|), each mean over all step rows of all iterations (A^S, A^E of the rollouts' own "
    "returns in the arm's mode; for GRPO and the noise floor, what GiGPO would use). It "
    'replaces a per-iteration ratio |A^S| / |A^E|, which explodes when every rollout of a '
    'batch succeeds (A^E = 0, A^S != 0).',
    '',
    '| arm | mode | episode stats | anchor | lr | success@20 / @40 / @80 it | episodes to 50% / '
    '80% | AUC | held-out success | len (successes) | singleton rows % (it0 / end) | median '
    'group size | nonzero A^S rows % | step share % |',
    '|' + '---|' * 14,
  ]
  for name, st in stats.items():
    arm = st['arm']
    at = ' / '.join('-' if st['at'][k] is None else _rng(st['at'][k]) for k in (20, 40, 80))
    lines.append(
      f'| {name} | {"mean_std_norm" if arm["std_norm"] else "mean_norm"} | '
      f'{"trajectory" if arm["per_trajectory"] else "steps"} | {_anchor_name(arm)} | '
      f'{arm["lr"] or config.optim.lr:g} | {at} | {_eps(st["to50"])} / {_eps(st["to80"])} | '
      f'{_rng(st["auc"], digits=1)} | {_rng(st["held"])} | {_rng(st["success_len"], False, 1)} | '
      f'{_rng(st["singleton"][0])} / {_rng(st["singleton"][1])} | {_rng(st["median"], False, 1)} '
      f'| {_rng(st["nonzero"])} | {_rng(st["step_share"])} |'
    )
  lines += [
    '',
    '## Per seed',
    '',
    'Per-seed values (seed 0, 1, ...) and mean ± sd [bootstrap 95% CI of the mean] over '
    'seeds (`jaxca.report.seed_stats`). Final: greedy eval success at the last iteration '
    '(what the gate reads); episodes to 50%: "-" where a seed never reached it (the CI is over '
    'the seeds that did).',
    '',
    '| arm | final eval success % | AUC % | held-out success % | episodes to 50% |',
    '|---|---|---|---|---|',
  ]
  for name, st in stats.items():
    cells = [_seed_cell(st['greedy'][-1]), _seed_cell(st['auc']), _seed_cell(st['held'])]
    cells.append(_seed_cell(st['to50'], pct=False))
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines += [
    '',
    '![F4](F4.png)',
    '',
    '![F5](F5.png)',
    '',
    '## Implementation notes (our reading of the official code)',
    '',
    '- Estimators: `jaxca.estimators` stages `gigpo_episode + omega*gigpo_step` '
    '(`jaxca.credit.gigpo`), as verl-agent `gigpo/core_gigpo.py`: same mode at both levels, '
    'unbiased std + 1e-6, singleton step groups 0, exact anchor match (similarity_thresh 1.0), '
    'step returns with gamma=0.95. Episode statistics either over all step rows '
    '(`compute_mean_std_cross_steps=True`, the verl-agent default; arms without `_traj`) or over '
    "unique trajectories (the paper and the authors' later code; `_traj` arms). One difference: "
    'a singleton episode group gives 0 here (verl-agent: the raw return); with G >= 2 it never '
    'occurs.',
    '- MT-GRPO arm: the same step returns, grouped by (task, turn index) instead of (task, '
    'anchor state); our operationalisation of per-turn-index normalisation. Its bias is '
    'measured on a two-turn toy in tests/credit/gigpo_test.py (TurnIndexBiasTest).',
    '- Action masking: the policy samples from, and PPO uses log-probs of, the distribution '
    'restricted to the 4 action tokens. '
    + (
      'Random init, no SFT'
      if ws_info is None
      else 'Warm start as above (the SFT loss is the '
      "cross-entropy of the same masked distribution on the demonstrations' action tokens)"
    )
    + f', no KL, entropy coefficient {config.loss.ent_coef:g}, lr {config.optim.lr:g} (unless an '
    'arm sets its own).',
    '- Noise floor (`shuffled_reward`): GRPO (mean_std_norm over trajectories) on the episode '
    'returns of the same rollout slot of the previous task in the batch, so each advantage is '
    'independent of the episode it weights (`jaxca.estimators` stage `shuffled_reward`).',
    '',
  ]
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines))
  best = max(stats, key=lambda k: stats[k]['auc'].mean())
  return (
    f'{head}; best AUC {best} {_rng(stats[best]["auc"], digits=1)}; '
    f'{timing["wall_s"]:.0f} s; results in {os.path.join(workdir, "results.md")}'
  )


def _seed_cell(values, pct=True):
  """'mean (per seed)<br>mean ± sd [95% CI] (n seeds)': percentages (1 digit) or counts."""
  digits = None if pct else 0
  return f'{report.fmt_seeds(values, digits, pct)}<br>{report.fmt_ci(values, digits, pct)}'


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
