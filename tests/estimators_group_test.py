"""jaxca.estimators.group: GDPO, MaxRL and the named GRPO variants against NumPy loops and
transcriptions of verl / TRL / NeMo-RL / SkyRL."""

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
from tests.reference import group_variants as ref

T = 4
# Groups: 0 mixed (row 3 empty), 1 singleton, 2 all-equal, 3 all-zero, 4 no rows.
IDS = np.array([0, 0, 0, 0, 1, 2, 2, 2, 3, 3], np.int32)
BINARY = np.array([1, 0, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)


def _traj(scores, ids=IDS, rng=None, num_groups=5, empty=(3,), **fields):
  b = len(scores)
  rng = rng or np.random.default_rng(0)
  mask = rng.random((b, T)) > 0.3
  mask[:, 0] = True
  mask[list(empty)] = False
  last = T - 1 - np.argmax(mask[:, ::-1], axis=1)
  rewards = np.zeros((b, T), np.float32)
  rewards[np.arange(b), last] = scores
  rewards = np.where(mask, rewards, 0.0).astype(np.float32)
  return types.Trajectory(
    rewards=jnp.asarray(rewards),
    mask=jnp.asarray(mask),
    group_ids=jnp.asarray(ids),
    num_groups=num_groups,
    **fields,
  )


def _rows(t, traj):
  """The row advantage (checks it is broadcast to valid tokens and 0 elsewhere)."""
  adv = np.asarray(t.advantages)
  m = np.asarray(traj.mask)
  row = np.where(m.any(1), adv[np.arange(len(m)), np.argmax(m, 1)], 0.0)
  np.testing.assert_allclose(adv, np.where(m, row[:, None], 0.0), atol=1e-6)
  np.testing.assert_array_equal(t.returns, t.advantages)
  return row


def _valid(traj):
  return list(np.asarray(traj.mask).any(1))


SCORES = np.array([0.3, -1.2, 2.0, 5.0, 0.7, 0.4, 0.4, 0.4, 0.0, 0.0], np.float32)


class GroupStagesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('grpo_verl', 'grpo_trl', 'grpo_nemo')
  def test_variants_match_loops_with_degenerate_groups(self, name):
    loop = dict(grpo_verl=ref.verl, grpo_trl=ref.grpo, grpo_nemo=ref.nemo)[name]
    eps = dict(grpo_verl=1e-6, grpo_trl=1e-4, grpo_nemo=1e-6)[name]
    traj = _traj(SCORES)
    est = estimators.make(name)
    self.assertEqual(est.requires, ('rewards', 'mask', 'group_ids'))
    got = _rows(self.variant(est)(traj), traj)
    scores = [float(x) if v else 0.0 for x, v in zip(SCORES, _valid(traj))]
    np.testing.assert_allclose(got, loop(scores, IDS, _valid(traj), eps), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[5:], 0.0)  # all-equal and all-zero groups
    self.assertEqual(got[3], 0.0)  # the empty row

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('grpo_verl', 'grpo_trl', 'grpo_nemo', 'maxrl')
  def test_random_groups_any_order(self, name):
    rng = np.random.default_rng(3)
    b = 24
    ids = rng.integers(0, 6, b).astype(np.int32)
    scores = rng.integers(0, 2, b).astype(np.float32)
    if name != 'maxrl':
      scores = scores + rng.normal(size=b).astype(np.float32) * rng.integers(0, 2, b)
    traj = _traj(scores, ids=ids, rng=rng, num_groups=6, empty=(0, 5))
    est = estimators.make(name)
    got = _rows(self.variant(est)(traj), traj)
    loop = dict(grpo_verl=ref.verl, grpo_trl=ref.grpo, grpo_nemo=ref.nemo, maxrl=ref.maxrl)[name]
    eps = 1e-4 if name == 'grpo_trl' else 1e-6
    valid = _valid(traj)
    want = loop([float(s) for s in scores], ids, valid, eps)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_maxrl_matches_loop_with_degenerate_groups(self):
    traj = _traj(BINARY)
    got = _rows(self.variant(estimators.make('maxrl'))(traj), traj)
    want = ref.maxrl(list(BINARY), IDS, _valid(traj), 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Group 0 (valid rows 1, 0, 1: pass rate 2/3): A = (r - p) / p.
    np.testing.assert_allclose(got[:3], [0.5, -1.0, 0.5], rtol=1e-5)
    np.testing.assert_array_equal(got[3:], 0.0)  # empty row, singleton, all-one, all-zero
    self.assertTrue(np.all(np.isfinite(got)))

  def test_maxrl_refuses_non_binary_rewards(self):
    with self.assertRaisesRegex(
      ValueError, r'^maxrl: row rewards must be binary \(0 or 1\); got \[0.5\]\.$'
    ):
      estimators.make('maxrl')(_traj(np.where(np.arange(10) == 2, 0.5, BINARY)))

  def test_maxrl_under_jit_marks_a_non_binary_group_nan(self):
    import jax

    got = jax.jit(estimators.make('maxrl'))(_traj(np.where(np.arange(10) == 2, 0.5, BINARY)))
    row = np.asarray(got.advantages)[:, 0]
    self.assertTrue(np.all(np.isnan(row[:3])))
    self.assertTrue(np.all(np.isfinite(row[4:])))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((None,), ((0.5, 2.0, 1.0),))
  def test_gdpo_matches_loop(self, weights):
    rng = np.random.default_rng(5)
    comps = rng.integers(0, 2, (10, 3)).astype(np.float32)
    comps[:, 2] = rng.normal(size=10)
    comps[5:8] = comps[5]  # group 2: every component equal
    comps[8:] = 0.0  # group 3: all zero
    traj = _traj(SCORES, reward_components=jnp.asarray(comps))
    opts = {} if weights is None else dict(component_weights=weights)
    est = estimators.make('gdpo', **opts)
    self.assertEqual(est.requires, ('rewards', 'mask', 'group_ids', 'reward_components'))
    got = _rows(self.variant(est)(traj), traj)
    want = ref.gdpo(comps, IDS, _valid(traj), 1e-6, weights)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[3:], 0.0)

  def test_gdpo_refuses_bad_components(self):
    traj = _traj(SCORES, reward_components=jnp.zeros((10, 2)))
    with self.assertRaisesRegex(ValueError, r'one weight per reward component \(C=2\)'):
      estimators.make('gdpo', component_weights=(1.0, 2.0, 3.0))(traj)
    with self.assertRaisesRegex(ValueError, r'`reward_components` must be \[B, C\]'):
      estimators.make('gdpo')(_traj(SCORES, reward_components=jnp.zeros((9, 2))))
    with self.assertRaisesRegex(
      ValueError, r"requires Trajectory field\(s\) \['reward_components'\]"
    ):
      estimators.make('gdpo')(_traj(SCORES))

  def test_unknown_name_lists_the_choices(self):
    with self.assertRaisesRegex(ValueError, r'grpo_nemo'):
      estimators.make('grpo_nvidia')


class TranscriptionTest(parameterized.TestCase):
  """Hand-made cases, all rows valid and groups contiguous, against the libraries' code."""

  def _run(self, name, scores, ids, num_groups):
    scores, ids = np.asarray(scores, np.float32), np.asarray(ids, np.int32)
    traj = _traj(scores, ids=ids, num_groups=num_groups, empty=())
    return _rows(estimators.make(name)(traj), traj)

  def test_grpo_verl_is_verl_including_singletons(self):
    scores, ids = [1.0, 0.0, 0.0, 1.0, 3.0, 2.5, 2.5, 2.5, 0.7], [0, 0, 0, 1, 1, 2, 2, 2, 3]
    got = self._run('grpo_verl', scores, ids, 4)
    np.testing.assert_allclose(got, ref.verl_compute_grpo_outcome_advantage(scores, ids), rtol=1e-5)

  def test_grpo_trl_is_trl(self):
    scores = [1.0, 0.0, 0.0, 1.0, 3.0, 2.5, 2.5, 2.5, 0.2]
    got = self._run('grpo_trl', scores, np.arange(9) // 3, 3)
    np.testing.assert_allclose(got, ref.trl_group_advantages(scores, 3), rtol=1e-5)

  def test_grpo_nemo_is_nemo(self):
    scores = [1.0, 0.0, 0.0, 1.0, 3.0, 2.0, 2.0, 2.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 5.0]
    ids = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4]
    got = self._run('grpo_nemo', scores, ids, 5)
    np.testing.assert_allclose(got, ref.nemo_grpo_advantage(ids, scores), rtol=1e-5)
    # Group 1 (3, 2, 2, 2): rows whose others are all 2 get no division: 3 - 2 = 1.
    self.assertAlmostEqual(float(got[4]), 1.0, places=6)

  def test_maxrl_is_skyrl_except_singletons(self):
    scores, ids = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0, 1, 1, 2, 2, 3]
    got = self._run('maxrl', scores, ids, 4)
    want = ref.skyrl_compute_maxrl_advantage(scores, ids)
    np.testing.assert_allclose(got[:8], want[:8], rtol=1e-5)
    self.assertEqual(want[8], 1.0)  # SkyRL: a singleton keeps its raw score
    self.assertEqual(got[8], 0.0)  # jaxca: 0

  def test_gdpo_is_verl_before_its_whitening(self):
    comps = np.array([[1, 0.5], [0, 0.5], [1, 0.0], [0, 1.0], [0, 1.0], [1, 0.2]], np.float32)
    ids = [0, 0, 0, 1, 1, 1]
    traj = _traj(
      np.zeros(6, np.float32),
      ids=np.asarray(ids, np.int32),
      num_groups=2,
      empty=(),
      reward_components=jnp.asarray(comps),
    )
    got = _rows(estimators.make('gdpo', component_weights=(1.0, 0.5))(traj), traj)
    want = ref.verl_compute_gdpo_outcome_advantage(comps, ids, (1.0, 0.5))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  absltest.main()


class ShuffledRewardTest(parameterized.TestCase):
  """The noise floor: GRPO on the outcomes of the previous prompt's rows (NumPy loop)."""

  @parameterized.parameters(False, True)
  def test_against_loop(self, jit):
    from tests.reference import credit as credit_ref  # noqa: PLC0415

    rng = np.random.default_rng(3)
    p, g, t = 4, 3, 5
    b = p * g
    rewards = rng.uniform(-1, 1, (b, t)).astype(np.float32)
    mask = rng.random((b, t)) > 0.3
    mask[4] = False  # an empty row: out of its group's statistics, advantage 0
    ids = np.arange(b, dtype=np.int32) // g
    traj = types.Trajectory(
      rewards=jnp.asarray(rewards),
      mask=jnp.asarray(mask),
      group_ids=jnp.asarray(ids),
      num_groups=p,
      groups_contiguous=True,
    )
    est = estimators.make('shuffled_reward')
    fn = jax.jit(est) if jit else est
    got = fn(traj)
    scores = np.where(mask, rewards, 0.0).sum(-1)
    shuffled = np.array([scores[(i - g) % b] for i in range(b)])  # group k <- group k - 1
    a = credit_ref.group_relative(shuffled, ids, 'grpo', valid=mask.any(-1))
    want = np.where(mask, a[:, None], 0.0)
    np.testing.assert_allclose(got.advantages, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.returns, want, rtol=1e-5, atol=1e-6)

  def test_refuses_one_group_and_non_contiguous_groups(self):
    r = jnp.ones((4, 2))
    m = jnp.ones((4, 2), bool)
    one = types.Trajectory(
      rewards=r, mask=m, group_ids=jnp.zeros(4, jnp.int32), num_groups=1, groups_contiguous=True
    )
    with self.assertRaisesRegex(ValueError, 'at least 2 groups'):
      estimators.make('shuffled_reward')(one)
    ids = jnp.asarray([0, 1, 0, 1], jnp.int32)
    loose = types.Trajectory(rewards=r, mask=m, group_ids=ids, num_groups=2)
    with self.assertRaisesRegex(ValueError, 'contiguous'):
      estimators.make('shuffled_reward')(loose)
