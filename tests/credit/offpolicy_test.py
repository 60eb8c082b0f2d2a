"""credit.off_policy_returns vs the O(T^2) NumPy definition, and the trace family's properties."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from jaxca import testing
from jaxca.credit import _sorted_levels
from tests.reference import offpolicy as ref

METHODS = credit.OFF_POLICY_METHODS
BOUNDED = tuple(m for m in METHODS if m != 'is')  # every method whose traces are <= 1
TRAJECTORY_AWARE = ('truncated_is', 'recursive_retrace', 'rbis')
KEYS = ('q_taken', 'expected_next_q', 'rewards', 'discounts', 'log_rhos')
# One jitted entry point and one canonical shape, so that most tests reuse a compiled program
# (lambda_ is traced): compiling the trajectory-aware kernels is the expensive part here.
JIT = jax.jit(credit.off_policy_returns, static_argnames=('method', 'differentiable'))
SHAPE = (4, 50)


def _paths(method):
  """`differentiable` values that select different algorithms for `method`."""
  return (False, True) if method in TRAJECTORY_AWARE else (False,)


def _inputs(seed, shape, *, ratio_scale=1.0, p_zero_rho=0.1, p_terminal=0.1, mask_kind='mixed'):
  """Random keyword arguments (without lambda_/method) of `shape`, float32."""
  rng = np.random.default_rng(seed)
  f32 = np.float32
  log_rhos = (ratio_scale * rng.uniform(-1.0, 1.0, shape)).astype(f32)
  log_rhos[rng.random(shape) < p_zero_rho] = -np.inf
  return dict(
    q_taken=rng.normal(size=shape).astype(f32),
    expected_next_q=rng.normal(size=shape).astype(f32),
    rewards=rng.normal(size=shape).astype(f32),
    discounts=(0.95 * (rng.random(shape) > p_terminal)).astype(f32),
    log_rhos=log_rhos,
    target_probs=rng.random(shape).astype(f32),
    mask=testing.random_mask(rng, shape, mask_kind),
  )


def _ref(args, lam, method):
  return ref.off_policy_returns(**args, lambda_=lam, method=method)


def _close(got, want, tol=2e-5):
  """Relative to the size of the terms, which is what float32 can promise."""
  got = np.asarray(got, np.float64)
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol * (1.0 + np.max(np.abs(want))))


class OffPolicyReturnsTest(parameterized.TestCase):
  @parameterized.parameters(*METHODS)
  def test_matches_reference(self, method):
    # Masks (incl. a fully masked row), terminations, rho = 0, T = 50 and three layouts.
    for i, shape in enumerate([SHAPE, (50,), (2, 3, 17)]):
      args = _inputs(i, shape, ratio_scale=2.0)
      for diff in _paths(method):
        got = JIT(**args, lambda_=np.float32(0.9), method=method, differentiable=diff)
        self.assertEqual(got.dtype, jnp.float32)
        self.assertEqual(got.shape, shape)
        _close(got, _ref(args, 0.9, method), tol=1e-4 if method == 'is' else 2e-5)

  @parameterized.parameters(*METHODS)
  def test_matches_reference_without_jit(self, method):
    args = _inputs(20, (2, 9), ratio_scale=2.0)
    for diff in _paths(method):
      got = credit.off_policy_returns(**args, lambda_=0.7, method=method, differentiable=diff)
      _close(got, _ref(args, 0.7, method), tol=1e-4 if method == 'is' else 2e-5)

  @parameterized.parameters(*BOUNDED)
  def test_large_ratios_finite_and_match_float64(self, method):
    # log-ratios up to +-30 (rho up to 1e13) over 50 steps: the bounded methods never overflow.
    # A tiny lambda puts the recursive_retrace anchor keys far above the start keys.
    args = _inputs(3, SHAPE, ratio_scale=30.0, p_zero_rho=0.05)
    for lam in (0.0, 1e-30, 1e-4, 0.5, 0.95, 1.0):
      for diff in _paths(method):
        got = JIT(**args, lambda_=np.float32(lam), method=method, differentiable=diff)
        self.assertTrue(np.all(np.isfinite(got)))
        _close(got, _ref(args, lam, method), tol=1e-4)

  @parameterized.parameters(*METHODS)
  def test_trace_coefficients_and_jacobian_match_reference(self, method):
    # With d = 1, q = 0, expected_next_q = 0 the target at k is sum_t beta_{k,t} r_t, so the
    # kernel's response to a one-hot reward at t is column t of beta, and so is d G / d r.
    t_len, lam = 13, np.float32(0.8)
    rng = np.random.default_rng(7)
    x = rng.uniform(-2.0, 2.0, t_len).astype(np.float32)
    x[[4, 9]] = -np.inf
    pi = rng.random(t_len).astype(np.float32)
    zeros, ones = np.zeros(t_len, np.float32), np.ones(t_len, np.float32)

    def g(r):
      return credit.off_policy_returns(
        zeros, zeros, r, ones, x, lam, method, target_probs=pi, differentiable=True
      )

    want = ref._trace_coefficients(x, lam, method, pi)
    tile = lambda a: np.tile(a, (t_len, 1))  # noqa: E731
    forward = JIT(
      tile(zeros), tile(zeros), np.eye(t_len, dtype=np.float32), tile(ones), tile(x), lam,
      method, target_probs=tile(pi), mask=tile(ones > 0),
    ).T  # fmt: skip
    np.testing.assert_allclose(forward, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jacrev(g)(zeros), want, rtol=1e-5, atol=1e-6)

  def test_rbis_traces_bounded_and_never_below_retrace(self):
    # Reference-level statement of SPECS §1.2: beta^retrace <= beta^rbis <= lambda^(t-k), and
    # Condition 5.1 beta_{k,t} <= rho_t beta_{k,t-1}.
    rng = np.random.default_rng(0)
    for trial in range(30):
      t_len = 15
      x = rng.normal(scale=2.0, size=t_len)
      x[rng.random(t_len) < 0.1] = -np.inf
      lam = rng.random() if trial else 1.0
      rbis = ref._trace_coefficients(x, lam, 'rbis')
      retrace = ref._trace_coefficients(x, lam, 'retrace')
      n = np.subtract.outer(np.arange(t_len), np.arange(t_len)).T  # n[k, t] = t - k
      upper = n >= 0
      self.assertTrue(np.all(rbis[upper] >= retrace[upper] * (1 - 1e-12)))
      self.assertTrue(np.all(rbis[upper] <= lam ** np.maximum(n, 0)[upper] * (1 + 1e-12)))
      rho = np.exp(x)
      later = n[:, 1:] >= 1  # t > k
      grow = rbis[:, 1:] - rho[1:] * rbis[:, :-1] * (1 + 1e-12)
      self.assertTrue(np.all(grow[later] <= 1e-300))
    # And the kernel's targets inherit the ordering when every TD error is positive.
    args = _inputs(1, SHAPE, ratio_scale=3.0)
    args['q_taken'] = args['q_taken'] - 10.0
    tgt = {m: JIT(**args, lambda_=np.float32(0.7), method=m) for m in ('rbis', 'retrace')}
    self.assertTrue(np.all(np.asarray(tgt['rbis']) >= np.asarray(tgt['retrace']) - 1e-4))

  @parameterized.parameters(*[m for m in METHODS if m != 'tree_backup'])
  def test_on_policy_equals_q_lambda(self, method):
    args = _inputs(2, SHAPE)
    args['log_rhos'] = np.zeros_like(args['log_rhos'])
    for lam in (0.0, 0.6, 1.0):
      got = JIT(**args, lambda_=np.float32(lam), method=method)
      want = JIT(**args, lambda_=np.float32(lam), method='q_lambda')
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  def test_lambda_one_rbis_equals_recursive_retrace(self):
    args = _inputs(4, SHAPE, ratio_scale=4.0)
    got = JIT(**args, lambda_=np.float32(1.0), method='rbis')
    want = JIT(**args, lambda_=np.float32(1.0), method='recursive_retrace')
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  @parameterized.parameters(*METHODS)
  def test_lambda_zero_gives_one_step_expected_sarsa(self, method):
    args = _inputs(5, SHAPE, ratio_scale=5.0)
    got = JIT(**args, lambda_=np.float32(0.0), method=method)
    one_step = args['rewards'] + args['discounts'] * args['expected_next_q']
    np.testing.assert_allclose(got, np.where(args['mask'], one_step, 0.0), rtol=1e-6, atol=1e-6)

  @parameterized.parameters(*METHODS)
  def test_splitting_at_a_termination_changes_nothing(self, method):
    # Row 0: a whole trajectory with a termination after step 17. Rows 1 and 2: its two
    # pieces, the rest of each row masked out (masks are transparent, tested below).
    args = _inputs(6, SHAPE, ratio_scale=3.0, mask_kind='none')
    for k in KEYS + ('target_probs',):
      args[k][1:3] = args[k][0]
    args['discounts'][0:3, 17] = 0.0
    args['mask'][1, 18:] = False
    args['mask'][2, :18] = False
    for diff in _paths(method):
      got = np.asarray(JIT(**args, lambda_=np.float32(0.9), method=method, differentiable=diff))
      np.testing.assert_allclose(got[0, :18], got[1, :18], rtol=1e-6, atol=1e-6)
      np.testing.assert_allclose(got[0, 18:], got[2, 18:], rtol=1e-6, atol=1e-6)

  @parameterized.parameters(*METHODS)
  def test_masked_steps_are_transparent(self, method):
    # Row 0: 40 steps then 10 masked ones; row 1: the same 40 steps with 10 masked junk
    # steps (huge values, zero ratios) inserted in between and at both ends.
    args = _inputs(8, SHAPE, ratio_scale=3.0, mask_kind='none')
    rng = np.random.default_rng(9)
    positions = [0, 3, 3, 4, 10, 22, 22, 39, 40, 40]
    for k in KEYS + ('target_probs',):
      fill = rng.normal(scale=1e3, size=len(positions)).astype(np.float32)
      if k == 'log_rhos':
        fill[::2] = -np.inf  # junk zero ratios must not cut anything
      args[k][1] = np.insert(args[k][0, :40], positions, fill)
    args['mask'][0, 40:] = False
    args['mask'][1] = np.insert(np.ones(40, bool), positions, False)
    for diff in _paths(method):
      got = np.asarray(JIT(**args, lambda_=np.float32(0.9), method=method, differentiable=diff))
      np.testing.assert_array_equal(got[0, 40:], 0.0)
      np.testing.assert_array_equal(got[1, ~args['mask'][1]], 0.0)
      np.testing.assert_allclose(got[1, args['mask'][1]], got[0, :40], rtol=1e-5, atol=1e-5)

  @parameterized.parameters(*BOUNDED)
  def test_gradients_finite_with_large_and_zero_ratios(self, method):
    args = _inputs(10, SHAPE, ratio_scale=30.0, p_zero_rho=0.1)
    args['log_rhos'][0, :5] = 80.0  # exp would overflow float32

    def loss(q, nu, r, x):
      out = credit.off_policy_returns(
        q, nu, r, args['discounts'], x, np.float32(0.9), method,
        target_probs=args['target_probs'], mask=args['mask'], differentiable=True,
      )  # fmt: skip
      return jnp.sum(out**2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
      args['q_taken'], args['expected_next_q'], args['rewards'], args['log_rhos']
    )
    for name, g in zip(('q_taken', 'expected_next_q', 'rewards'), grads[:3]):
      self.assertTrue(np.all(np.isfinite(g)), name)
    finite_x = np.isfinite(args['log_rhos'])
    self.assertFalse(np.any(np.isnan(np.asarray(grads[3])[finite_x])), 'log_rhos')

  @parameterized.parameters('retrace', 'rbis')
  def test_vmap_over_lambda(self, method):
    args = _inputs(11, (2, 30), ratio_scale=2.0)
    lams = jnp.asarray([0.0, 0.3, 0.9, 1.0], jnp.float32)
    sweep = jax.vmap(lambda lam: credit.off_policy_returns(**args, lambda_=lam, method=method))
    got = jax.jit(sweep)(lams)
    for i, lam in enumerate(np.asarray(lams)):
      _close(got[i], _ref(args, lam, method))

  @parameterized.parameters(*TRAJECTORY_AWARE)
  def test_forward_only_equals_divide_and_conquer(self, method):
    # The two exact algorithms (monotonic stack or sorted levels vs divide and conquer) on
    # random inputs: more rows than one sweep group (37 > 32), short and single-step rows,
    # large ratios, terminations, zero ratios and masks.
    cases = [((37, 64), 3.0, 1), ((3, 1), 2.0, 2), ((5, 200), 1.0, 3), ((2, 2, 33), 30.0, 4)]
    for shape, scale, seed in cases:
      args = _inputs(seed, shape, ratio_scale=scale, p_zero_rho=0.05)
      for lam in (0.0, 0.3, 0.9, 1.0):
        fast = JIT(**args, lambda_=np.float32(lam), method=method)
        slow = JIT(**args, lambda_=np.float32(lam), method=method, differentiable=True)
        self.assertTrue(np.all(np.isfinite(fast)))
        _close(fast, np.asarray(slow, np.float64), tol=1e-5)

  @parameterized.parameters(*TRAJECTORY_AWARE)
  def test_default_path_is_a_constant_target(self, method):
    # differentiable=False: the targets are stop-gradient constants (zero gradient, no error).
    args = _inputs(13, (3, 20), ratio_scale=2.0)

    def loss(q, r):
      kw = {k: v for k, v in args.items() if k not in ('q_taken', 'rewards')}
      return jnp.sum(credit.off_policy_returns(q, rewards=r, **kw, lambda_=0.9, method=method))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(args['q_taken'], args['rewards'])
    for g in grads:
      np.testing.assert_array_equal(g, 0.0)

  def test_truncated_is_ties_zero_ratios_and_huge_ratios(self):
    # Integer log-ratios make the cumulative log-ratio C tie exactly and often (the clip
    # min(1, P_t / P_k) is 1 at a tie, whichever side the sorted-levels path puts it), mixed
    # with rho = 0, e^+-30 ratios, terminations and masks; T = 77 (not a power of 2).
    rng = np.random.default_rng(21)
    args = _inputs(21, (3, 77), ratio_scale=1.0, p_zero_rho=0.05)
    x = rng.integers(-1, 2, (3, 77)).astype(np.float32)
    x[1] = 0.0  # on-policy row: every C equal
    x[2, ::7] = rng.choice([-30.0, 30.0], x[2, ::7].shape)
    x[rng.random((3, 77)) < 0.05] = -np.inf
    args['log_rhos'] = x
    for lam in (0.0, 0.5, 1.0):
      want = _ref(args, lam, 'truncated_is')
      for got in (
        JIT(**args, lambda_=np.float32(lam), method='truncated_is'),
        credit.off_policy_returns(**args, lambda_=lam, method='truncated_is'),
      ):
        self.assertTrue(np.all(np.isfinite(got)))
        _close(got, want, tol=2e-5)

  def test_sorted_levels_argsort_is_a_stable_sort(self):
    # The radix argsort behind the truncated_is path, against NumPy's stable sort: ties,
    # signed zeros, huge and tiny magnitudes, and both 2-digit cases (P = 2 and P = 4096).
    rng = np.random.default_rng(22)
    for p_len in (2, 8, 4096):
      keys = rng.normal(size=(4, p_len)).astype(np.float32)
      keys[0] = np.round(keys[0]) + np.float32(0.0)  # ties (and no -0.0: see row 1)
      keys[1, ::2], keys[1, 1::2] = 0.0, -0.0
      keys[2] *= np.float32(1e30) ** rng.integers(-1, 2, p_len)
      keys[3] = 1.0
      got = np.asarray(jax.jit(_sorted_levels.argsort)(jnp.asarray(keys)))
      want = np.argsort(keys, -1, kind='stable')
      np.testing.assert_array_equal(got[[0, 2, 3]], want[[0, 2, 3]])
      # NumPy treats -0.0 == 0.0; the radix order puts every -0.0 first, each group stably.
      np.testing.assert_array_equal(got[1], np.concatenate([want[1][1::2], want[1][::2]]))

  def test_bad_inputs_name_the_argument(self):
    args = _inputs(12, (2, 6))
    pos = [args[k] for k in KEYS]
    with self.assertRaisesRegex(ValueError, r"`method`='nope'.*'rbis'"):
      credit.off_policy_returns(*pos, 0.9, 'nope')
    with self.assertRaisesRegex(ValueError, 'target_probs'):
      credit.off_policy_returns(*pos, 0.9, 'tree_backup')
    with self.assertRaisesRegex(ValueError, '`log_rhos`'):
      credit.off_policy_returns(*pos[:4], args['log_rhos'][:, :5], 0.9, 'rbis')
    with self.assertRaisesRegex(ValueError, '`target_probs`'):
      credit.off_policy_returns(*pos, 0.9, 'tree_backup', target_probs=np.ones(6, np.float32))
    with self.assertRaisesRegex(TypeError, '`mask`'):
      credit.off_policy_returns(*pos, 0.9, 'rbis', mask=args['mask'].astype(np.float32))
    with self.assertRaisesRegex(ValueError, '`mask`'):
      credit.off_policy_returns(*pos, 0.9, 'rbis', mask=args['mask'][:, :3])
    with self.assertRaisesRegex(ValueError, '`lambda_`'):
      credit.off_policy_returns(*pos, np.full(2, 0.9, np.float32), 'retrace')
    with self.assertRaisesRegex(TypeError, '`rewards`'):
      credit.off_policy_returns(pos[0], pos[1], np.ones((2, 6), np.int32), *pos[3:], 0.9, 'is')
    with self.assertRaisesRegex(ValueError, '`q_taken`'):
      credit.off_policy_returns(np.float32(1.0), 1.0, 1.0, 1.0, 0.0, 0.9, 'is')
    with self.assertRaisesRegex(TypeError, '`differentiable`'):
      credit.off_policy_returns(*pos, 0.9, 'rbis', differentiable=np.bool_(True))


if __name__ == '__main__':
  absltest.main()
