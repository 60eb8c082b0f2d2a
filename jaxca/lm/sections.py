"""The LM learner's config sections, validated by the learner itself (`validate_sections`).

`config.loss` (`loss.loss_options`: objective, clip ranges, aggregation, coefficients, KL
estimator and controller), the learner's `config.rl` options (group size, epochs,
minibatches, temperature), `config.rl.reward` (`rewards.REWARDS`) and DAPO's `config.rl` options
(`rl.reward_shaping`, `rl.dynamic_sampling`, `rl.max_gen_batches`; arXiv 2503.14476). The
central `config_lib.validate` checks what spans sections and runs this as one of its
`sections` (`config_lib.validate(config, sections=(lm.validate_sections,))`).
"""

from jaxca import config_lib
from jaxca.lm import dapo
from jaxca.lm import loss as loss_lib
from jaxca.lm import rewards as rewards_lib

ConfigError = config_lib.ConfigError


def validate_sections(config, task=None):
  """Raises ConfigError (one line, the key and the allowed values) on a bad learner section."""
  if 'loss' in config and config.loss is not None:
    try:
      loss_lib.loss_options(config.loss)  # objective, hyper-parameters, KL estimator, controller
    except (ValueError, TypeError) as e:
      raise ConfigError(f'config.loss: {e}') from None
  if 'rl' not in config or config.rl is None:
    return
  rl = config.rl
  for key in ('group_size', 'num_epochs', 'num_minibatches'):
    if key in rl:
      config_lib.positive(f'rl.{key}', rl[key])
  if 'temperature' in rl and not float(rl.temperature) > 0:
    raise ConfigError(f'config.rl.temperature must be > 0; got {rl.temperature!r}.')
  if 'reward' in rl and rl.reward not in rewards_lib.REWARDS:
    raise ConfigError(
      f'Unknown config.rl.reward={rl.reward!r}; choose from {list(rewards_lib.REWARDS)}.'
    )
  if rl.get('reward_shaping') is not None:
    max_len = task.response_len if task is not None else 1 << 30
    try:
      dapo.reward_shaping_options(rl.reward_shaping, max_len)
    except (ValueError, TypeError) as e:
      raise ConfigError(f'config.rl: {e}') from None
  dynamic = rl.get('dynamic_sampling', False)
  if dynamic not in (True, False):
    raise ConfigError(f'config.rl.dynamic_sampling must be True or False; got {dynamic!r}.')
  if 'max_gen_batches' in rl:
    g = rl.max_gen_batches
    if isinstance(g, bool) or not isinstance(g, int) or g < 1:
      raise ConfigError(f'config.rl.max_gen_batches must be a positive int; got {g!r}.')
  if dynamic and rl.group_size < 2:
    raise ConfigError(
      'config.rl.dynamic_sampling=True keeps groups whose G rewards differ: '
      f'config.rl.group_size must be >= 2; got {rl.group_size}.'
    )
