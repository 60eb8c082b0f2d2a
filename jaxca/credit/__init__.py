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

Modules: `gae`, `returns`, `group`, `min_form`, `offpolicy` (offline targets) and
`traces` (the same trajectory-aware traces as online per-start recursions); the
private engines `_recurrence` (blocked reverse linear recurrence) and
`_divide_and_conquer` (exact trajectory-aware traces) sit beside the kernels using them.
`token_credit` holds token-level signals (GTPO, GRPO-S, HICRA, FAI, WAAD);
`gigpo` GiGPO's episode and anchor-state step groups; `mc` Monte-Carlo step values
and the VinePPO / SPO-chain segment advantages; `macro` MA-RLHF's macro actions; `turns`
turn-level credit for tool-using agents (MatchTIR matched tool-call rewards and
dual-level advantage, MARS, turn-level GAE); `tree` rollout-tree node values and
TreeRL / SPO-tree / TreePS-RAG advantages.
"""

from jaxca.credit import gigpo  # GiGPO episode / anchor-state step groups, turn-index groups
from jaxca.credit import macro  # MA-RLHF macro actions: termination rules, macro GAE
from jaxca.credit import mc  # Monte-Carlo values, VinePPO / SPO-chain advantages
from jaxca.credit import token_credit  # token-level credit signals (entropy, planning, attention)
from jaxca.credit import traces  # online per-start traces (the backward view of offpolicy)
from jaxca.credit import tree  # rollout trees: node values, TreeRL / SPO-tree advantages
from jaxca.credit import turns  # MatchTIR matched turn rewards, MARS, turn-level GAE
from jaxca.credit.gae import gae
from jaxca.credit.gigpo import group_ids_from_keys
from jaxca.credit.group import group_relative
from jaxca.credit.min_form import min_form_returns
from jaxca.credit.min_form import min_form_rewards
from jaxca.credit.min_form import pure_baseline
from jaxca.credit.offpolicy import OFF_POLICY_METHODS
from jaxca.credit.offpolicy import off_policy_returns
from jaxca.credit.returns import discounted_returns
from jaxca.credit.token_credit import fai
from jaxca.credit.token_credit import grpo_s_advantages
from jaxca.credit.token_credit import grpo_s_rewards
from jaxca.credit.token_credit import gtpo_advantages
from jaxca.credit.token_credit import gtpo_rewards
from jaxca.credit.token_credit import hicra
from jaxca.credit.token_credit import hicra_official
from jaxca.credit.token_credit import waad

__all__ = (
  'OFF_POLICY_METHODS',
  'discounted_returns',
  'fai',
  'gae',
  'gigpo',
  'group_ids_from_keys',
  'group_relative',
  'grpo_s_advantages',
  'grpo_s_rewards',
  'gtpo_advantages',
  'gtpo_rewards',
  'hicra',
  'hicra_official',
  'macro',
  'mc',
  'min_form_returns',
  'min_form_rewards',
  'off_policy_returns',
  'pure_baseline',
  'token_credit',
  'traces',
  'turns',
  'tree',
  'waad',
)
