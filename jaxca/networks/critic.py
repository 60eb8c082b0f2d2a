"""Value networks for PPO on a language model: a separate critic, or the policy's value head.

Two options, both giving a float32 value after every token, `[B, L]` (`values[:, t]` is the
value of the state after token t; `networks.response_values` aligns them to the response):

  * **separate critic** (`make_critic`): a copy of the policy's transformer trunk with a
    fresh scalar head and no logits head, trained by its own optimiser. Initialised from
    the policy's (e.g. SFT) trunk parameters by `critic_params_from_policy`, as in the
    PPO baseline of VinePPO (Kazemnejad et al. 2024, arXiv 2410.01679), whose value network
    starts from the SFT model. Its parameters are a separate pytree, so its value loss moves
    nothing in the policy.
  * **shared value head** (`shared_values`): the policy built with `value_head=True`; the
    value loss then also trains the shared trunk.
"""

from typing import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxca.networks import transformer


class Critic(NamedTuple):
  """Functional view of a critic transformer.

  Attributes:
    init: (key) -> params (a fresh critic: trunk and head both random).
    apply: (params, tokens [B, L] int32, valid [B, L] bool) -> [B, L] float32 values.
    module: the `transformer.Transformer` (`value_head=True`, `logits_head=False`).
    max_len: longest supported sequence.
  """

  init: Callable
  apply: Callable
  module: transformer.Transformer
  max_len: int


def make_critic(policy_cfg, *, vocab_size: int) -> Critic:
  """A critic with the policy's trunk architecture, a scalar head and no logits head.

  Args:
    policy_cfg: the policy's config (as for `networks.make_policy`; its `value_head` is
      ignored).
    vocab_size: number of token ids V.

  Returns:
    A `Critic` whose trunk parameter names match the policy's, so
    `critic_params_from_policy` can copy them.
  """
  policy = transformer.make_policy(policy_cfg, vocab_size=vocab_size)
  module = policy.module.clone(value_head=True, logits_head=False)
  max_len = policy.max_len

  def init(key):
    tokens = jnp.zeros((1, 1), jnp.int32)
    return module.init(key, tokens, jnp.ones((1, 1), jnp.bool_))['params']

  def apply(params, tokens, valid):
    if tokens.ndim != 2 or tuple(valid.shape) != tuple(tokens.shape):
      raise ValueError(
        f'`tokens` must be [B, L] and `valid` the same shape; got {tokens.shape} and {valid.shape}.'
      )
    if tokens.shape[1] > max_len:
      raise ValueError(f'`tokens` length {tokens.shape[1]} exceeds critic max_len {max_len}.')
    return module.apply({'params': params}, tokens, valid)[0].values

  return Critic(init=init, apply=apply, module=module, max_len=max_len)


def critic_params_from_policy(critic: Critic, policy_params, key: jax.Array):
  """Critic parameters: a copy of the policy's trunk and a freshly initialised value head.

  Args:
    critic: from `make_critic` with the policy's config.
    policy_params: the policy's parameters (with or without its own value head; its logits
      and value heads are not copied).
    key: PRNG key of the fresh head.

  Returns:
    The critic's parameter pytree (new arrays; nothing is shared with `policy_params`).
  """
  fresh = critic.init(key)
  missing = sorted(set(fresh) - {'value'} - set(policy_params))
  if missing:
    raise ValueError(f'`policy_params` lack the trunk parameters {missing}: a different config?')
  trunk = {name: policy_params[name] for name in fresh if name != 'value'}
  shapes = jax.tree.map(jnp.shape, trunk)
  if shapes != jax.tree.map(jnp.shape, {k: fresh[k] for k in trunk}):
    raise ValueError('policy trunk shapes differ from the critic: build both from one config.')
  return {**jax.tree.map(jnp.array, trunk), 'value': fresh['value']}


def shared_values(policy: transformer.Policy, params, tokens, valid) -> jax.Array:
  """[B, L] float32 values of the policy's own value head (`value_head=True`)."""
  values = policy.apply(params, tokens, valid).values
  if values is None:
    raise ValueError('the policy has no value head: build it with `value_head=True`.')
  return values
