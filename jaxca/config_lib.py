"""Config validation for the experiments (run first in `train`, before anything is built).

`validate(config, device_count=None)` raises ValueError with a message that names
the field and the allowed values. It checks the sections it finds, so any
experiment config can use it:

  * names: task, estimator, optimizer(s), loss aggregation mode, reward, policy dtype;
  * estimators that require `group_ids` (e.g. 'grpo', 'rloo') need rl.group_size >= 2;
  * batch sizes divisible by the device count (prompts per step, warm-start
    batch, eval prompts) and the RL batch by rl.num_minibatches (each
    minibatch again divisible by the device count);
  * chunking: steps, ckpt_every and eval_every are multiples of steps_per_call;
  * the policy's max_len fits prompt + response.
"""

from typing import Optional

import jax

from jaxca import estimators
from jaxca import losses
from jaxca import train as train_lib

DTYPES = ('float32', 'bfloat16')


def _has(cfg, name):
  return cfg is not None and name in cfg


def _positive(path, value):
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'config.{path} must be a positive int; got {value!r}.')


def _multiple(path, value, of_path, of):
  if value % of:
    raise ValueError(f'config.{path}={value} must be a multiple of config.{of_path}={of}.')


def _divisible(path, value, n, what):
  if value % n:
    raise ValueError(f'config.{path}={value} must be divisible by {what} ({n}).')


def _optim(path, cfg):
  if cfg.name not in train_lib.OPTIMIZERS:
    raise ValueError(
      f'Unknown optimizer config.{path}.name={cfg.name!r}; '
      f'choose from {list(train_lib.OPTIMIZERS)}.'
    )
  lr = float(cfg.lr)
  if not lr > 0:  # inf is allowed on purpose (fault-injection tests); nan and <= 0 are not
    raise ValueError(f'config.{path}.lr must be > 0; got {cfg.lr!r}.')


def validate(config, device_count: Optional[int] = None):
  """Checks `config`; raises ValueError naming the offending field. Returns `config`."""
  n_dev = jax.device_count() if device_count is None else int(device_count)
  task = None
  if _has(config, 'task'):
    from jaxca import tasks  # local: keeps config_lib importable without the task deps

    kwargs = {k: v for k, v in config.task.items() if k != 'name'}
    if 'ops' in kwargs and not isinstance(kwargs['ops'], str):  # 'invertible' stays a name
      kwargs['ops'] = tuple(kwargs['ops'])
    task = tasks.make(config.task.name, **kwargs)  # unknown names list the choices
  if _has(config, 'credit'):
    est = estimators.from_config(config.credit)  # unknown names list the choices
  else:
    est = None
  if _has(config, 'optim'):
    _optim('optim', config.optim)
  if _has(config, 'loss'):
    if 'agg_mode' in config.loss:
      losses.check_agg_mode(config.loss.agg_mode)
    for key in ('clip_eps', 'kl_coef', 'ent_coef', 'vf_coef'):
      if key in config.loss and not float(config.loss[key]) >= 0:
        raise ValueError(f'config.loss.{key} must be >= 0; got {config.loss[key]!r}.')
  if _has(config, 'policy') and 'dtype' in config.policy:
    if config.policy.dtype not in DTYPES:
      raise ValueError(
        f'Unknown config.policy.dtype={config.policy.dtype!r}; choose from {DTYPES}.'
      )
    if task is not None and config.policy.max_len < task.prompt_len + task.response_len:
      raise ValueError(
        f'config.policy.max_len={config.policy.max_len} is shorter than prompt + response = '
        f'{task.prompt_len} + {task.response_len} for this task.'
      )
  ckpt_every = (
    config.train.ckpt_every if _has(config, 'train') and 'ckpt_every' in config.train else None
  )
  if _has(config, 'rl'):
    rl = config.rl
    from jaxca import lm

    if rl.reward not in lm.REWARDS:
      raise ValueError(f'Unknown config.rl.reward={rl.reward!r}; choose from {list(lm.REWARDS)}.')
    for key in (
      'steps',
      'prompts_per_step',
      'group_size',
      'num_epochs',
      'num_minibatches',
      'steps_per_call',
    ):
      _positive(f'rl.{key}', rl[key])
    if est is not None and 'group_ids' in est.requires and rl.group_size < 2:
      raise ValueError(
        f'Estimator {est.name!r} compares samples within a group: config.rl.group_size must be '
        f'>= 2; got {rl.group_size}.'
      )
    if not float(rl.temperature) > 0:
      raise ValueError(f'config.rl.temperature must be > 0; got {rl.temperature!r}.')
    _divisible('rl.prompts_per_step', rl.prompts_per_step, n_dev, 'the device count')
    batch = rl.prompts_per_step * rl.group_size
    _divisible(
      'rl.prompts_per_step * rl.group_size', batch, rl.num_minibatches, 'config.rl.num_minibatches'
    )
    _divisible('rl minibatch size', batch // rl.num_minibatches, n_dev, 'the device count')
    _multiple('rl.steps', rl.steps, 'rl.steps_per_call', rl.steps_per_call)
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
      raise ValueError(f'config.warmstart.steps must be >= 0; got {ws.steps}.')
    _divisible('warmstart.batch_size', ws.batch_size, n_dev, 'the device count')
    _multiple('warmstart.steps', ws.steps, 'warmstart.steps_per_call', ws.steps_per_call)
    _multiple('warmstart.eval_every', ws.eval_every, 'warmstart.steps_per_call', ws.steps_per_call)
    if ckpt_every is not None:
      _multiple('train.ckpt_every', ckpt_every, 'warmstart.steps_per_call', ws.steps_per_call)
    if not 0.0 <= float(ws.stop_at_accuracy) <= 1.0:
      raise ValueError(
        f'config.warmstart.stop_at_accuracy must be in [0, 1]; got {ws.stop_at_accuracy!r}.'
      )
  if _has(config, 'data') and _has(config, 'warmstart'):
    if config.warmstart.batch_size > config.data.num_train:
      raise ValueError('config.warmstart.batch_size exceeds config.data.num_train.')
    if _has(config, 'eval') and config.eval.num_prompts > config.data.num_test:
      raise ValueError(
        f'config.eval.num_prompts={config.eval.num_prompts} exceeds config.data.num_test='
        f'{config.data.num_test}.'
      )
  return config
