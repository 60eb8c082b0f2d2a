"""Policy networks. `from jaxca import networks` ... `networks.make_policy(cfg, vocab_size=V)`."""

from jaxca.networks import critic
from jaxca.networks import transformer
from jaxca.networks.critic import Critic
from jaxca.networks.critic import critic_params_from_policy
from jaxca.networks.critic import make_critic
from jaxca.networks.critic import shared_values
from jaxca.networks.transformer import KVCache
from jaxca.networks.transformer import Policy
from jaxca.networks.transformer import PolicyOutput
from jaxca.networks.transformer import Transformer
from jaxca.networks.transformer import init_cache
from jaxca.networks.transformer import make_policy
from jaxca.networks.transformer import response_log_probs
from jaxca.networks.transformer import response_values

__all__ = [
  'Critic',
  'KVCache',
  'Policy',
  'PolicyOutput',
  'Transformer',
  'critic',
  'critic_params_from_policy',
  'init_cache',
  'make_critic',
  'make_policy',
  'response_log_probs',
  'response_values',
  'shared_values',
  'transformer',
]
