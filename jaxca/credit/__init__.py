"""Credit-assignment kernels: arrays in, arrays out.

Conventions (all kernels):
  * float32; time is the LAST axis; any number of leading batch axes (a single
    `[T]` trajectory too).
  * Index t is the transition (s_t, a_t, r_t, s_{t+1}); `discounts[t] =
    gamma * (1 - terminated after step t)`; `bootstrap_value` has the batch shape.
  * `mask` (bool, same shape as `rewards`, True where the policy acted): masked
    steps are transparent -- results at unmasked steps equal the results with
    the masked steps deleted, and outputs at masked steps are 0.
  * Pure and traceable: no jit, no device placement; jit/vmap/grad-safe.
"""

from jaxca.credit.gae import gae
from jaxca.credit.group import group_relative
from jaxca.credit.min_form import min_form_returns
from jaxca.credit.min_form import min_form_rewards
from jaxca.credit.min_form import pure_baseline
from jaxca.credit.offpolicy import OFF_POLICY_METHODS
from jaxca.credit.offpolicy import off_policy_returns
from jaxca.credit.returns import discounted_returns

__all__ = (
  'OFF_POLICY_METHODS',
  'discounted_returns',
  'gae',
  'group_relative',
  'min_form_returns',
  'min_form_rewards',
  'off_policy_returns',
  'pure_baseline',
)
