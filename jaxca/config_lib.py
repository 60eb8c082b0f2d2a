"""Config validation for the experiments (run first in `train`, before anything is built).

`validate(config, device_count=None, sections=())` raises `ConfigError` (a ValueError) with a
one-line message that names the full key (`config.rl.prompts_per_step`), the value and the
allowed values; `jaxca.runs` prints it without a traceback. Each component validates its own
section, and this module only checks what spans sections:

  * the sections of the components below the learner, by the components themselves
    (`COMPONENTS`): `task` (`tasks.from_config`), `credit` (`estimators.from_config`), `optim`
    (`train.check_optimizer`), `policy` (`transformer.check_config`), `data`
    (`data.check_config`); a learner's sections by the learner, passed as `sections` (e.g.
    `lm.validate_sections`: `loss` and `rl`; `warmstart.validate_chunked`);
  * then, across sections: estimators that compare samples within a group (e.g. 'grpo',
    'rloo') need rl.group_size >= 2; the policy's max_len fits the task's prompt + response;
    batch sizes divisible by the device count (prompts per step, warm-start batch, eval and
    validation prompts) and the RL batch by rl.num_minibatches (each minibatch again by the
    device count); chunking: steps, ckpt_every and eval_every are multiples of steps_per_call;
    a warm-start stop needs a validation split, batches within the data;
  * `init_from` names an existing directory.

It imports no learner (`jaxca.lm`); gymnax PPO validates its config in `jaxca.ppo`.
"""

import os
import re
from typing import Optional

import jax

from jaxca import data as data_lib
from jaxca import estimators
from jaxca import train as train_lib
from jaxca.networks import transformer

DTYPES = transformer.DTYPES


class ConfigError(ValueError):
  """A config value is invalid; the message names the full key and the allowed values."""


def from_section(section: str, error: Exception) -> ConfigError:
  """A component's error about `field` as a ConfigError about config.<section>.field."""
  message = str(error)
  if '`' in message:
    return ConfigError(re.sub(r'`(\w+)`', rf'config.{section}.\1', message))
  return ConfigError(f'config.{section}: {message}')


def _has(cfg, name):
  return cfg is not None and name in cfg


def positive(path, value):
  """Raises ConfigError unless config.<path> is a positive int."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ConfigError(f'config.{path} must be a positive int; got {value!r}.')


def _multiple(path, value, of_path, of):
  if value % of:
    raise ConfigError(f'config.{path}={value} must be a multiple of config.{of_path}={of}.')


def divisible(path, value, n, what):
  """Raises ConfigError unless config.<path>'s `value` is divisible by `n` (`what`)."""
  if value % n:
    raise ConfigError(f'config.{path}={value} must be divisible by {what} ({n}).')


def _task_from_config(section):
  from jaxca import tasks  # noqa: PLC0415 (local: keeps config_lib importable without task deps)

  return tasks.from_config(section)


# The sections the components below the learner validate themselves: section -> its check
# (`check(section)`, raising ValueError or TypeError naming the `field`; returns what it built).
COMPONENTS = (
  ('task', _task_from_config),
  ('credit', estimators.from_config),
  ('optim', train_lib.check_optimizer),
  ('policy', transformer.check_config),
  ('data', data_lib.check_config),
)


def validate(config, device_count: Optional[int] = None, *, sections=()):
  """Checks `config`; raises ConfigError naming the offending field. Returns `config`.

  Each section present is checked by its component (`COMPONENTS`), then by each of `sections`
  (a learner's checks `check(config, task)`, e.g. `lm.validate_sections`), then what spans
  sections is checked here (see the module docstring).
  """
  n_dev = jax.device_count() if device_count is None else int(device_count)
  built = {}
  for name, check in COMPONENTS:
    if _has(config, name):
      try:
        built[name] = check(config[name])
      except (ValueError, TypeError) as e:
        raise from_section(name, e) from None
  task, est = built.get('task'), built.get('credit')
  for check in sections:
    check(config, task)
  if _has(config, 'policy') and task is not None and 'max_len' in config.policy:
    if config.policy.max_len < task.prompt_len + task.response_len:
      raise ConfigError(
        f'config.policy.max_len={config.policy.max_len} is shorter than prompt + response = '
        f'{task.prompt_len} + {task.response_len} for this task.'
      )
  ckpt_every = (
    config.train.ckpt_every if _has(config, 'train') and 'ckpt_every' in config.train else None
  )
  if _has(config, 'rl'):
    rl = config.rl
    for key in ('steps', 'prompts_per_step', 'group_size', 'num_minibatches', 'steps_per_call'):
      positive(f'rl.{key}', rl[key])  # the divisibility and chunking checks below read them
    if est is not None and rl.group_size < est.min_group_size:
      raise ConfigError(
        f'Estimator {est.name!r} compares samples within a group: config.rl.group_size must be '
        f'>= 2; got {rl.group_size}.'
      )
    divisible('rl.prompts_per_step', rl.prompts_per_step, n_dev, 'the device count')
    batch = rl.prompts_per_step * rl.group_size
    divisible(
      'rl.prompts_per_step * rl.group_size', batch, rl.num_minibatches, 'config.rl.num_minibatches'
    )
    divisible('rl minibatch size', batch // rl.num_minibatches, n_dev, 'the device count')
    _multiple('rl.steps', rl.steps, 'rl.steps_per_call', rl.steps_per_call)
    if rl.get('dynamic_sampling', False) and rl.steps_per_call != 1:
      raise ConfigError(
        'config.rl.dynamic_sampling=True generates a data-dependent number of batches per '
        f'iteration, so config.rl.steps_per_call must be 1; got {rl.steps_per_call}.'
      )
    if ckpt_every is not None:
      positive('train.ckpt_every', ckpt_every)
      _multiple('train.ckpt_every', ckpt_every, 'rl.steps_per_call', rl.steps_per_call)
    if _has(config, 'eval'):
      positive('eval.every', config.eval.every)
      _multiple('eval.every', config.eval.every, 'rl.steps_per_call', rl.steps_per_call)
      divisible('eval.num_prompts', config.eval.num_prompts, n_dev, 'the device count')
  if _has(config, 'warmstart') and 'steps_per_call' in config.warmstart:
    ws = config.warmstart
    positive('warmstart.steps_per_call', ws.steps_per_call)
    divisible('warmstart.batch_size', ws.batch_size, n_dev, 'the device count')
    _multiple('warmstart.steps', ws.steps, 'warmstart.steps_per_call', ws.steps_per_call)
    _multiple('warmstart.eval_every', ws.eval_every, 'warmstart.steps_per_call', ws.steps_per_call)
    if ckpt_every is not None:
      _multiple('train.ckpt_every', ckpt_every, 'warmstart.steps_per_call', ws.steps_per_call)
  if _has(config, 'data') and 'validation_fraction' in config.data:
    vf, nv = float(config.data.validation_fraction), config.data.get('num_validation', 0)
    if vf > 0 and _has(config, 'eval'):  # evaluated sharded like eval.num_prompts (arith_rl)
      divisible('data.num_validation', nv, n_dev, 'the device count')
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
  return config
