"""networks.critic: separate critic from the policy trunk, shared value head; shapes, grads."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxca import networks

VOCAB, B, L = 9, 3, 7


def _cfg(value_head):
  return ml_collections.ConfigDict(
    dict(width=32, depth=2, num_heads=4, max_len=16, dtype='float32', value_head=value_head)
  )


@functools.cache
def _setup(value_head=False):
  policy = networks.make_policy(_cfg(value_head), vocab_size=VOCAB)
  critic = networks.make_critic(_cfg(value_head), vocab_size=VOCAB)
  policy_params = jax.jit(policy.init)(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (B, L), 1, VOCAB)
  valid = jnp.arange(L)[None, :] >= jnp.array([0, 2, 5])[:, None]
  return policy, critic, policy_params, tokens, valid


def _trunk(params):
  return {k: v for k, v in params.items() if k not in ('logits', 'value')}


@pytest.mark.parametrize('policy_value_head', [False, True])
def test_critic_starts_from_the_policy_trunk_with_a_fresh_head(policy_value_head):
  policy, critic, pp, tokens, valid = _setup(policy_value_head)
  cp = networks.critic_params_from_policy(critic, pp, jax.random.key(2))
  assert 'logits' not in cp and 'value' in cp
  assert set(cp) - {'value'} == set(_trunk(pp))
  jax.tree.map(np.testing.assert_array_equal, _trunk(cp), _trunk(pp))
  fresh = critic.init(jax.random.key(2))['value']
  jax.tree.map(np.testing.assert_array_equal, cp['value'], fresh)
  if policy_value_head:  # not the policy's own head
    assert not np.allclose(cp['value']['kernel'], pp['value']['kernel'])
  values = jax.jit(critic.apply)(cp, tokens, valid)
  assert values.shape == (B, L) and values.dtype == jnp.float32
  assert np.isfinite(np.asarray(values)).all()
  # Same trunk: the critic's values equal a value-head policy carrying the same parameters.
  vpolicy = networks.make_policy(_cfg(True), vocab_size=VOCAB)
  vparams = {**pp, 'value': cp['value']}
  if 'logits' not in vparams:
    vparams['logits'] = pp['logits']
  want = vpolicy.apply(vparams, tokens, valid).values
  np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)


def test_critic_gradients_stay_in_the_critic():
  policy, critic, pp, tokens, valid = _setup(False)
  cp = networks.critic_params_from_policy(critic, pp, jax.random.key(3))
  targets = jnp.ones((B, L))

  def value_loss(cp):
    v = critic.apply(cp, tokens, valid)
    return jnp.sum(jnp.where(valid, (v - targets) ** 2, 0.0))

  grads = jax.jit(jax.grad(value_loss))(cp)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert np.abs(grads['value']['kernel']).sum() > 0
  assert np.abs(grads['attn_0']['query']['kernel']).sum() > 0  # the critic's own trunk learns
  logits_before = policy.apply(pp, tokens, valid).logits
  pp_before = jax.tree.map(np.array, pp)
  cp2 = jax.tree.map(lambda p, g: p - 1e-3 * g, cp, grads)
  assert value_loss(cp2) < value_loss(cp)
  # The policy's parameters and outputs are untouched by the critic's update.
  jax.tree.map(np.testing.assert_array_equal, pp, pp_before)
  np.testing.assert_array_equal(policy.apply(pp, tokens, valid).logits, logits_before)


def test_shared_value_head_gradients_reach_the_policy_trunk():
  policy, _, pp, tokens, valid = _setup(True)
  values = networks.shared_values(policy, pp, tokens, valid)
  assert values.shape == (B, L) and values.dtype == jnp.float32

  def value_loss(pp):
    v = networks.shared_values(policy, pp, tokens, valid)
    return jnp.sum(jnp.where(valid, v**2, 0.0))

  grads = jax.grad(value_loss)(pp)
  assert np.abs(grads['attn_0']['query']['kernel']).sum() > 0
  np.testing.assert_array_equal(grads['logits']['kernel'], 0.0)
  with pytest.raises(ValueError, match='no value head'):
    networks.shared_values(_setup(False)[0], _setup(False)[2], tokens, valid)


def test_mismatched_configs_are_rejected():
  _, critic, _, _, _ = _setup(False)
  other = networks.make_policy(_cfg(False).copy_and_resolve_references(), vocab_size=VOCAB + 2)
  with pytest.raises(ValueError, match='shapes differ'):
    networks.critic_params_from_policy(critic, other.init(jax.random.key(0)), jax.random.key(1))
  with pytest.raises(ValueError, match='lack the trunk'):
    networks.critic_params_from_policy(critic, {'embed': None}, jax.random.key(1))
