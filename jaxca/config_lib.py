"""Config validation for the experiments (run first in `train`, before anything is built).

`validate(config, device_count=None)` raises `ConfigError` (a ValueError) with a
one-line message that names the full key (`config.rl.prompts_per_step`), the value
and the allowed values; `jaxca.runs` prints it without a traceback. It checks the
sections it finds, so any experiment config can use it:

  * names: task, estimator, optimizer(s), loss aggregation mode, reward, policy dtype;
  * estimators that require `group_ids` (e.g. 'grpo', 'rloo') need rl.group_size >= 2;
  * batch sizes divisible by the device count (prompts per step, warm-start
    batch, eval prompts) and the RL batch by rl.num_minibatches (each
    minibatch again divisible by the device count);
  * chunking: steps, ckpt_every and eval_every are multiples of steps_per_call;
  * the policy's sizes are positive (heads dividing the width) and max_len fits prompt +
    response;
  * `init_from` names an existing directory;
  * gymnax PPO (`validate_ppo`): env name, positive sizes, gamma / lambda in [0, 1],
    coefficients >= 0, the batch divisible into minibatches and the updates into chunks.
"""

import os
import re
from typing import Optional

import jax

from jaxca import estimators
from jaxca import train as train_lib
from jaxca.objectives import aggregation

DTYPES = ('float32', 'bfloat16')


class ConfigError(ValueError):
  """A config value is invalid; the message names the full key and the allowed values."""


def _from_section(section: str, error: Exception) -> ConfigError:
  """A builder's error about `field` as a ConfigError about config.<section>.field."""
  message = str(error)
  if '`' in message:
    return ConfigError(re.sub(r'`(\w+)`', rf'config.{section}.\1', message))
  return ConfigError(f'config.{section}: {message}')


def _has(cfg, name):
  return cfg is not None and name in cfg


def _positive(path, value):
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ConfigError(f'config.{path} must be a positive int; got {value!r}.')


def _multiple(path, value, of_path, of):
  if value % of:
    raise ConfigError(f'config.{path}={value} must be a multiple of config.{of_path}={of}.')


def _divisible(path, value, n, what):
  if value % n:
    raise ConfigError(f'config.{path}={value} must be divisible by {what} ({n}).')


def _optim(path, cfg):
  if cfg.name not in train_lib.OPTIMIZERS:
    raise ConfigError(
      f'Unknown optimizer config.{path}.name={cfg.name!r}; '
      f'choose from {list(train_lib.OPTIMIZERS)}.'
    )
  lr = float(cfg.lr)
  if not lr > 0:  # inf is allowed on purpose (fault-injection tests); nan and <= 0 are not
    raise ConfigError(f'config.{path}.lr must be > 0; got {cfg.lr!r}.')


def validate(config, device_count: Optional[int] = None, *, sections=()):
  """Checks `config`; raises ConfigError naming the offending field. Returns `config`.

  This module checks what spans sections (divisibility over devices and minibatches,
  chunking multiples, data sizes) and the sections of the layers below the learner (task,
  credit, optim); it imports no learner. A learner validates its own sections: pass its
  checks as `sections`, callables `check(config, task)` run after these (e.g.
  `lm.validate_sections` for `loss` and the `rl` reward options).
  """
  n_dev = jax.device_count() if device_count is None else int(device_count)
  task = None
  if _has(config, 'task'):
    from jaxca import tasks  # local: keeps config_lib importable without the task deps

    kwargs = {k: v for k, v in config.task.items() if k != 'name'}
    if 'ops' in kwargs and not isinstance(kwargs['ops'], str):  # 'invertible' stays a name
      kwargs['ops'] = tuple(kwargs['ops'])
    known = getattr(tasks, 'TASKS', None)
    if known is not None and config.task.name not in known:
      raise ConfigError(
        f'Unknown config.task.name={config.task.name!r}; choose from {sorted(known)}.'
      )
    try:
      task = tasks.make(config.task.name, **kwargs)  # unknown names list the choices
    except (ValueError, TypeError) as e:
      raise _from_section('task', e) from None
  if _has(config, 'credit'):
    try:
      est = estimators.from_config(config.credit)  # unknown names list the choices
    except (ValueError, TypeError) as e:
      raise _from_section('credit', e) from None
  else:
    est = None
  if _has(config, 'optim'):
    _optim('optim', config.optim)
  if _has(config, 'loss'):
    if 'agg_mode' in config.loss:
      try:
        aggregation.check_agg_mode(config.loss.agg_mode)
      except ValueError as e:
        raise ConfigError(f'config.loss.agg_mode: {e}') from None
    for key in ('clip_eps', 'kl_coef', 'ent_coef', 'vf_coef'):
      if key in config.loss and not float(config.loss[key]) >= 0:
        raise ConfigError(f'config.loss.{key} must be >= 0; got {config.loss[key]!r}.')
  if _has(config, 'policy'):
    _policy_sizes(config.policy)
  if _has(config, 'policy') and 'dtype' in config.policy:
    if config.policy.dtype not in DTYPES:
      raise ConfigError(
        f'Unknown config.policy.dtype={config.policy.dtype!r}; choose from {DTYPES}.'
      )
    if task is not None and config.policy.max_len < task.prompt_len + task.response_len:
      raise ConfigError(
        f'config.policy.max_len={config.policy.max_len} is shorter than prompt + response = '
        f'{task.prompt_len} + {task.response_len} for this task.'
      )
  ckpt_every = (
    config.train.ckpt_every if _has(config, 'train') and 'ckpt_every' in config.train else None
  )
  if _has(config, 'rl'):
    rl = config.rl
    for key in (
      'steps',
      'prompts_per_step',
      'group_size',
      'num_epochs',
      'num_minibatches',
      'steps_per_call',
    ):
      _positive(f'rl.{key}', rl[key])
    if est is not None and rl.group_size < est.min_group_size:
      raise ConfigError(
        f'Estimator {est.name!r} compares samples within a group: config.rl.group_size must be '
        f'>= 2; got {rl.group_size}.'
      )
    if not float(rl.temperature) > 0:
      raise ConfigError(f'config.rl.temperature must be > 0; got {rl.temperature!r}.')
    _divisible('rl.prompts_per_step', rl.prompts_per_step, n_dev, 'the device count')
    batch = rl.prompts_per_step * rl.group_size
    _divisible(
      'rl.prompts_per_step * rl.group_size', batch, rl.num_minibatches, 'config.rl.num_minibatches'
    )
    _divisible('rl minibatch size', batch // rl.num_minibatches, n_dev, 'the device count')
    _multiple('rl.steps', rl.steps, 'rl.steps_per_call', rl.steps_per_call)
    if rl.get('dynamic_sampling', False) and rl.steps_per_call != 1:
      raise ConfigError(
        'config.rl.dynamic_sampling=True generates a data-dependent number of batches per '
        f'iteration, so config.rl.steps_per_call must be 1; got {rl.steps_per_call}.'
      )
    if ckpt_every is not None:
      _positive('train.ckpt_every', ckpt_every)
      _multiple('train.ckpt_every', ckpt_every, 'rl.steps_per_call', rl.steps_per_call)
    if _has(config, 'eval'):
      _positive('eval.every', config.eval.every)
      _multiple('eval.every', config.eval.every, 'rl.steps_per_call', rl.steps_per_call)
      _divisible('eval.num_prompts', config.eval.num_prompts, n_dev, 'the device count')
  if _has(config, 'warmstart'):
    ws = config.warmstart
    _optim('warmstart.optim', ws.optim)
    for key in ('batch_size', 'steps_per_call', 'eval_every'):
      _positive(f'warmstart.{key}', ws[key])
    if ws.steps < 0:
      raise ConfigError(f'config.warmstart.steps must be >= 0; got {ws.steps}.')
    _divisible('warmstart.batch_size', ws.batch_size, n_dev, 'the device count')
    _multiple('warmstart.steps', ws.steps, 'warmstart.steps_per_call', ws.steps_per_call)
    _multiple('warmstart.eval_every', ws.eval_every, 'warmstart.steps_per_call', ws.steps_per_call)
    if ckpt_every is not None:
      _multiple('train.ckpt_every', ckpt_every, 'warmstart.steps_per_call', ws.steps_per_call)
    if not 0.0 <= float(ws.stop_at_accuracy) <= 1.0:
      raise ConfigError(
        f'config.warmstart.stop_at_accuracy must be in [0, 1]; got {ws.stop_at_accuracy!r}.'
      )
  if _has(config, 'data') and 'validation_fraction' in config.data:
    vf, nv = float(config.data.validation_fraction), config.data.get('num_validation', 0)
    if not 0.0 <= vf < 0.9:
      raise ConfigError(f'config.data.validation_fraction must be in [0, 0.9); got {vf!r}.')
    if vf > 0 and (not isinstance(nv, int) or nv < 1):
      raise ConfigError(
        f'config.data.num_validation must be an int >= 1 when validation_fraction > 0; got {nv!r}.'
      )
    if vf > 0 and _has(config, 'eval'):  # evaluated sharded like eval.num_prompts (arith_rl)
      _divisible('data.num_validation', nv, n_dev, 'the device count')
  if _has(config, 'data') and _has(config, 'warmstart'):
    ws = config.warmstart
    if float(ws.get('stop_at_accuracy', 0.0)) > 0 and not config.data.get('validation_fraction'):
      raise ConfigError(
        'config.warmstart.stop_at_accuracy > 0 is judged on a validation split: set '
        'config.data.validation_fraction > 0 (and num_validation), or stop_at_accuracy=0.'
      )
    if config.warmstart.batch_size > config.data.num_train:
      raise ConfigError(
        f'config.warmstart.batch_size={config.warmstart.batch_size} exceeds '
        f'config.data.num_train={config.data.num_train}.'
      )
    if _has(config, 'eval') and config.eval.num_prompts > config.data.num_test:
      raise ConfigError(
        f'config.eval.num_prompts={config.eval.num_prompts} exceeds config.data.num_test='
        f'{config.data.num_test}.'
      )
  if 'init_from' in config:
    if config.init_from and not os.path.isdir(config.init_from):
      raise ConfigError(
        f'config.init_from={config.init_from!r} is not a directory (give a workdir of an '
        'earlier run, or its checkpoints/warmstart directory).'
      )
  for check in sections:
    check(config, task)
  return config


def _policy_sizes(policy):
  """config.policy.{width, depth, num_heads, max_len}: positive ints, heads dividing the width."""
  for key in ('width', 'depth', 'num_heads', 'max_len'):
    if key in policy:
      _positive(f'policy.{key}', policy[key])
  if 'width' in policy and 'num_heads' in policy and policy.width % policy.num_heads:
    raise ConfigError(
      f'config.policy.width={policy.width} must be divisible by config.policy.num_heads='
      f'{policy.num_heads}.'
    )


def _in_unit(path, value):
  if not 0.0 <= float(value) <= 1.0:
    raise ConfigError(f'config.{path} must be in [0, 1]; got {value!r}.')


def _nonnegative(path, value):
  if not float(value) >= 0:
    raise ConfigError(f'config.{path} must be >= 0; got {value!r}.')


def validate_ppo(config):
  """Checks a gymnax PPO config (configs/ppo_gymnax.py); raises ConfigError. Returns `config`."""
  from jaxca import ppo  # local: keeps config_lib light

  try:
    import gymnax  # pylint: disable=g-import-not-at-top
  except ImportError:
    gymnax = None
  if gymnax is not None and config.env.name not in gymnax.registered_envs:
    raise ConfigError(
      f'Unknown config.env.name={config.env.name!r}; choose from {list(gymnax.registered_envs)}.'
    )
  if config.env.max_steps_in_episode < 0:
    raise ConfigError(
      f'config.env.max_steps_in_episode must be >= 0 (0 keeps the default); '
      f'got {config.env.max_steps_in_episode!r}.'
    )
  _positive('num_seeds', config.num_seeds)
  _positive('rollout.num_envs', config.rollout.num_envs)
  _positive('rollout.num_steps', config.rollout.num_steps)
  if not config.network.hidden_sizes or any(
    isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in config.network.hidden_sizes
  ):
    raise ConfigError(
      f'config.network.hidden_sizes must be positive ints; got {config.network.hidden_sizes!r}.'
    )
  p = config.ppo
  _in_unit('ppo.gamma', p.gamma)
  _in_unit('ppo.lambda_', p.lambda_)
  for key in ('clip_eps', 'vf_coef', 'ent_coef'):
    _nonnegative(f'ppo.{key}', p[key])
  _positive('ppo.num_epochs', p.num_epochs)
  _positive('ppo.num_minibatches', p.num_minibatches)
  if p.advantage_norm not in ppo.ADVANTAGE_NORMS:
    raise ConfigError(
      f'Unknown config.ppo.advantage_norm={p.advantage_norm!r}; '
      f'choose from {list(ppo.ADVANTAGE_NORMS)}.'
    )
  batch = config.rollout.num_envs * config.rollout.num_steps
  _divisible(
    'rollout.num_envs * rollout.num_steps', batch, p.num_minibatches, 'config.ppo.num_minibatches'
  )
  _optim('optim', config.optim)
  _positive('train.total_timesteps', config.train.total_timesteps)
  _positive('train.num_chunks', config.train.num_chunks)
  updates = config.train.total_timesteps // batch
  if updates < 1:
    raise ConfigError(
      f'config.train.total_timesteps={config.train.total_timesteps} is less than one update '
      f'(rollout.num_envs * rollout.num_steps = {batch}).'
    )
  if updates % config.train.num_chunks:
    raise ConfigError(
      f'config.train.num_chunks={config.train.num_chunks} must divide the {updates} updates '
      f'(train.total_timesteps // (rollout.num_envs * rollout.num_steps)).'
    )
  return config
