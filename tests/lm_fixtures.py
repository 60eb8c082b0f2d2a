"""The tiny LM-learner set-up shared by the lm, lm_objectives and dapo tests.

A 1-step modulo-5 arithmetic task (prompt 5 tokens, response 2 tokens), groups of G = 2
samples, and a one-layer width-16 float32 policy: small enough that compile time, not run
time, dominates the tests (see `tests/fast_compile.py`).
"""

import jax.numpy as jnp
import ml_collections

from jaxca import tasks
from jaxca.networks import transformer

TASK = tasks.make('arith', num_steps=1, modulus=5)  # prompt 5 tokens, response 2 tokens
G = 2


def tiny_policy(value_head=False):
  cfg = ml_collections.ConfigDict(
    dict(width=16, depth=1, num_heads=2, max_len=8, dtype='float32', value_head=value_head)
  )
  return transformer.make_policy(cfg, vocab_size=TASK.vocab.size)


def batch(n=4, seed=0):
  return {k: jnp.asarray(v) for k, v in TASK.generate(seed, n).items()}
