"""Slow loops for VAPO's decoupled, length-adaptive GAE (jaxca.estimators.basic.vapo_gae).

No jax import. One row at a time, with `tests.reference.credit.gae` (masked tokens skipped).
"""

import numpy as np

from tests.reference import credit as credit_ref


def nemo_resolve_lambda_policy(mask, alpha, lambda_policy):
  """NeMo-RL `GeneralizedAdvantageEstimator._resolve_lambda_policy`, per row."""
  if alpha > 0:
    lengths = np.asarray(mask, np.float64).sum(axis=1)
    lam = 1.0 - 1.0 / np.maximum(alpha * lengths, 1.0)
    return np.clip(lam, 0.0, 1.0)
  return np.full(len(mask), lambda_policy)


def vapo_gae(rewards, values, mask, gamma, lambda_value, lambda_policy, alpha):
  """(advantages with the row's policy lambda, lambda_value returns), [B, T] each."""
  lam_p = nemo_resolve_lambda_policy(mask, alpha, lambda_policy)
  adv, ret = np.zeros(np.shape(rewards)), np.zeros(np.shape(rewards))
  for i in range(len(rewards)):
    d = np.full(len(rewards[i]), gamma)
    adv[i] = credit_ref.gae(rewards[i], values[i], d, 0.0, lam_p[i], mask[i])[0]
    ret[i] = credit_ref.gae(rewards[i], values[i], d, 0.0, lambda_value, mask[i])[1]
  return adv, ret
