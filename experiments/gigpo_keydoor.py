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
Statistics, the claim and its gate, F4 / F5 and results.md: `gigpo_keydoor_report`.
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

from experiments import gigpo_keydoor_report as report_lib
from jaxca import bench
from jaxca import checkpoint
from jaxca import estimators
from jaxca import lm
from jaxca import metrics
from jaxca import runs
from jaxca import warmstart
from jaxca.credit import gigpo
from jaxca.envs import keydoor
from jaxca.lm import multiturn
from jaxca.networks import transformer

NAME = 'gigpo_keydoor'
# Term weights per arm: (1 - shuffle, omega, shuffle); shuffled_reward is the noise floor.
SPEC = 'gigpo_episode + gigpo_step + 0*shuffled_reward'


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
  for _, us, ut, uh in report_lib.ANCHORS:
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

  def evaluate(params, tasks, key, greedy):
    s = multiturn.rollout(policy, params, key, env, tasks, group_size=1, greedy=greedy)
    return jnp.mean(s.returns)

  init_fn = jax.jit(jax.vmap(init))
  step_fn = jax.jit(jax.vmap(update), donate_argnums=0)
  eval_fn = jax.jit(jax.vmap(evaluate, in_axes=(0, None, 0, None)), static_argnums=3)
  return env, policy, est, init_fn, step_fn, eval_fn


# ----------------------------------------------------------------------------- warm start


def warm_start(config, env, policy, eval_tasks, workdir):
  """SFT on noisy-BFS demonstrations until validation greedy success reaches `stop_at`; cached.

  Demonstrations: `warmstart.num_demos` episodes of `keydoor.noisy_bfs_policy(p_opt)` on
  in-pool tasks, in the rollout's token layout (`multiturn.scripted_rollout`); the loss is
  the action-masked cross-entropy on their action tokens (`multiturn.make_sft_loss`), Adam
  with gradient clipping 1.0. The loop and the stop are `jaxca.warmstart.sft_loop`, judged
  on `keydoor.validation_tasks`; the cache (`jaxca.warmstart.cached`) is keyed by the env,
  policy and warmstart sections, the base seed and a digest of the demonstrations and
  validation tasks.

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
  val = keydoor.validation_tasks(env, eval_tasks, config.eval.num_tasks, config.seed + 17)
  sections = dict(
    env=json.loads(config.env.to_json_best_effort()),
    policy=json.loads(config.policy.to_json_best_effort()),
    warmstart=json.loads(ws.to_json_best_effort()),
    seed=int(config.seed),
    data=warmstart.digest(
      {k: np.asarray(v) for k, v in data.items()}, dict(layout=val.layout, start=val.start)
    ),
  )

  def train():
    greedy = jax.jit(
      lambda p: jnp.mean(
        multiturn.rollout(policy, p, jax.random.key(0), env, val, group_size=1, greedy=True).returns
      )
    )
    t0 = time.time()
    params, step, curve = warmstart.sft_minibatches(
      multiturn.make_sft_loss(policy, env),
      policy.init(jax.random.fold_in(base, 10**6 + 4)),
      data,
      lr=ws.lr,
      batch_size=ws.batch_size,
      rng=np.random.default_rng(config.seed + 7),
      validate=lambda p: {'val_success': float(greedy(p))},
      max_steps=ws.max_steps,
      eval_every=ws.eval_every,
      stop_at=ws.stop_at,
      metric='val_success',
      postfix=lambda e: dict(val=f'{e["val_success"]:.2f}'),
    )
    info = dict(
      steps=step,
      validation_success=curve[-1][1] if curve else 0.0,
      demo_success=float(jnp.mean(demos.returns)),
      seconds=time.time() - t0,
      curve=curve,
    )
    runs.note(
      f'warm start: {step} steps, validation greedy success {info["validation_success"]:.3f} '
      f'(demonstrations succeed {info["demo_success"]:.3f}; {info["seconds"]:.0f} s)'
    )
    return params, info

  reused = lambda i: (  # noqa: E731
    f'warm start: reused ({i["steps"]} steps, validation success {i["validation_success"]:.3f})'
  )
  return warmstart.cached(workdir, sections, train, reused, 'validation_greedy_success')


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
  return report_lib.write_report(workdir, config, records, runs_, timing, ws_info)


EXPERIMENT = runs.Experiment(NAME, run, validate=validate)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
