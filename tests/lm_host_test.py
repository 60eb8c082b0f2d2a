"""Host providers (jaxca.lm.host) and the shared loop (jaxca.loop).

The issue's test: a new estimator stage whose field is filled on the host trains through the
learner and the loop with no edit to jaxca/lm/ or any experiment.
"""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca.lm import host as host_lib
from tests import lm_fixtures as fx
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401


@estimators.stage()
def length_bonus(scale=1.0):
  """A toy source stage: advantage = scale * bonus, a field only the host can fill."""

  def apply(traj, prev, hp):
    del prev
    adv = hp['scale'] * jnp.asarray(traj.get('bonus'), jnp.float32)
    return estimators.Targets(adv, adv)

  return estimators.Stage('length_bonus', ('bonus',), dict(scale=scale), apply)


def bonus_provider(calls):
  """Host side, in NumPy: each valid token gets 1 / (its response length)."""

  def fill(params, data, key):
    del params, key
    mask = np.asarray(jax.device_get(data.mask))
    lengths = np.maximum(mask.sum(-1, keepdims=True), 1)
    calls.append(mask.shape)
    return {'bonus': jnp.asarray(np.where(mask, 1.0 / lengths, 0.0), jnp.float32)}, {
      'bonus_rows': float(mask.shape[0])
    }

  return host_lib.HostProvider(('bonus',), fill, needs_key=False)


class HostProviderTest(absltest.TestCase):
  def test_toy_host_stage_trains_through_learner_and_loop(self):
    policy = fx.tiny_policy()
    params = policy.init(jax.random.key(0))
    tx = optax.adam(1e-2)
    est = estimators.make('length_bonus', stages={'length_bonus': length_bonus}, scale=2.0)
    calls = []
    hosts = (bonus_provider(calls),)
    with self.assertRaisesRegex(ValueError, 'bonus'):  # no in-jit provider for it
      lm.make_rl_phases(policy, fx.TASK, est, tx, group_size=fx.G)
    phases = lm.make_rl_phases(
      policy, fx.TASK, est, tx, group_size=fx.G, host_fields=host_lib.host_fields(hosts)
    )
    step = host_lib.make_iteration(phases, hosts, hparams=est.hparams)
    arm = loop.ArmSteps('toy', lambda p, s: lm.init_from_params(p, tx), step, phased=True)
    train = {k: np.asarray(v) for k, v in fx.TASK.generate(1, 16).items()}
    test = fx.batch(4, seed=2)

    def evaluate(p, batch):
      del batch
      return {'exact_match': float(jnp.sum(jax.tree.leaves(p)[0]))}

    records, state, _ = loop.run_arm(
      arm, params, 0, train, test, evaluate, iterations=2, prompts=4, eval_every=1,
      counters=('policy_tokens',),
    )  # fmt: skip
    self.assertLen(calls, 2)
    self.assertEqual([r['iteration'] for r in records], [0, 1, 2])
    for r in records[1:]:
      self.assertEqual(r['bonus_rows'], 4 * fx.G)
      self.assertGreater(r['policy_tokens'], 0)
      self.assertTrue(np.isfinite(r['loss']))
      self.assertIn('eval_exact_match', r)
      # Every valid token's advantage is 2 / length; its mean |A| over valid tokens is in (0, 2].
      self.assertGreater(r['adv_abs_mean'], 0.0)
      self.assertLessEqual(r['adv_abs_mean'], 2.0 + 1e-6)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state['params'], params)
    self.assertGreater(max(jax.tree.leaves(moved)), 0.0)

  def test_non_finite_loss_is_one_line(self):
    policy = fx.tiny_policy()
    params = jax.tree.map(lambda x: x * np.nan, policy.init(jax.random.key(0)))
    tx = optax.adam(1e-2)
    est = estimators.make('grpo')
    update = lm.make_rl_update(policy, fx.TASK, est, tx, group_size=fx.G)
    arm = loop.ArmSteps(
      'nan', lambda p, s: lm.init_from_params(p, tx), loop.single_step(update), hparams=None
    )
    train = {k: np.asarray(v) for k, v in fx.TASK.generate(1, 8).items()}
    with self.assertRaisesRegex(FloatingPointError, 'nan seed 0: non-finite .* iteration 1'):
      loop.run_arm(
        arm, params, 0, train, None, lambda p, b: {'exact_match': 0.0}, iterations=1,
        prompts=4, eval_every=1,
      )  # fmt: skip

  def test_host_fields_refuses_two_providers_of_one_field(self):
    h = host_lib.HostProvider(('x',), lambda p, d, k: ({}, {}))
    with self.assertRaisesRegex(ValueError, "'x'"):
      host_lib.host_fields((h, h))
    with self.assertRaisesRegex(ValueError, 'kind'):
      host_lib.mc_values(fx.tiny_policy(), fx.TASK, num_samples=2, kind='cuts')


if __name__ == '__main__':
  absltest.main()
