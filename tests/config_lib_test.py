"""Tests for jaxca.config_lib.validate on the arith_rl config."""

from absl.testing import absltest
from absl.testing import parameterized

from configs import arith_rl as arith_rl_config
from experiments import arith_rl
from jaxca import config_lib
from jaxca import data
from jaxca import lm
from jaxca import tasks
from jaxca import train
from jaxca.networks import transformer


def _config(arg='smoke', **overrides):
  """The arith_rl config with dotted overrides, e.g. {'rl.group_size': 1}."""
  c = arith_rl_config.get_config(arg)
  for path, value in overrides.items():
    node = c
    *parents, leaf = path.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  c.lock()
  return c


class ValidateTest(parameterized.TestCase):
  @parameterized.parameters(None, 'smoke')
  def test_shipped_configs_pass(self, arg):
    config_lib.validate(_config(arg), device_count=1)

  def test_default_config_passes_on_8_devices(self):
    config_lib.validate(_config(None), device_count=8)

  @parameterized.named_parameters(
    ('unknown_estimator', {'credit.estimator': 'ppo2'}, 'grpo'),
    ('unknown_task', {'task.name': 'sudoku'}, 'arith'),
    ('unknown_optimizer', {'optim.name': 'adamax2'}, 'adamw'),
    ('unknown_agg', {'loss.agg_mode': 'sum'}, 'token_mean'),
    ('unknown_reward', {'rl.reward': 'length'}, 'outcome'),
    ('unknown_dtype', {'policy.dtype': 'float16'}, 'bfloat16'),
    (
      'group_needs_two',
      {'credit.estimator': 'rloo', 'rl.group_size': 1},
      'group_size must be >= 2',
    ),
    ('minibatches', {'rl.num_minibatches': 3}, 'num_minibatches'),
    ('rl_chunking', {'rl.steps': 5}, 'steps_per_call'),
    ('ckpt_chunking', {'train.ckpt_every': 3}, 'ckpt_every'),
    ('eval_chunking', {'eval.every': 3}, 'eval.every'),
    ('ws_chunking', {'warmstart.steps': 3}, 'warmstart.steps'),
    ('max_len', {'policy.max_len': 8}, 'max_len'),
    ('bad_lr', {'optim.lr': -1.0}, 'optim.lr'),
    ('bad_temperature', {'rl.temperature': 0.0}, 'temperature'),
    ('eval_too_big', {'eval.num_prompts': 4096}, 'num_test'),
    (
      'stop_needs_validation',
      {'data.validation_fraction': 0.0, 'warmstart.stop_at_accuracy': 0.35},
      'judged on a validation split',
    ),
    ('bad_validation', {'data.validation_fraction': 0.95}, 'data.validation_fraction'),
    ('no_validation_problems', {'data.num_validation': 0}, 'data.num_validation'),
  )
  def test_bad_config_fails_naming_the_field(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      arith_rl.validate(_config(**overrides), device_count=1)

  def test_config_lib_imports_no_learner(self):
    """The central validator checks what spans sections; the learner checks its own."""
    src = open(config_lib.__file__).read()
    self.assertNotRegex(src, r'from jaxca import lm|from jaxca\.lm|import jaxca\.lm')
    config = _config(**{'rl.reward': 'length'})
    config_lib.validate(config, device_count=1)  # not a cross-section matter
    with self.assertRaisesRegex(ValueError, 'rl.reward'):
      config_lib.validate(config, device_count=1, sections=(lm.validate_sections,))

  def test_gae_needs_no_group(self):
    config_lib.validate(_config(**{'credit.estimator': 'gae', 'rl.group_size': 1}), device_count=1)

  @parameterized.named_parameters(
    ('prompts', {'rl.prompts_per_step': 12}, 'prompts_per_step'),
    ('warmstart_batch', {'warmstart.batch_size': 20}, 'warmstart.batch_size'),
    ('eval', {'eval.num_prompts': 12}, 'eval.num_prompts'),
  )
  def test_batches_must_divide_over_devices(self, overrides, message):
    config = _config(**overrides)
    config_lib.validate(config, device_count=1)
    with self.assertRaisesRegex(ValueError, f'{message}.*device count'):
      config_lib.validate(config, device_count=8)


class ComponentTest(parameterized.TestCase):
  """Each component checks its own section, naming the `field`; config_lib names the key."""

  @parameterized.named_parameters(
    ('optim_name', train.check_optimizer, dict(name='adamax2', lr=1e-3), r'^Unknown `name`'),
    ('optim_lr', train.check_optimizer, dict(name='adam', lr=0.0), r'^`lr` must be > 0'),
    ('policy_size', transformer.check_config, dict(width=0), r'^`width` must be a positive'),
    ('policy_heads', transformer.check_config, dict(width=6, num_heads=4), r'^`width`=6 must'),
    ('policy_dtype', transformer.check_config, dict(dtype='float16'), r'^Unknown `dtype`'),
    ('task_name', tasks.from_config, dict(name='sudoku'), r"^Unknown `name`='sudoku'"),
    ('data_fraction', data.check_config, dict(validation_fraction=0.95), '`validation_fraction`'),
    (
      'data_count',
      data.check_config,
      dict(validation_fraction=0.1, num_validation=0),
      '`num_validation`',
    ),
  )
  def test_component_names_its_field(self, check, section, message):
    with self.assertRaisesRegex(ValueError, message):
      check(section)

  def test_components_pass_the_shipped_sections_and_build_the_task(self):
    c = _config()
    train.check_optimizer(c.optim)
    transformer.check_config(c.policy)
    data.check_config(c.data)
    self.assertEqual(tasks.from_config(c.task).prompt_len, 2 * c.task.num_steps + 3)

  def test_learner_and_warm_start_sections_are_theirs(self):
    for overrides, message in (
      ({'loss.ent_coef': -0.1}, r'config\.loss: loss\.ent_coef must be >= 0'),
      ({'rl.num_epochs': 0}, r'config\.rl\.num_epochs must be a positive int'),
      ({'warmstart.eval_every': 0}, r'config\.warmstart\.eval_every must be a positive int'),
      ({'warmstart.optim.lr': -1.0}, r'config\.warmstart\.optim\.lr must be > 0'),
    ):
      config = _config(**overrides)
      config_lib.validate(config, device_count=1)  # a single section: not config_lib's
      with self.assertRaisesRegex(ValueError, message):
        arith_rl.validate(config, device_count=1)


if __name__ == '__main__':
  absltest.main()
