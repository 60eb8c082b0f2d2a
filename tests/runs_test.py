"""jaxca.runs (where runs write, config drift, finite checks) and config validation messages."""

import json
import os

import numpy as np
import pytest

from configs import arith_rl as arith_config
from configs import gigpo_keydoor as gigpo_config
from configs import policy_objectives as po_config
from configs import ppo_gymnax as ppo_config
from jaxca import config_lib
from jaxca import ppo
from jaxca import runs


def _write_config(workdir, config):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, runs.CONFIG_FILE), 'w') as f:
    json.dump(runs.config_json(config), f)


def test_flatten_and_diff():
  old = {'a': 1, 'b': {'c': 2, 'd': [1, 2]}}
  new = {'a': 1, 'b': {'c': 3, 'd': [1, 2], 'e': 'x'}}
  assert runs.flatten(new) == {'a': 1, 'b.c': 3, 'b.d': [1, 2], 'b.e': 'x'}
  assert runs.config_diff(old, new) == [('b.c', 2, 3), ('b.e', '(absent)', 'x')]
  assert runs.config_diff(old, old) == []


def test_check_resume_refuses_unsafe_changes_and_names_every_key(tmp_path):
  _write_config(tmp_path, arith_config.get_config('smoke'))
  assert runs.check_resume(str(tmp_path), arith_config.get_config('smoke')) == []
  new = arith_config.get_config('smoke')
  new.credit.estimator = 'rloo'
  new.policy.width = 32
  with pytest.raises(runs.ConfigError) as e:
    runs.check_resume(str(tmp_path), new, safe_keys=('rl.steps',))
  msg = str(e.value)
  assert "config.credit.estimator: 'grpo' -> 'rloo'" in msg
  assert 'config.policy.width: 16 -> 32' in msg
  assert '--workdir' in msg and '--allow_config_change' in msg and 'rl.steps' in msg
  assert '\n' not in msg
  # Explicitly allowed: the differences are returned.
  assert len(runs.check_resume(str(tmp_path), new, allow_change=True)) == 2


def test_allow_config_change_refuses_shape_keys_up_front(tmp_path):
  _write_config(tmp_path, arith_config.get_config('smoke'))
  new = arith_config.get_config('smoke')
  new.policy.width = 32
  new.credit.estimator = 'rloo'
  shape_keys = ('task.', 'policy.width')
  with pytest.raises(
    runs.ConfigError, match=r'^config\.policy\.width: 16 -> 32 changes the shapes'
  ):
    runs.check_resume(str(tmp_path), new, allow_change=True, shape_keys=shape_keys)
  new.policy.width = 16  # a change that keeps the shapes is allowed
  assert runs.check_resume(str(tmp_path), new, allow_change=True, shape_keys=shape_keys)
  new.task.num_steps = 3  # a prefix
  with pytest.raises(runs.ConfigError, match='config.task.num_steps'):
    runs.check_resume(str(tmp_path), new, allow_change=True, shape_keys=shape_keys)


def test_check_resume_allows_safe_keys(tmp_path):
  _write_config(tmp_path, arith_config.get_config('smoke'))
  new = arith_config.get_config('smoke')
  new.rl.steps = 8
  assert runs.check_resume(str(tmp_path), new, safe_keys=('rl.steps',)) == [('rl.steps', 4, 8)]


def test_check_resume_accepts_keys_added_since_the_run_at_their_defaults(tmp_path):
  # A run written before a config key existed: its config.json lacks the key. At the config
  # file's value the key is not drift; set on the command line (overridden) it is.
  old = runs.config_json(arith_config.get_config('smoke'))
  del old['rl']['dynamic_sampling']
  with open(os.path.join(tmp_path, runs.CONFIG_FILE), 'w') as f:
    json.dump(old, f)
  new = arith_config.get_config('smoke')
  assert runs.check_resume(str(tmp_path), new) == [('rl.dynamic_sampling', '(absent)', False)]
  with pytest.raises(runs.ConfigError, match='rl.dynamic_sampling'):
    runs.check_resume(str(tmp_path), new, overridden=('rl.dynamic_sampling',))
  new.credit.estimator = 'rloo'  # a changed key is still refused
  with pytest.raises(runs.ConfigError, match='credit.estimator'):
    runs.check_resume(str(tmp_path), new)


def _write_json(workdir, obj):
  with open(os.path.join(workdir, runs.CONFIG_FILE), 'w') as f:
    json.dump(obj, f)


def pre_rename_policy_objectives(config):
  """The config.json a policy_objectives run wrote before the issue-22 renames (`config`: a
  ConfigDict or its JSON dict)."""
  old = json.loads(json.dumps(config if isinstance(config, dict) else runs.config_json(config)))
  old['rl']['lr'] = old.pop('optim')['lr']
  for name, arm in old['arms'].items():
    if arm['loss'].get('clip_eps_high', 0) is None:
      arm['loss']['clip_eps_high'] = 0.0
    if 'optim' in arm:
      old['arms'][name]['rl']['lr'] = arm.pop('optim')['lr']
  return old


def test_a_workdir_written_before_the_renames_resumes(tmp_path):
  # policy_objectives: rl.lr -> optim.lr (also per arm), clip_eps_high 0.0 -> None.
  for arg in ('smoke', 'calibrate'):
    new = po_config.get_config(arg)
    _write_json(tmp_path, pre_rename_policy_objectives(new))
    diffs = runs.check_resume(str(tmp_path), new)  # no refusal
    assert [k for k, _, _ in diffs] == ['optim.max_grad_norm', 'optim.name'], diffs
    assert runs.same_run(pre_rename_policy_objectives(new), new)  # done.json: complete
  # arith_rl: the "off" sentinels 0.0, '' and -1 became None.
  old = runs.config_json(arith_config.get_config('smoke'))
  old['loss'].update(clip_eps_high=0.0, vf_clip=0.0)
  old.update(init_from='', debug=dict(nan_after_step=-1))
  old['data']['dir'] = old['credit']['stages'] = ''
  _write_json(tmp_path, old)
  assert runs.check_resume(str(tmp_path), arith_config.get_config('smoke')) == []
  # llm_rl: the '' paths, pad token and stages became None.
  from configs import llm_rl as llm_config  # noqa: PLC0415

  new = llm_config.get_config('smoke')
  old = runs.config_json(new)
  for section, key in (
    ('model', 'path'),
    ('tokenizer', 'path'),
    ('data', 'path'),
    ('task', 'pad_token'),
    ('credit', 'stages'),
  ):
    assert old[section][key] is None, (section, key)
    old[section][key] = ''
  _write_json(tmp_path, old)
  assert runs.check_resume(str(tmp_path), new) == []  # fmt: skip
  # gigpo_keydoor: num_seeds=n -> seeds=(0, ..., n-1).
  new = gigpo_config.get_config()
  old = runs.config_json(new)
  old['num_seeds'] = len(old.pop('seeds'))
  _write_json(tmp_path, old)
  assert runs.check_resume(str(tmp_path), new) == []
  # ppo_gymnax still counts vmapped seeds with num_seeds: nothing is renamed there.
  _write_config(tmp_path, ppo_config.get_config('smoke'))
  assert runs.check_resume(str(tmp_path), ppo_config.get_config('smoke')) == []


@pytest.mark.parametrize('name', ['mc_credit', 'token_credit'])
def test_arm_tables_written_with_empty_string_off_values_resume(tmp_path, name):
  # mc_credit's arms.*.mc / wall_budget and token_credit's arms.*.planning: '' -> None.
  import importlib  # noqa: PLC0415

  new = importlib.import_module(f'configs.{name}').get_config('smoke')
  old = runs.config_json(new)
  for arm in old['arms'].values():
    for key in ('mc', 'wall_budget', 'planning'):
      if key in arm and arm[key] is None:
        arm[key] = ''
  _write_json(tmp_path, old)
  assert runs.check_resume(str(tmp_path), new) == []
  assert runs.same_run(old, new)
  migrated = runs.migrate_config(old, runs.config_json(new))
  assert migrated == runs.config_json(new)
  old['arms']['grpo']['mc' if name == 'mc_credit' else 'planning'] = 'spo'  # a real change
  _write_json(tmp_path, old)
  with pytest.raises(runs.ConfigError, match=r'config\.arms\.grpo\.'):
    runs.check_resume(str(tmp_path), new)


@pytest.mark.parametrize(
  'path, keys',
  [
    ('results/mc_credit_protocol', ('mc', 'wall_budget')),
    ('results/mc_credit', ('mc', 'wall_budget')),
    ('results/token_credit_protocol', ('planning',)),
    ('results/token_credit', ('planning',)),
  ],
)
def test_committed_results_configs_migrate_to_none(path, keys):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, path, runs.CONFIG_FILE)) as f:
    old = json.load(f)
  name = os.path.basename(path).removesuffix('_protocol')
  import importlib  # noqa: PLC0415

  new = runs.config_json(importlib.import_module(f'configs.{name}').get_config())
  migrated = runs.migrate_config(old, new)
  for arm_name, arm in migrated['arms'].items():
    for key in keys:
      if key in arm:
        assert arm[key] != '', (arm_name, key)
        assert arm[key] == (old['arms'][arm_name][key] or None), (arm_name, key)


def test_a_real_change_against_a_pre_rename_workdir_is_refused(tmp_path):
  new = po_config.get_config('smoke')
  old = pre_rename_policy_objectives(new)
  old['rl']['lr'] = 2e-4
  _write_json(tmp_path, old)
  with pytest.raises(runs.ConfigError, match=r'config\.optim\.lr: 0\.0002 -> 0\.0001'):
    runs.check_resume(str(tmp_path), new)
  assert not runs.same_run(old, new)
  old = pre_rename_policy_objectives(new)
  old['arms']['clip_higher']['loss']['clip_eps_high'] = 0.0  # was "= clip_eps", now 0.28
  _write_json(tmp_path, old)
  with pytest.raises(runs.ConfigError, match=r'arms\.clip_higher\.loss\.clip_eps_high: None'):
    runs.check_resume(str(tmp_path), new)
  new = gigpo_config.get_config()
  old = runs.config_json(new)
  old['num_seeds'] = 2
  del old['seeds']
  _write_json(tmp_path, old)
  with pytest.raises(runs.ConfigError, match=r'config\.seeds: \[0, 1\] -> \[0, 1, 2, 3\]'):
    runs.check_resume(str(tmp_path), new)


def test_arith_rl_compare_reads_renamed_keys_by_their_new_names(tmp_path):
  from experiments import arith_rl  # noqa: PLC0415

  old = runs.config_json(arith_config.get_config('smoke'))
  old['loss'].update(clip_eps_high=0.0, vf_clip=0.0)
  old.update(init_from='', debug=dict(nan_after_step=-1))
  for name, config in (('old', old), ('new', runs.config_json(arith_config.get_config('smoke')))):
    os.makedirs(tmp_path / name)
    _write_json(tmp_path / name, config)
  dirs = [str(tmp_path / 'old'), str(tmp_path / 'new')]
  differences = lambda d: runs.config_differences(d, arith_rl.COMPARE_KEYS)  # noqa: E731
  assert differences(dirs) == []
  assert differences(dirs[::-1]) == []
  old['policy']['width'] = 32
  _write_json(tmp_path / 'old', old)
  assert ['policy.width: 32 vs 16' in d for d in differences(dirs)] == [True]


def test_an_old_key_on_the_command_line_names_the_new_one():
  config = po_config.get_config('calibrate')
  msg = runs.unknown_key_message(config, 'rl.lr')
  assert msg == '--config.rl.lr: config.rl.lr is not a config key (renamed to config.optim.lr).'
  msg = runs.unknown_key_message(config, 'arms.r_lr1e-4_ent01_2x2.rl.lr')
  assert 'renamed to config.arms.r_lr1e-4_ent01_2x2.optim.lr' in msg
  assert 'renamed to config.seeds' in runs.unknown_key_message(
    gigpo_config.get_config(), 'num_seeds'
  )
  assert 'renamed' not in runs.unknown_key_message(ppo_config.get_config(), 'seeds')


def test_workdir_defaults_to_runs_and_smoke_never_writes_results(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert runs.resolve_workdir(None, 'x') == os.path.join('runs', 'x')
  assert runs.resolve_workdir(None, 'x', smoke=True) == os.path.join('runs', 'x_smoke')
  assert runs.resolve_workdir('results/x', 'x') == 'results/x'  # explicit, full config
  for path in ('results', 'results/x', './results/x/y'):
    with pytest.raises(runs.ConfigError, match='smoke'):
      runs.resolve_workdir(path, 'x', smoke=True)
  assert runs.resolve_workdir('results_other', 'x', smoke=True) == 'results_other'
  assert not os.path.exists(tmp_path / 'runs')  # resolving writes nothing


def test_unknown_key_message_names_the_closest_keys():
  config = arith_config.get_config('smoke')
  assert runs.unknown_key_message(config, 'credit.estimator') is None
  assert runs.unknown_key_message(config, 'rl') is None
  msg = runs.unknown_key_message(config, 'credit.estimatr')
  assert 'closest: config.credit.estimator;' in msg and 'config.credit has eps, estimator' in msg
  assert 'config.optim.lr' in runs.unknown_key_message(config, 'rl.lr')
  assert 'config.policy.width' in runs.unknown_key_message(config, 'policy.widht')
  assert '\n' not in msg


def test_explicit_estimator_options_must_be_read_by_the_spec():
  """--config.credit.lambda_ with grpo is refused naming the stages that take it; config
  defaults the spec ignores stay fine (issue 27 item 10)."""
  config = arith_config.get_config('smoke')  # grpo; its lambda_ default is not read: fine
  runs.check_explicit_options(config, ())
  runs.check_explicit_options(config, ('credit.eps', 'credit.estimator', 'rl.steps'))
  with pytest.raises(runs.ConfigError, match=r"'lambda_' is not read by .*'grpo'.*'gae'"):
    runs.check_explicit_options(config, ('credit.lambda_',))
  config.credit.estimator = 'gae'
  runs.check_explicit_options(config, ('credit.lambda_', 'credit.gamma'))


def test_closing_lines_label_smoke_runs_and_say_what_next():
  """A smoke run's summary is labelled as not a result; the hint comes last (issue 27/12)."""
  assert runs.closing_lines('H1 REFUTED', smoke=False) == ['H1 REFUTED']
  (line,) = runs.closing_lines('H1 REFUTED', smoke=True)
  assert line.startswith('smoke config') and 'not results' in line and line.endswith('H1 REFUTED')
  assert runs.closing_lines('S', False, 'try rloo') == ['S', 'Next: try rloo']


def test_arith_rl_suggests_another_estimator_and_compare():
  from experiments import arith_rl  # pylint: disable=g-import-not-at-top

  hint = arith_rl.next_steps(arith_config.get_config('smoke'), 'runs/arith_rl')
  assert '--config.credit.estimator=rloo' in hint and '--config.init_from=runs/arith_rl' in hint
  assert '--compare runs/arith_rl,runs/arith_rl_rloo' in hint


def test_is_smoke():
  assert runs.is_smoke('configs/x.py:smoke')
  assert runs.is_smoke('configs/x.py:num_seeds=3,smoke')
  assert runs.is_smoke('configs/x.py:smoke=true')
  assert not runs.is_smoke('configs/x.py')
  assert not runs.is_smoke('configs/x.py:smoke=false')
  assert not runs.is_smoke(None)


class _Ckpt:
  directory = '/w/checkpoints'

  def wait(self):
    pass

  def latest_step(self):
    return 6


def test_check_finite_names_phase_step_and_last_checkpoint():
  runs.check_finite(dict(loss=np.ones(3)), ('loss', 'missing'), phase='RL', step=4)
  with pytest.raises(FloatingPointError, match=r'RL phase at step 8.*step 6 in /w/checkpoints'):
    runs.check_finite(
      dict(loss=np.array([1.0, np.nan])), ('loss',), phase='RL', step=8, checkpointer=_Ckpt()
    )


@pytest.mark.parametrize(
  'path,value,message',
  [
    ('rl.prompts_per_step', -4, r'^config\.rl\.prompts_per_step must be a positive int; got -4\.$'),
    ('credit.estimator', 'nope', r"^Unknown config\.credit\.estimator='nope'; choose from .*rloo"),
    ('task.name', 'sudoku', r"^Unknown config\.task\.name='sudoku'; choose from \['arith', 'gsm8k"),
    ('init_from', '/no/such/dir', r"^config\.init_from='/no/such/dir' is not a directory"),
  ],
)
def test_arith_config_errors_name_the_full_key(path, value, message):
  config = arith_config.get_config('smoke')
  section, _, key = path.rpartition('.')
  (config[section] if section else config)[key] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config)
  assert not os.path.exists('/no/such/dir')


@pytest.mark.parametrize(
  'path,value,message',
  [
    ('rollout.num_envs', 0, r'config\.rollout\.num_envs must be a positive int; got 0'),
    ('optim.lr', -1.0, r'config\.optim\.lr must be > 0; got -1'),
    ('ppo.lambda_', 1.5, r'config\.ppo\.lambda_ must be in \[0, 1\]'),
    ('ppo.num_minibatches', 3, r'divisible by config\.ppo\.num_minibatches'),
    ('ppo.advantage_norm', 'x', r"config\.ppo\.advantage_norm='x'; choose from"),
    ('train.num_chunks', 3, r'config\.train\.num_chunks=3 must divide the 4 updates'),
    ('env.name', 'NotAnEnv-v0', r"config\.env\.name='NotAnEnv-v0'; choose from .*CartPole-v1"),
    ('num_seeds', 0, r'config\.num_seeds must be a positive int'),
  ],
)
def test_ppo_config_is_validated(path, value, message):
  config = ppo_config.get_config('smoke')
  ppo.validate_config(config)
  section, _, key = path.rpartition('.')
  (config[section] if section else config)[key] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    ppo.validate_config(config)


def test_git_commit_is_the_commit_the_run_started_from(tmp_path, monkeypatch):
  """A report written at the end of a long run names the code that ran, even if the checkout
  got a new commit meanwhile."""
  import subprocess  # noqa: PLC0415

  def git(*args):
    subprocess.run(['git', *args], cwd=tmp_path, check=True, capture_output=True, timeout=30)

  git('init', '-q')
  for i in range(2):
    (tmp_path / 'f.txt').write_text(str(i))
    git('add', 'f.txt')
    git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', f'c{i}')
    if i == 0:
      monkeypatch.chdir(tmp_path)
      runs.git_commit.cache_clear()
      first = runs.git_commit()
  assert runs.git_commit() == first
  runs.git_commit.cache_clear()
  assert runs.git_commit() != first
  runs.git_commit.cache_clear()


@pytest.mark.parametrize(
  'seeds, run_arms, match',
  [
    ([], ('a',), 'config.seeds is empty'),
    ([0], (), 'config.run_arms is empty'),
    ([0], ('a', 'c'), r"config.run_arms: \['c'\] not in config.arms; defined: \['a', 'b'\]"),
    ([0], ('a', 'a'), r"config.run_arms repeats an arm: \['a', 'a'\]"),
  ],
)
def test_check_grid_refuses_a_bad_grid_in_one_line(seeds, run_arms, match):
  import ml_collections  # noqa: PLC0415

  c = ml_collections.ConfigDict(dict(seeds=seeds, run_arms=run_arms, arms=dict(a={}, b={})))
  with pytest.raises(runs.ConfigError, match=match) as e:
    runs.check_grid(c)
  assert '\n' not in str(e.value)
  c.update(seeds=[0, 1], run_arms=('b', 'a'))
  runs.check_grid(c)  # a good grid passes
