"""RBIS paper control experiment: online off-policy control with per-start-time traces.

Protocol (Daley et al., arXiv 2301.11321; official
`experiments/training.py::run_control_trial`): tabular Q on the Bifurcated Gridworld,
behaviour epsilon-greedy(Q) (eps 1 for the first episodes, then 0.2), target epsilon-
greedy(Q) with eps 0.1, both from the live Q at every step (argmax ties split
uniformly); at step t, with the expected-SARSA TD error
`delta_t = r + gamma * sum_a pi(a|s') Q(s', a) - Q(s, a)` (no bootstrap at termination),
every start time k of the current episode gets `Q(S_k, A_k) += alpha gamma^(t-k)
beta_{k,t} delta_t` (`jaxca.credit.traces`). After every training episode, one evaluation
episode (eps 0.05, at most 51 actions, discounted return) on a separate evaluation env
whose state persists across evaluations (as the official `test_sampler`: an evaluation
cut by the cap leaves the next one starting mid-grid). Curve: the official `smooth` (mean
of the last 100 evaluation returns, including the initial (0, 0.0) point) and
`linear_interpolation` (segment [x_i, x_{i+1}) filled with `linspace(y_i, y_{i+1},
x_{i+1} - x_i)`) to timesteps 0..3000; AUC = sum of the 3001 values.

Implementation: every (method, lambda, seed) trial is one lane of a vmapped state; the
four methods are four vmapped sub-programs of ONE jitted chunk function (each method's
rule is static, so no lane pays for another method's rule). A chunk scans `chunk_steps`
environment steps with a circular window of `window` start times per trial and Q
snapshots at episode ends, then plays the evaluation episodes of those snapshots
(a scan over the snapshot slots, each a 51-step scan). The host shows a progress bar,
checkpoints the state between chunks, and computes the curves and AUCs at the end.
Where runs write (default runs/rbis_gridworld/), resume checks and errors: `jaxca.runs`.
"""

import json
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxca import envs
from jaxca import rbis_protocol
from jaxca import runs
from jaxca.envs import gridworld

FLAGS = flags.FLAGS


NAME = 'rbis_gridworld'
SAFE_KEYS = ('checkpoint_every',)  # when the state is saved, not what is computed
CHECKPOINT = 'checkpoint.npz'


def define_flags():
  """Defined only when run as a script, so tests can import several experiments."""
  runs.define_flags(NAME)


METHOD_LABELS = {
  'retrace': 'Retrace',
  'truncated_is': 'Truncated IS',
  'recursive_retrace': 'Recursive Retrace',
  'rbis': 'RBIS',
}


def _settings(config):
  """[(method, lambda, alpha)] in output order, with the alpha looked up per lambda."""
  out = []
  grid = [round(x, 6) for x in config.alpha_grid]
  for method in config.methods:
    if method not in METHOD_LABELS:
      raise runs.ConfigError(
        f'Unknown method {method!r} in config.methods; choose from {list(METHOD_LABELS)}.'
      )
    if len(config.alphas[method]) != len(grid):
      raise runs.ConfigError(
        f'config.alphas.{method} has {len(config.alphas[method])} step sizes; config.alpha_grid '
        f'has {len(grid)} lambdas.'
      )
    for lam in config.lambdas:
      if round(lam, 6) not in grid:
        raise runs.ConfigError(
          f'config.lambdas: {lam} has no step size; config.alpha_grid is {grid}.'
        )
      out.append((method, float(lam), float(config.alphas[method][grid.index(round(lam, 6))])))
  return out


def validate(config):
  """Raises ConfigError (naming the key) for an invalid config; returns the settings."""
  for key in ('num_seeds', 'timesteps', 'window', 'chunk_steps', 'max_episode_len'):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise runs.ConfigError(f'config.{key} must be a positive int; got {value!r}.')
  if isinstance(config.checkpoint_every, bool) or config.checkpoint_every < 0:
    raise runs.ConfigError(
      f'config.checkpoint_every must be an int >= 0 (0 disables); got {config.checkpoint_every!r}.'
    )
  for key in ('gamma', 'behaviour_eps', 'explore_eps', 'target_eps', 'eval_eps'):
    if not 0.0 <= float(config[key]) <= 1.0:
      raise runs.ConfigError(f'config.{key} must be in [0, 1]; got {config[key]!r}.')
  if config.env not in envs.ENV_NAMES:
    raise runs.ConfigError(
      f'Unknown config.env={config.env!r}; choose from {list(envs.ENV_NAMES)}.'
    )
  for lam in config.curve_lambdas:
    if not any(abs(lam - x) < 1e-6 for x in config.lambdas):
      raise runs.ConfigError(
        f'config.curve_lambdas: {lam} is not in config.lambdas {tuple(config.lambdas)}.'
      )
  return _settings(config)


def build(config):
  """Returns (init_all, run_chunk, lanes): jitted functions over all methods' lanes."""
  env = envs.make(config.env)
  settings = _settings(config)
  lanes = {}
  for method in config.methods:
    rows = [(lam, alpha) for m, lam, alpha in settings if m == method]
    lam = np.repeat(np.array([r[0] for r in rows], np.float32), config.num_seeds)
    alpha = np.repeat(np.array([r[1] for r in rows], np.float32), config.num_seeds)
    seeds = np.tile(np.arange(config.num_seeds) + config.seed_offset, len(rows))
    keys = jax.vmap(jax.random.key_data)(jax.vmap(jax.random.key)(seeds))
    lanes[method] = dict(lambda_=jnp.asarray(lam), alpha=jnp.asarray(alpha), keys=keys)
  fns = {m: rbis_protocol.make_trial_fns(env, config, m) for m in config.methods}

  def init_all(lanes):
    return {
      m: jax.vmap(fns[m][0])(
        jax.vmap(jax.random.wrap_key_data)(lanes[m]['keys']), lanes[m]['lambda_'], lanes[m]['alpha']
      )
      for m in config.methods
    }

  def run_chunk(trials, lanes, t0):
    out_trials, outs = {}, {}
    for m in config.methods:
      keys = jax.vmap(jax.random.wrap_key_data)(lanes[m]['keys'])
      out_trials[m], outs[m] = jax.vmap(fns[m][1], in_axes=(0, None, 0, 0, 0))(
        trials[m], t0, keys, lanes[m]['lambda_'], lanes[m]['alpha']
      )
    return out_trials, outs

  return jax.jit(init_all), jax.jit(run_chunk, donate_argnums=0), lanes, settings


def _save_checkpoint(path, trials, points, next_chunk, fingerprint):
  leaves = jax.tree.leaves(trials)
  arrays = {f'leaf_{i}': np.asarray(x) for i, x in enumerate(leaves)}
  for m, (xs, ys, valid) in points.items():
    arrays[f'points_{m}'] = (
      np.stack([np.concatenate(xs, 1), np.concatenate(ys, 1), np.concatenate(valid, 1)])
      if xs
      else np.zeros((3, 0, 0))
    )
  tmp = path + '.tmp.npz'
  np.savez(tmp, next_chunk=next_chunk, fingerprint=fingerprint, **arrays)
  os.replace(tmp, path)


def _load_checkpoint(path, trials_template, fingerprint, methods):
  with np.load(path) as data:
    if str(data['fingerprint']) != fingerprint:
      runs.note(f'{path} is for another config; starting afresh')
      return None
    treedef = jax.tree.structure(trials_template)
    n = treedef.num_leaves
    trials = jax.tree.unflatten(treedef, [jnp.asarray(data[f'leaf_{i}']) for i in range(n)])
    points = {}
    for m in methods:
      p = data[f'points_{m}']
      points[m] = ([p[0]], [p[1]], [p[2].astype(bool)]) if p.size else ([], [], [])
    return trials, points, int(data['next_chunk'])


def _fingerprint(config):
  return json.dumps(
    {k: v for k, v in config.to_dict().items() if k not in SAFE_KEYS}, sort_keys=True, default=str
  )


def simulate(config, checkpoint_path=''):
  """Runs every trial; returns ({method: curves-ready points}, settings, lanes)."""
  init_all, run_chunk, lanes, settings = build(config)
  trials = init_all(lanes)
  total_steps = config.timesteps + config.max_episode_len + 2  # step indices 0..cap
  num_chunks = -(-total_steps // config.chunk_steps)
  points = {m: ([], [], []) for m in config.methods}
  start_chunk = 0
  fingerprint = _fingerprint(config)
  if checkpoint_path and os.path.exists(checkpoint_path):
    loaded = _load_checkpoint(checkpoint_path, trials, fingerprint, config.methods)
    if loaded is not None:
      trials, points, start_chunk = loaded
      runs.note(f'resumed from {checkpoint_path} at chunk {start_chunk} of {num_chunks}')
  bar = tqdm.tqdm(
    range(start_chunk, num_chunks),
    desc='chunks',
    unit='chunk',
    initial=start_chunk,
    total=num_chunks,
  )
  for c in bar:
    trials, outs = run_chunk(trials, lanes, jnp.int32(c * config.chunk_steps))
    for m in config.methods:
      xs, ys, valid = (np.asarray(o) for o in outs[m])
      points[m][0].append(xs)
      points[m][1].append(ys)
      points[m][2].append(valid)
    bar.set_postfix(step=(c + 1) * config.chunk_steps)
    runs.at(f'chunk {c + 1} of {num_chunks}')
    every = config.checkpoint_every
    if checkpoint_path and every and (c + 1) % every == 0 and c + 1 < num_chunks:
      _save_checkpoint(checkpoint_path, trials, points, c + 1, fingerprint)
  for m in config.methods:  # every trial must have stopped by the official rule
    finished = np.asarray(trials[m].finished)
    if not finished.all():
      raise RuntimeError(f'{m}: {np.sum(~finished)} trials did not finish.')
  return points, settings


def summarize(config, points, settings):
  """Curves and AUCs: returns (rows, curves {(method, lambda): (mean, ci)}, aucs)."""
  curve_fn = jax.jit(
    jax.vmap(
      lambda xs, ys, n: rbis_protocol.smoothed_curve(
        xs, ys, n, config.timesteps, config.smoothing_window
      )
    )
  )
  rows, curves, aucs = [], {}, {}
  n = config.num_seeds
  for m in config.methods:
    xs, ys, valid = (np.concatenate(p, 1) for p in points[m])
    order = np.argsort(~valid, axis=1, kind='stable')  # valid points first, in time order
    xs = np.take_along_axis(xs, order, 1)
    ys = np.take_along_axis(ys, order, 1)
    count = valid.sum(1) + 1
    xs = np.concatenate([np.zeros((len(xs), 1), xs.dtype), xs], 1)  # initial (0, 0.0)
    ys = np.concatenate([np.zeros((len(ys), 1), ys.dtype), ys], 1)
    method_rows = [s for s in settings if s[0] == m]
    for i, (_, lam, alpha) in enumerate(method_rows):
      sl = slice(i * n, (i + 1) * n)
      curve = np.asarray(curve_fn(xs[sl], ys[sl], count[sl]), np.float64)
      auc = curve.sum(1)
      ci = 1.96 * auc.std(ddof=1) / np.sqrt(n) if n > 1 else float('nan')
      rows.append(
        dict(method=m, lambda_=lam, alpha=alpha, auc_mean=auc.mean(), auc_ci95=ci, num_seeds=n)
      )
      aucs[(m, lam)] = auc
      if any(abs(lam - cl) < 1e-6 for cl in config.curve_lambdas):
        sd = curve.std(0, ddof=1) if n > 1 else np.zeros(curve.shape[1])
        curves[(m, lam)] = (curve.mean(0), 1.96 * sd / np.sqrt(n))
  return rows, curves, aucs


def write_outputs(config, workdir, rows, curves, aucs, info):
  """CSV, markdown table, plots, curve data and run info."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, f'{NAME}.csv'), 'w') as f:
    f.write('method,lambda,alpha,auc_mean,auc_ci95,num_seeds\n')
    for r in rows:
      f.write(
        f'{r["method"]},{r["lambda_"]:.1f},{r["alpha"]:.1f},{r["auc_mean"]:.2f},'
        f'{r["auc_ci95"]:.2f},{r["num_seeds"]}\n'
      )
  lambdas = list(config.lambdas)
  table = {(r['method'], r['lambda_']): r for r in rows}
  with open(os.path.join(workdir, f'{NAME}.md'), 'w') as f:
    f.write(f'AUC (mean +- 95% CI over {config.num_seeds} seeds; step size in brackets)\n\n')
    f.write('| lambda | ' + ' | '.join(METHOD_LABELS[m] for m in config.methods) + ' |\n')
    f.write('|---|' + '---|' * len(config.methods) + '\n')
    for lam in lambdas:
      cells = []
      best = max(table[(m, lam)]['auc_mean'] for m in config.methods)
      for m in config.methods:
        r = table[(m, lam)]
        cell = f'{r["auc_mean"]:.1f} +- {r["auc_ci95"]:.1f} ({r["alpha"]:.1f})'
        cells.append(f'**{cell}**' if r['auc_mean'] == best else cell)
      f.write(f'| {lam:.1f} | ' + ' | '.join(cells) + ' |\n')
    means = {m: np.mean([table[(m, lam)]['auc_mean'] for lam in lambdas]) for m in config.methods}
    mins = {m: min(table[(m, lam)]['auc_mean'] for lam in lambdas) for m in config.methods}
    f.write(
      '| mean over lambda | ' + ' | '.join(f'{means[m]:.1f}' for m in config.methods) + ' |\n'
    )
    f.write('| min over lambda | ' + ' | '.join(f'{mins[m]:.1f}' for m in config.methods) + ' |\n')

  fig, ax = plt.subplots(figsize=(7, 4))
  for m in config.methods:
    y = np.array([table[(m, lam)]['auc_mean'] for lam in lambdas])
    e = np.array([table[(m, lam)]['auc_ci95'] for lam in lambdas])
    ax.plot(lambdas, y, marker='o', ms=3, label=METHOD_LABELS[m])
    ax.fill_between(lambdas, y - e, y + e, alpha=0.25, linewidth=0)
  ax.set_xlabel(r'$\lambda$')
  ax.set_ylabel('Area under the curve')
  ax.set_title(f'Bifurcated Gridworld ({config.num_seeds} seeds, 95% CI)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, f'{NAME}_lambda_sweep.png'), dpi=120)
  plt.close(fig)

  curve_lams = [lam for lam in config.curve_lambdas]
  fig, axes = plt.subplots(
    1, len(curve_lams), figsize=(4.5 * len(curve_lams), 3.5), sharey=True, squeeze=False
  )
  optimum = config.gamma ** gridworld.shortest_path_length(envs.make(config.env))
  arrays = {}
  for ax, lam in zip(axes[0], curve_lams):
    for m in config.methods:
      key = next((k for k in curves if k[0] == m and abs(k[1] - lam) < 1e-6), None)
      if key is None:
        continue
      mean, ci = curves[key]
      x = np.arange(len(mean))
      ax.plot(x, mean, label=METHOD_LABELS[m])
      ax.fill_between(x, mean - ci, mean + ci, alpha=0.25, linewidth=0)
      arrays[f'{m}_lambda{lam:.1f}_mean'] = mean.astype(np.float32)
      arrays[f'{m}_lambda{lam:.1f}_ci95'] = ci.astype(np.float32)
    ax.axhline(optimum, ls='--', color='k', lw=1)
    ax.set_title(rf'$\lambda$ = {lam}')
    ax.set_xlabel('Timesteps')
  axes[0][0].set_ylabel('Discounted return (smoothed)')
  axes[0][-1].legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, f'{NAME}_curves.png'), dpi=120)
  plt.close(fig)
  np.savez_compressed(os.path.join(workdir, f'{NAME}_curves.npz'), **arrays)
  with open(os.path.join(workdir, f'{NAME}.json'), 'w') as f:
    json.dump(dict(config=config.to_dict(), **info), f, indent=1, default=str)


def run(config, workdir):
  """Simulates, summarises and writes every output into `workdir`; returns the CSV rows."""
  start = time.time()
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  ckpt = os.path.join(workdir, CHECKPOINT) if config.checkpoint_every else ''
  points, settings = simulate(config, ckpt)
  sim_time = time.time() - start
  rows, curves, aucs = summarize(config, points, settings)
  info = dict(
    wall_time_s=round(time.time() - start, 1),
    simulate_time_s=round(sim_time, 1),
    num_trials=len(settings) * config.num_seeds,
    devices=str(jax.devices()),
    cpu_count=os.cpu_count(),
  )
  write_outputs(config, workdir, rows, curves, aucs, info)
  if ckpt and os.path.exists(ckpt):
    os.remove(ckpt)
  return rows


def summary_line(config, rows, workdir):
  """Best AUC (and its lambda) per method, the number of seeds, where the table is."""
  best = []
  for m in config.methods:
    r = max((r for r in rows if r['method'] == m), key=lambda r: r['auc_mean'])
    best.append(f'{METHOD_LABELS[m]} {r["auc_mean"]:.1f} at lambda {r["lambda_"]:.1f}')
  return (
    f'Bifurcated Gridworld, {config.num_seeds} seeds x {len(rows)} settings: best AUC '
    + ', '.join(best)
    + f'; table in {os.path.join(workdir, NAME + ".md")}'
  )


EXPERIMENT = runs.Experiment(
  NAME,
  lambda config, workdir: summary_line(config, run(config, workdir), workdir),
  validate=validate,
  safe_keys=SAFE_KEYS,
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
