"""Policy networks. `from jaxca import networks` ... `networks.make_policy(cfg, vocab_size=V)`."""

from jaxca.networks import transformer
from jaxca.networks.transformer import KVCache
from jaxca.networks.transformer import Policy
from jaxca.networks.transformer import PolicyOutput
from jaxca.networks.transformer import Transformer
from jaxca.networks.transformer import init_cache
from jaxca.networks.transformer import make_policy
from jaxca.networks.transformer import response_log_probs
from jaxca.networks.transformer import response_values

__all__ = [
  'KVCache',
  'Policy',
  'PolicyOutput',
  'Transformer',
  'init_cache',
  'make_policy',
  'response_log_probs',
  'response_values',
  'transformer',
]
