"""MLP actor-critic for flat observations (classic control, bsuite, MinAtar flattened).

Separate actor and critic towers, orthogonal initialisation with gain sqrt(2)
on hidden layers, 0.01 on the policy head and 1.0 on the value head (the
usual PPO initialisation, Andrychowicz et al. 2021, https://arxiv.org/abs/2006.05990).
Parameters are float32. Only this module knows about Flax; the rest of jaxca
sees `init(key, obs) -> params` and `apply(params, obs) -> (logits, values)`.
"""

from typing import Callable
from typing import Dict
from typing import Sequence
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {
  'tanh': jnp.tanh,
  'relu': jax.nn.relu,
  'gelu': jax.nn.gelu,
  'silu': jax.nn.silu,
}


def orthogonal(scale: float = 1.0) -> Callable:
  """Flax's orthogonal initializer (Saxe et al. 2013, arXiv 1312.6120), vmap-safe on CPU.

  Same values as `flax.linen.initializers.orthogonal(scale)`, but when vmapped (e.g. over
  seeds) the QR runs as a loop over the batch (`jax.custom_batching.sequential_vmap`)
  instead of one batched LAPACK call: jaxlib 0.10.2 splits batched LAPACK calls over the
  CPU worker pool and blocks on them, which deadlocks when as many run at once as the pool
  has threads (a vmapped actor-critic init on 2 cores hangs; see BUILD_NOTES, issue 17).
  Initialisation runs once per run, so the loop costs nothing that matters.
  """
  base = nn.initializers.orthogonal(scale)

  def init(key, shape, dtype=jnp.float32):
    return jax.custom_batching.sequential_vmap(lambda k: base(k, shape, dtype))(key)

  return init


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Activation by name; unknown names fail with the list of choices."""
  if name not in ACTIVATIONS:
    raise ValueError(f'Unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}.')
  return ACTIVATIONS[name]


class ActorCritic(nn.Module):
  """Two MLP towers on a flat observation: policy logits and a scalar value.

  Attributes:
    num_actions: number of discrete actions A.
    hidden_sizes: widths of the hidden layers of each tower.
    activation: a key of `ACTIVATIONS`.
  """

  num_actions: int
  hidden_sizes: Sequence[int] = (64, 64)
  activation: str = 'tanh'

  @nn.compact
  def __call__(self, obs: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Forward pass.

    Args:
      obs: [..., D] float; flat observations (any leading batch axes).

    Returns:
      (logits [..., A] float32, values [...] float32).
    """
    act = get_activation(self.activation)
    obs = obs.astype(jnp.float32)
    hidden_init = orthogonal(np.sqrt(2.0))
    zeros = nn.initializers.zeros_init()

    def tower(x, out_dim, out_gain, name):
      for i, width in enumerate(self.hidden_sizes):
        x = act(nn.Dense(width, kernel_init=hidden_init, bias_init=zeros, name=f'{name}_{i}')(x))
      return nn.Dense(
        out_dim,
        kernel_init=orthogonal(out_gain),
        bias_init=zeros,
        name=f'{name}_out',
      )(x)

    logits = tower(obs, self.num_actions, 0.01, 'actor')
    values = tower(obs, 1, 1.0, 'critic')[..., 0]
    return logits, values


def make_actor_critic(cfg, *, num_actions: int) -> ActorCritic:
  """Builds an `ActorCritic` from a config with `hidden_sizes` and `activation`."""
  get_activation(cfg.activation)  # fail at build time on a bad name
  return ActorCritic(
    num_actions=int(num_actions),
    hidden_sizes=tuple(int(w) for w in cfg.hidden_sizes),
    activation=cfg.activation,
  )
