"""The experiments' command line (jaxca.runs): where runs write, drift, errors, summaries, noise.

Every run is a subprocess with smoke configs and JAX_DISABLE_MOST_OPTIMIZATIONS=1;
most of them stop before any training (validation, drift checks, complete runs),
so they cost one Python start each. Every call has a timeout, so a hang fails
with the captured output.
"""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from configs import arith_rl as arith_config
from jaxca import runs

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def _env():
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
  return env


def cli(name, *args, cwd=ROOT, smoke=True):
  config = f'{ROOT}/configs/{name}.py' + (':smoke' if smoke else '')
  cmd = [sys.executable, '-m', f'experiments.{name}', '--config', config, *args]
  return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


def _digest(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _one_line_error(proc, *fragments):
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


def test_config_error_is_one_line_exit_2_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'w'
  proc = cli('arith_rl', f'--workdir={workdir}', '--config.rl.prompts_per_step=-4')
  _one_line_error(proc, 'config.rl.prompts_per_step must be a positive int; got -4')
  assert not workdir.exists()
  proc = cli('arith_rl', f'--workdir={workdir}', '--config.credit.estimator=nope')
  _one_line_error(proc, "config.credit.estimator='nope'", 'rloo')
  assert not workdir.exists()
  # --debug shows the traceback.
  proc = cli('arith_rl', f'--workdir={workdir}', '--config.credit.estimator=nope', '--debug')
  assert proc.returncode != 0 and 'Traceback' in proc.stderr


def test_dry_run_runs_the_validation_of_a_run(tmp_path):
  """--dry_run refuses what a run refuses (a zero-width policy), writing nothing (issue 27/5)."""
  for extra in ((), ('--dry_run',)):
    proc = cli('arith_rl', f'--workdir={tmp_path / "w"}', '--config.policy.width=0', *extra)
    _one_line_error(proc, 'config.policy.width must be a positive int; got 0')
  assert not (tmp_path / 'w').exists()


def test_llm_rl_with_a_bad_checkpoint_is_one_line_and_writes_no_record(tmp_path):
  """A checkpoint that cannot be loaded: one line, exit 2, no config.json (issue 27 item 5)."""
  model = tmp_path / 'model'
  model.mkdir()
  proc = cli('llm_rl', f'--workdir={tmp_path / "w"}', f'--config.model.path={model}')
  _one_line_error(proc, 'config.model.path=', 'no config.json')
  (model / 'config.json').write_text('{"model_type": "qwen2"')  # truncated
  proc = cli('llm_rl', f'--workdir={tmp_path / "w"}', f'--config.model.path={model}')
  _one_line_error(proc, 'cannot load the checkpoint', 'config.model.path')
  assert not (tmp_path / 'w' / 'config.json').exists()


def test_unknown_keys_and_wrong_types_are_one_line_naming_the_closest_keys(tmp_path):
  """Misspelt or unknown config keys and unparsable values: one line, exit 2 (issue 27/8)."""
  for flag, fragments in (
    ('--config.rl.nonexistent=1', ('config.rl.nonexistent is not a config key', 'steps')),
    (
      '--config.credit.estimatr=rloo',
      ('config.credit.estimatr', 'closest: config.credit.estimator'),
    ),
    ('--config.rl.lr=abc', ('config.rl.lr is not a config key', 'config.optim.lr')),
    ('--config.rl.steps=abc', ('--config.rl.steps=abc', 'config.rl.steps is int (4)')),
  ):
    _one_line_error(cli('arith_rl', f'--workdir={tmp_path / "w"}', flag), *fragments)
  assert not (tmp_path / 'w').exists()


def test_an_estimator_option_no_stage_reads_is_refused(tmp_path):
  """--config.credit.lambda_ with grpo: one line naming the stages that take it (issue 27/10)."""
  proc = cli('arith_rl', f'--workdir={tmp_path / "w"}', '--config.credit.lambda_=1.5', '--dry_run')
  _one_line_error(proc, "config.credit: Estimator option 'lambda_'", "'gae'")
  assert not (tmp_path / 'w').exists()


MY_STAGES = """
import jax.numpy as jnp
from jaxca.estimators import core


@core.stage()
def scaled_outcome(scale=1.0):
  def apply(traj, prev, hp):
    outcome = jnp.sum(jnp.where(traj.mask, traj.rewards, 0.0), axis=-1, keepdims=True)
    adv = jnp.where(traj.mask, hp['scale'] * outcome, 0.0)
    return core.Targets(adv, adv)

  return core.Stage('scaled_outcome', (), dict(scale=scale), apply)


STAGES = {'scaled_outcome': scaled_outcome}
"""


def test_a_custom_stage_module_is_accepted_from_the_command_line(tmp_path):
  """--config.credit.stages names a user module whose stages the spec may use (issue 27/11)."""
  (tmp_path / 'my_stages.py').write_text(MY_STAGES)
  env = dict(_env(), PYTHONPATH=os.pathsep.join([str(tmp_path), _env()['PYTHONPATH']]))
  base = [
    sys.executable,
    '-m',
    'experiments.arith_rl',
    '--config',
    f'{ROOT}/configs/arith_rl.py:smoke',
  ]

  def run(*args):
    cmd = [*base, f'--workdir={tmp_path / "w"}', '--dry_run', *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)

  proc = run(
    '--config.credit.stages=my_stages', '--config.credit.estimator=scaled_outcome | whiten'
  )
  assert proc.returncode == 0 and 'config OK' in proc.stdout, proc.stdout + proc.stderr
  _one_line_error(run('--config.credit.estimator=scaled_outcome'), 'scaled_outcome', 'grpo')
  _one_line_error(run('--config.credit.stages=no_such_module'), "cannot import 'no_such_module'")
  assert not (tmp_path / 'w').exists()


def test_help_shows_the_harness_flags():
  """--help lists --config, --workdir and --dry_run beside the experiment's own flags (27/12)."""
  cmd = [sys.executable, '-m', 'experiments.arith_rl', '--help']
  proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
  text = proc.stdout + proc.stderr
  for flag in ('--config:', '--workdir:', '--[no]dry_run:', '--[no]allow_config_change:'):
    assert flag in text, text
  assert '--compare:' in text and 'add :smoke' in text


def test_missing_init_from_is_an_error_and_is_not_created(tmp_path):
  missing = tmp_path / 'missing'
  proc = cli('arith_rl', f'--workdir={tmp_path / "w"}', f'--config.init_from={missing}')
  _one_line_error(proc, 'config.init_from=', 'is not a directory')
  assert not missing.exists() and not (tmp_path / 'w').exists()


def test_ppo_gymnax_rejects_bad_sizes_and_learning_rates(tmp_path):
  for flag, message in (
    ('--config.rollout.num_envs=0', 'config.rollout.num_envs must be a positive int; got 0'),
    ('--config.optim.lr=-1', 'config.optim.lr must be > 0; got -1'),
  ):
    _one_line_error(cli('ppo_gymnax', f'--workdir={tmp_path / "w"}', flag), message)
  assert not (tmp_path / 'w').exists()


def test_config_drift_is_refused_and_config_json_untouched(tmp_path):
  workdir = tmp_path / 'w'
  workdir.mkdir()
  (workdir / 'config.json').write_text(
    json.dumps(runs.config_json(arith_config.get_config('smoke')), indent=2)
  )
  before = _digest(workdir / 'config.json')
  proc = cli(
    'arith_rl',
    f'--workdir={workdir}',
    '--config.credit.estimator=rloo',
    '--config.policy.width=32',
  )
  line = _one_line_error(
    proc,
    "config.credit.estimator: 'grpo' -> 'rloo'",
    'config.policy.width: 16 -> 32',
    '--allow_config_change',
    'new --workdir',
  )
  assert 'rl.steps' in line  # the keys that may change are listed
  assert _digest(workdir / 'config.json') == before
  assert sorted(os.listdir(workdir)) == ['config.json']


def test_allow_config_change_with_a_shape_key_is_refused_up_front(tmp_path):
  """--allow_config_change with a key that changes the checkpoint's shapes: one line, the run
  record untouched (issue 27 item 6)."""
  workdir = tmp_path / 'w'
  workdir.mkdir()
  config = runs.config_json(arith_config.get_config('smoke'))
  (workdir / 'config.json').write_text(json.dumps(config))
  (workdir / 'done.json').write_text(json.dumps(dict(summary='S', config=config)))
  before = {p: _digest(workdir / p) for p in os.listdir(workdir)}
  proc = cli(
    'arith_rl', f'--workdir={workdir}', '--allow_config_change', '--config.policy.width=32'
  )
  _one_line_error(proc, 'config.policy.width: 16 -> 32 changes the shapes', 'new --workdir')
  assert {p: _digest(workdir / p) for p in os.listdir(workdir)} == before


def test_complete_run_is_reported_not_redone(tmp_path):
  workdir = tmp_path / 'w'
  workdir.mkdir()
  config = runs.config_json(arith_config.get_config('smoke'))
  (workdir / 'config.json').write_text(json.dumps(config))
  (workdir / 'done.json').write_text(json.dumps(dict(summary='THE SUMMARY', config=config)))
  before = {p: _digest(workdir / p) for p in os.listdir(workdir)}
  proc = cli('arith_rl', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr
  assert 'complete run' in proc.stdout and 'THE SUMMARY' in proc.stdout
  assert 'Resumed' not in proc.stdout + proc.stderr
  assert {p: _digest(workdir / p) for p in os.listdir(workdir)} == before


def test_smoke_config_never_writes_into_results(tmp_path):
  for name in ('rbis_gridworld', 'bench_credit', 'arith_rl'):
    proc = cli(name, '--workdir=results/x', cwd=tmp_path)
    _one_line_error(proc, 'results/', 'smoke')
  assert os.listdir(tmp_path) == []


def test_dry_run_prints_the_config_and_writes_nothing(tmp_path):
  proc = cli('rbis_gridworld', '--dry_run', cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert 'num_seeds: 4' in proc.stdout
  assert os.path.join('runs', 'rbis_gridworld_smoke') in proc.stdout
  assert os.listdir(tmp_path) == []


def test_default_workdir_summary_and_quiet_output(tmp_path):
  """ppo_gymnax smoke without --workdir: runs/ppo_gymnax_smoke (not the full run's workdir,
  issue 27 item 9), a closing summary, no log noise."""
  proc = cli('ppo_gymnax', cwd=tmp_path)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  workdir = tmp_path / 'runs' / 'ppo_gymnax_smoke'
  for name in ('config.json', 'done.json', 'final.json', 'curve.png', 'metrics.jsonl'):
    assert (workdir / name).exists(), name
  out = proc.stdout.strip().splitlines()
  assert 'runs/ppo_gymnax_smoke' in out[0]
  assert out[-1].startswith(runs.SMOKE_LABEL + 'PPO on CartPole-v1: final episode return')
  assert 'runs/ppo_gymnax_smoke/final.json' in out[-1]
  assert len(out) <= 3, proc.stdout
  noise = ('orbax', 'Config:', "Unable to initialize backend 'tpu'", 'Traceback')
  for line in proc.stdout.splitlines() + proc.stderr.splitlines():
    assert not any(n in line for n in noise), line
    assert not (line[:1] in 'IW' and line[1:5].isdigit()), line  # absl INFO / WARNING lines
  final = json.loads((workdir / 'final.json').read_text())
  assert final['title'] == 'PPO (jaxca) on CartPole-v1'
  # Rerun: complete, nothing rewritten.
  before = _digest(workdir / 'final.json'), _digest(workdir / 'metrics.jsonl')
  again = cli('ppo_gymnax', cwd=tmp_path)
  assert again.returncode == 0 and 'complete run' in again.stdout, again.stdout + again.stderr
  assert (_digest(workdir / 'final.json'), _digest(workdir / 'metrics.jsonl')) == before


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(tmp_path):
  err = tmp_path / 'stderr.txt'
  cmd = [
    sys.executable,
    '-m',
    'experiments.arith_rl',
    '--config',
    f'{ROOT}/configs/arith_rl.py:smoke',
    f'--workdir={tmp_path / "w"}',
    '--config.rl.steps=100000',
  ]
  with open(err, 'w') as f:
    proc = subprocess.Popen(
      cmd,
      cwd=ROOT,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=f,
      text=True,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
      deadline = time.time() + TIMEOUT_S
      while 'RL grpo:' not in err.read_text() and time.time() < deadline:
        assert proc.poll() is None, err.read_text()
        time.sleep(0.5)
      time.sleep(2)  # a few RL chunks
      proc.send_signal(signal.SIGINT)
      proc.communicate(timeout=60)
    finally:
      if proc.poll() is None:
        proc.kill()
  text = err.read_text()
  assert proc.returncode == 130, text[-2000:]
  assert 'Traceback' not in text, text[-3000:]
  assert 'Ctrl-C: stopping at the end of the current step' in text
  assert 'Interrupted at RL step' in text and 'Rerun the same command to resume' in text


def test_compare_without_workdir_writes_under_runs(tmp_path):
  from jaxca import metrics  # pylint: disable=g-import-not-at-top

  dirs = []
  for name, final in (('a', 0.5), ('b', 0.7)):
    w = metrics.Writer(str(tmp_path / name), tensorboard=False)
    for step, em in ((0, 0.4), (10, final)):
      w.write(step, dict(phase='rl', eval_exact_match=em, eval_final_answer=em, time=1.0 + step))
    w.close()
    dirs.append(str(tmp_path / name))
  proc = cli('arith_rl', '--compare', ','.join(dirs), cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  out = tmp_path / 'runs' / 'arith_rl_compare'
  assert (out / 'results.md').exists() and 'runs/arith_rl_compare/results.md' in proc.stdout
  assert sorted(os.listdir(tmp_path)) == ['a', 'b', 'runs']
  _one_line_error(cli('arith_rl', '--compare', str(tmp_path / 'nope'), cwd=tmp_path), 'nope')


def test_compare_labels_runs_whose_configs_differ(tmp_path):
  """A smoke run beside a full run is not 'from the same warm start' (issue 27 item 9)."""
  from experiments import arith_rl  # pylint: disable=g-import-not-at-top
  from jaxca import metrics  # pylint: disable=g-import-not-at-top

  dirs = {}
  for name, config in (('smoke', 'smoke'), ('smoke_rloo', 'smoke,estimator=rloo'), ('full', '')):
    w = metrics.Writer(str(tmp_path / name), tensorboard=False)
    w.write(0, dict(phase='rl', eval_exact_match=0.4, eval_final_answer=0.4, time=1.0))
    w.close()
    (tmp_path / name / 'config.json').write_text(
      json.dumps(runs.config_json(arith_config.get_config(config)))
    )
    dirs[name] = str(tmp_path / name)
  assert runs.config_differences([dirs['smoke'], dirs['smoke_rloo']], arith_rl.COMPARE_KEYS) == []
  (differ,) = runs.config_differences([dirs['smoke'], dirs['full']], arith_rl.COMPARE_KEYS)
  assert 'policy.width: 16 vs 128' in differ and 'credit' not in differ
  out = tmp_path / 'out'
  proc = cli('arith_rl', '--compare', f'{dirs["smoke"]},{dirs["full"]}', f'--workdir={out}')
  assert proc.returncode == 0, proc.stderr
  assert 'configs differ' in proc.stdout and 'policy.width' in proc.stdout
  text = (out / 'results.md').read_text()
  assert 'same warm start' not in text and 'policy.width: 16 vs 128' in text
  proc = cli('arith_rl', '--compare', f'{dirs["smoke"]},{dirs["smoke_rloo"]}', f'--workdir={out}')
  assert proc.returncode == 0, proc.stderr
  assert 'from the same warm start' in (out / 'results.md').read_text()


def _rl_records(workdir):
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [
    {k: v for k, v in r.items() if k not in ('time', 'cpu_time')}
    for r in records
    if r['phase'] == 'rl' and 'loss' in r
  ]


def test_arith_rl_dapo_options_and_adaptive_kl_run_end_to_end_and_resume(tmp_path):
  """Dynamic sampling, overlong shaping/filtering and the adaptive KL coefficient, on through
  the command line (smoke); a run stopped at step 2 and resumed ends as an uninterrupted one."""
  workdir = tmp_path / 'dapo'
  dapo = [
    '--config.rl.dynamic_sampling=True',
    '--config.rl.max_gen_batches=2',
    '--config.rl.reward_shaping.overlong_buffer=1',
    '--config.rl.reward_shaping.overlong_filter=True',
  ]
  # dynamic sampling runs one iteration per call: the smoke config's steps_per_call=2 is refused.
  proc = cli('arith_rl', f'--workdir={workdir}', *dapo)
  _one_line_error(proc, 'config.rl.steps_per_call must be 1; got 2')
  proc = cli('arith_rl', f'--workdir={workdir}', '--config.rl.reward_shaping.overlong_buffer=-1')
  _one_line_error(proc, 'config.rl: reward_shaping.overlong_buffer must be in [0, ', 'got -1')
  proc = cli('arith_rl', f'--workdir={workdir}', '--config.loss.kl_ctrl=adaptive')
  _one_line_error(proc, "kl_ctrl='adaptive' starts from loss.kl_coef, which must be > 0")
  assert not workdir.exists()
  on = [
    *dapo,
    '--config.rl.steps_per_call=1',
    '--config.loss.kl_coef=0.05',
    '--config.loss.kl_ctrl=adaptive',
    '--config.loss.kl_horizon=16.0',
  ]
  proc = cli('arith_rl', f'--workdir={workdir}', *on)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  rl = _rl_records(workdir)
  assert [r['step'] for r in rl] == [1, 2, 3, 4], rl
  for r in rl:
    assert 1 <= r['gen_batches'] <= 2 and 0 <= r['frac_groups_kept'] <= 1, r
    assert r['groups_short'] >= 0 and r['overlong_penalty'] <= 0 and 'frac_truncated' in r, r
  coefs = [r['kl_coef'] for r in rl]
  assert abs(coefs[0] - 0.05) < 1e-8 and len(set(coefs)) == 4, coefs  # moves every iteration
  # Stopped after step 2 (rl.steps may change on resume), then resumed to step 4.
  resumed = tmp_path / 'resumed'
  proc = cli('arith_rl', f'--workdir={resumed}', *on, '--config.rl.steps=2')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  proc = cli('arith_rl', f'--workdir={resumed}', *on)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert _rl_records(resumed) == rl


def test_a_workdir_written_before_the_config_renames_resumes_and_old_keys_name_new_ones(tmp_path):
  """Issue 22: rl.lr -> optim.lr and clip_eps_high 0.0 -> None (runs.RENAMES). A finished run
  whose config.json / done.json hold the old names is recognised as this config's run; a real
  change is still refused; `--config.rl.lr` names the new key."""
  workdir = tmp_path / 'w'
  proc = cli('policy_objectives', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr
  from tests import runs_test  # noqa: PLC0415

  records = {n: json.loads((workdir / n).read_text()) for n in ('config.json', 'done.json')}
  old = runs_test.pre_rename_policy_objectives(records['config.json'])
  assert records['done.json']['config'] == records['config.json']

  def rewrite(lr):
    old['rl']['lr'] = lr
    (workdir / 'config.json').write_text(json.dumps(old))
    (workdir / 'done.json').write_text(json.dumps(dict(records['done.json'], config=old)))

  rewrite(1e-4)
  proc = cli('policy_objectives', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr
  assert 'holds a complete run of this config' in proc.stderr + proc.stdout
  rewrite(2e-4)
  _one_line_error(
    cli('policy_objectives', f'--workdir={workdir}'), 'config.optim.lr: 0.0002 -> 0.0001'
  )
  _one_line_error(
    cli('policy_objectives', f'--workdir={tmp_path / "x"}', '--config.rl.lr=1e-3'),
    'config.rl.lr is not a config key (renamed to config.optim.lr)',
  )
