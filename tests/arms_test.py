"""jaxca.arms: an arm table's sections and estimators, the shared checks, wall-clock budgets."""

from absl.testing import absltest
import ml_collections

from jaxca import arms
from jaxca import runs


def _config(**over):
  c = ml_collections.ConfigDict(
    dict(
      seeds=(0, 1),
      task=dict(name='arith', num_steps=2, modulus=10, ops='invertible'),
      data=dict(num_train=64),
      policy=dict(width=16, depth=1, num_heads=2, max_len=16, dtype='float32', value_head=False),
      rl=dict(
        prompts=4, group_size=4, num_epochs=2, num_minibatches=2, temperature=1.0,
        iterations=3, eval_every=1, max_wall_s=100.0,
      ),
      optim=dict(name='adam', lr=1e-4, max_grad_norm=1.0),
      loss=dict(clip_eps=0.2, agg_mode='token_mean'),
      credit=dict(estimator='grpo', alpha1=1.0, alpha2=0.1),
      arms=dict(
        a=dict(loss=dict(clip_eps=0.3), optim=dict(lr=2e-4)),
        b=dict(credit=dict(estimator='rloo')),
        c=dict(estimator='gtpo', pooling='separate', wall_budget='a'),
      ),
      run_arms=('a', 'b', 'c'),
    )
  )  # fmt: skip
  for k, v in over.items():
    c[k] = v
  return c


class SectionsTest(absltest.TestCase):
  def test_section_puts_the_arms_keys_over_the_shared_ones(self):
    c = _config()
    self.assertEqual(arms.section(c, 'a', 'loss'), dict(clip_eps=0.3, agg_mode='token_mean'))
    self.assertEqual(arms.section(c, 'a', 'optim')['lr'], 2e-4)
    self.assertEqual(arms.section(c, 'b', 'loss'), c.loss.to_dict())
    self.assertEqual(arms.section(c, 'b', 'absent'), {})

  def test_estimator_own_credit_spec_or_shared(self):
    c = _config()
    self.assertEqual(arms.estimator(c, 'a').name, 'grpo')  # config.credit
    self.assertEqual(arms.estimator(c, 'b').name, 'rloo')  # its own credit section
    est = arms.estimator(c, 'c', ('alpha1', 'alpha2'), arm_keys=('pooling',))
    self.assertEqual(est.name, 'gtpo')
    self.assertAlmostEqual(float(est.hparams['terms'][0]['alpha2']), 0.1)  # config.credit's

  def test_task_and_policy_sized_to_the_vocabulary(self):
    task, policy = arms.task_and_policy(_config())
    self.assertEqual(task.prompt_len, 2 * 2 + 3)
    self.assertIsNotNone(policy)
    with self.assertRaisesRegex(runs.ConfigError, 'config.task'):
      arms.make_task(_config(task=dict(name='arith', num_steps=2, modulus=10, ops='nope')))


class CheckTest(absltest.TestCase):
  def test_a_good_config_passes(self):
    arms.check(_config())
    arms.check_wall_budgets(_config())

  def _refused(self, match, config, **kw):
    with self.assertRaisesRegex(runs.ConfigError, match) as e:
      arms.check(config, **kw)
    self.assertNotIn('\n', str(e.exception))

  def test_bad_configs_are_one_line(self):
    c = _config()
    c.rl.group_size = 1
    self._refused('rl.group_size must be >= 2', c)
    c = _config()
    c.rl.num_minibatches = 3
    self._refused(r'rl.num_minibatches \(3\) must divide', c)
    c = _config()
    c.rl.prompts = 65
    self._refused('rl.prompts must be <= data.num_train', c)
    self._refused("must include 'z'", _config(), baseline='z')
    self._refused('policy.max_len must be >= 19', _config(), extra_len=8)
    self._refused('not in config.arms', _config(run_arms=('a', 'x')))

  def test_arm_rl_section_names_the_arm(self):
    rl = ml_collections.ConfigDict(dict(_config().rl.to_dict(), iterations=0))
    with self.assertRaisesRegex(runs.ConfigError, '^arms.a: rl.iterations'):
      arms.check_sections(_config(), rl, 'arms.a: ')

  def test_check_choice_and_wall_budget_order(self):
    c = _config()
    c.arms.a.mc = 'bad'
    with self.assertRaisesRegex(runs.ConfigError, r"arms.a.mc must be one of \(None, 'x'\)"):
      arms.check_choice(c, 'mc', (None, 'x'))
    c = _config(run_arms=('c', 'a'))
    with self.assertRaisesRegex(runs.ConfigError, 'arms.c.wall_budget must be None or an arm'):
      arms.check_wall_budgets(c)


class WallBudgetTest(absltest.TestCase):
  def test_caps_at_the_named_arms_wall_of_the_same_seed(self):
    c = _config()
    walls = {('a', 0): 50.0, ('a', 1): 2000.0}
    self.assertEqual(arms.wall_budget(c, 'a', walls, 0), 100.0)  # no wall_budget: rl.max_wall_s
    self.assertEqual(arms.wall_budget(c, 'c', walls, 0), 50.0)
    self.assertEqual(arms.wall_budget(c, 'c', walls, 1), 100.0)

  def test_capped_runs_stopped_before_the_iterations(self):
    c = _config()
    recs = [dict(arm=a, seed=s, iteration=i) for a in 'ac' for s in (0, 1) for i in range(4)]
    recs = [r for r in recs if not (r['arm'] == 'c' and r['seed'] == 0 and r['iteration'] > 1)]
    walls = {(a, s): 1.0 for a in 'ac' for s in (0, 1)}
    self.assertEqual(arms.capped(c, recs, walls), {('c', 0)})


if __name__ == '__main__':
  absltest.main()
