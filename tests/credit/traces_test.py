"""jaxca.traces: online per-start recursions vs closed-form O(T^2) NumPy definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxca import credit
from jaxca.credit import traces
from tests.reference import traces as ref

METHODS = traces.TRACE_METHODS


def _random_log_rhos(rng, t_len, zero_prob=0.0, scale=1.0):
  x = rng.normal(0.0, scale, t_len).astype(np.float32)
  if zero_prob:
    x[rng.random(t_len) < zero_prob] = -np.inf
  return x


def _online_betas(log_rhos, lambda_, method, window, jit):
  """beta[k, t] from the online rules on a window of `window` slots (no circular reuse)."""
  t_len = len(log_rhos)

  def run(log_rhos):
    def body(state, inputs):
      t, x = inputs
      state = traces.start(traces.advance(state, x, lambda_, method), t)
      return state, state.beta

    _, betas = jax.lax.scan(body, traces.empty(window), (jnp.arange(t_len), log_rhos))
    return betas  # [t, k]

  fn = jax.jit(run) if jit else run
  return np.asarray(fn(jnp.asarray(log_rhos))).T


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize(
  'lambda_,jit', [(0.0, True), (0.4, True), (0.9, True), (1.0, True), (0.9, False)]
)  # eager mode at one lambda only (eager scans are slow on CPU)
def test_online_rule_matches_closed_form(method, lambda_, jit):
  rng = np.random.default_rng(hash((method, lambda_)) % 2**32)
  x = _random_log_rhos(rng, 24, zero_prob=0.1)
  got = _online_betas(x, lambda_, method, 24, jit)
  want = ref.trace_matrix(x, lambda_, method)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('method', METHODS)
def test_large_ratios_over_long_window_stay_finite(method):
  rng = np.random.default_rng(1)
  x = np.abs(_random_log_rhos(rng, 70, scale=30.0))  # products up to e^(thousands)
  x[::17] = -60.0  # and tiny ones
  x[40] = 400.0  # beyond the rho clip
  got = _online_betas(x, 0.95, method, 70, jit=True)
  assert np.all(np.isfinite(got))
  assert np.all((got >= 0) & (got <= 1))
  want = ref.trace_matrix(x, 0.95, method)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_rbis_properties():
  rng = np.random.default_rng(2)
  x = _random_log_rhos(rng, 40, zero_prob=0.05)
  for lam in (0.3, 0.8):
    rbis = _online_betas(x, lam, 'rbis', 40, True)
    retrace = _online_betas(x, lam, 'retrace', 40, True)
    n = np.arange(40)[None, :] - np.arange(40)[:, None]
    upper = np.where(n >= 0, lam ** np.maximum(n, 0), 0.0)
    assert np.all(rbis >= retrace - 1e-7)  # never below Retrace
    assert np.all(rbis <= upper + 1e-7)  # recency bound
  np.testing.assert_allclose(
    _online_betas(x, 1.0, 'rbis', 40, True),
    _online_betas(x, 1.0, 'recursive_retrace', 40, True),
  )


def test_on_policy_gives_lambda_powers():
  for method in METHODS:
    got = _online_betas(np.zeros(10, np.float32), 0.7, method, 10, True)
    n = np.arange(10)[None, :] - np.arange(10)[:, None]
    np.testing.assert_allclose(got, np.where(n >= 0, 0.7 ** np.maximum(n, 0), 0.0), rtol=1e-6)


def _episode_increment(log_rhos, deltas, sa, num_sa, gamma, lambda_, method, window):
  """Sum over one episode of the online updates sum_t sum_k w_{k,t} delta_t at sa_k, fixed Q."""

  def body(carry, inputs):
    state, sa_buf, dq = carry
    t, x, d, sa_t = inputs
    slot = t % window
    state, w = traces.step(state, slot, x, lambda_, gamma, method)
    sa_buf = jax.lax.dynamic_update_index_in_dim(sa_buf, sa_t, slot, 0)
    return (state, sa_buf, dq.at[sa_buf].add(w * d)), None

  init = (traces.empty(window), jnp.zeros(window, jnp.int32), jnp.zeros(num_sa))
  t_len = len(deltas)
  (_, _, dq), _ = jax.jit(lambda *a: jax.lax.scan(body, init, a))(
    jnp.arange(t_len), jnp.asarray(log_rhos), jnp.asarray(deltas), jnp.asarray(sa)
  )
  return np.asarray(dq)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('window', [8, 64])
def test_online_episode_sum_equals_forward_view(method, window):
  """Backward view (circular window, scatter into Q) == sum_t gamma^(t-k) beta_{k,t} delta_t."""
  rng = np.random.default_rng(3)
  t_len, num_sa, gamma, lam = 40, 6, 0.9, 0.8
  x = _random_log_rhos(rng, t_len, zero_prob=0.05)
  deltas = rng.normal(size=t_len).astype(np.float32)
  sa = rng.integers(0, num_sa, t_len).astype(np.int32)
  got = _episode_increment(x, deltas, sa, num_sa, gamma, lam, method, window)
  u = ref.forward_view_updates(deltas, x, gamma, lam, method, window=window)
  want = np.zeros(num_sa)
  np.add.at(want, sa, u)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_online_episode_sum_equals_offline_kernel():
  """The online sum per start equals `credit.off_policy_returns(...) - q_taken` (one episode).

  RBIS only (each method costs a kernel compile; the others are pinned to the reference).
  """
  method = 'rbis'
  rng = np.random.default_rng(4)
  t_len, gamma, lam = 30, 0.9, 0.9
  x = _random_log_rhos(rng, t_len)
  q_taken = rng.normal(size=t_len).astype(np.float32)
  next_q = rng.normal(size=t_len).astype(np.float32)
  rewards = rng.normal(size=t_len).astype(np.float32)
  discounts = np.full(t_len, gamma, np.float32)
  discounts[-1] = 0.0  # the episode terminates
  deltas = rewards + discounts * next_q - q_taken
  sa = np.arange(t_len, dtype=np.int32)  # one slot per start: the per-start sums themselves
  online = _episode_increment(x, deltas, sa, t_len, gamma, lam, method, 32)
  kernel = jax.jit(lambda *a: credit.off_policy_returns(*a, lam, method))
  offline = kernel(*map(jnp.asarray, (q_taken, next_q, rewards, discounts, x))) - q_taken
  np.testing.assert_allclose(online, np.asarray(offline), rtol=1e-4, atol=1e-5)


def test_clear_empties_and_start_restarts():
  state = traces.start(traces.advance(traces.empty(4, (2,)), jnp.zeros(2), 0.5, 'rbis'), 1)
  state = traces.advance(state, jnp.zeros(2), 0.5, 'truncated_is')
  cleared = traces.clear(state, jnp.array([True, False]))
  np.testing.assert_array_equal(cleared.beta[0], 0.0)
  np.testing.assert_array_equal(cleared.beta[1], state.beta[1])
  for method in METHODS:  # empty slots stay empty under every rule
    adv = traces.advance(cleared, jnp.array([5.0, 5.0]), 1.0, method)
    np.testing.assert_array_equal(adv.beta[0], 0.0)


def test_bad_arguments_fail_clearly():
  with pytest.raises(ValueError, match='choices'):
    traces.advance(traces.empty(3), 0.0, 0.5, 'tree')
  with pytest.raises(ValueError, match='window'):
    traces.empty(0)
