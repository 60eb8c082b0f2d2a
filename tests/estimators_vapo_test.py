"""jaxca.estimators.basic.vapo_gae (VAPO, arXiv 2504.05118) against a NumPy loop."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import estimators
from jaxca import types
from tests.fast_compile import setUpModule  # noqa: F401  (pytest calls it)
from tests.fast_compile import tearDownModule  # noqa: F401
from tests.reference import vapo as ref


def _traj(rng, b=5, t=7):
  mask = rng.random((b, t)) > 0.3
  mask[0] = False  # an empty row
  mask[1] = True
  rewards = np.where(mask, rng.normal(size=(b, t)), 0.0).astype(np.float32)
  values = rng.normal(size=(b, t)).astype(np.float32)
  return types.Trajectory(
    rewards=jnp.asarray(rewards), mask=jnp.asarray(mask), values=jnp.asarray(values)
  )


class VapoGaeTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
    (1.0, 1.0, 0.95, 0.05),  # VAPO's defaults: length-adaptive policy lambda
    (0.99, 0.9, 0.7, 0.0),  # decoupled fixed lambdas
    (0.9, 1.0, 0.95, 0.5),  # alpha * l >= 1 for every row
  )
  def test_matches_loop_with_traced_hparams(self, gamma, lam_v, lam_p, alpha):
    traj = _traj(np.random.default_rng(0))
    est = estimators.make('vapo_gae')
    self.assertEqual(est.requires, ('rewards', 'mask', 'values'))
    hp = jax.tree.map(np.asarray, est.hparams)
    hp['terms'][0].update(
      gamma=np.float32(gamma),
      lambda_value=np.float32(lam_v),
      lambda_policy=np.float32(lam_p),
      alpha=np.float32(alpha),
    )
    got = self.variant(est)(traj, hp)
    want_adv, want_ret = ref.vapo_gae(
      np.asarray(traj.rewards),
      np.asarray(traj.values),
      np.asarray(traj.mask),
      gamma,
      lam_v,
      lam_p,
      alpha,
    )
    np.testing.assert_allclose(got.advantages, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.returns, want_ret, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.advantages[0], 0.0)

  def test_equal_lambdas_without_adaptation_is_gae(self):
    traj = _traj(np.random.default_rng(1))
    got = estimators.make('vapo_gae', lambda_value=0.8, lambda_policy=0.8, alpha=0.0, gamma=0.9)(
      traj
    )
    want = estimators.make('gae', lambda_=0.8, gamma=0.9)(traj)
    np.testing.assert_allclose(got.advantages, want.advantages, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.returns, want.returns, rtol=1e-6, atol=1e-6)

  def test_policy_lambda_of_vapo(self):
    # lambda_policy = 1 - 1 / (alpha l): l = 100, alpha = 0.05 -> 0.8; short rows -> 0.
    lam = ref.nemo_resolve_lambda_policy(np.ones((2, 100)) * [[1], [0]], 0.05, 0.95)
    np.testing.assert_allclose(lam, [0.8, 0.0])


if __name__ == '__main__':
  absltest.main()
