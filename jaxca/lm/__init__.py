"""The language-policy learner (RL and warm start, single- and multi-turn): pure step pieces.

Shape legend: P prompts, G samples per prompt, B = P*G rows (row p*G + g, the
`sampling.sample` layout), Lp prompt length, N response length, L = Lp + N, V vocab.

One RL iteration (`make_rl_update`):
  1. sample G responses per prompt with the current policy (`sampling.sample`);
  2. score them with the task's verifier (sequence reward [B]), put the reward on
     the last valid response token (token-level rewards [B, N]);
  3. one teacher-forced pass computes the old log-probs (and values with a value
     head), one pass with the frozen reference computes the reference log-probs
     (only when the KL coefficient is non-zero);
  4. providers fill exactly the `jaxca.types.Trajectory` fields the estimator
     `requires` (`PROVIDERS`, extendable per call), and the estimator
     (`jaxca.estimators`) turns the trajectory into advantages/returns;
  5. `num_epochs` x `num_minibatches` PPO-clip steps (`train.minibatch_epochs`)
     on `pg + kl_coef * KL_k3 - ent_coef * H + vf_coef * value_loss`.

One learner, two seams: `collect` (a `Collect`: steps 1-3 and what the providers and
statistics read; default single-turn sampling, `make_sample_collect`; multi-turn a TokenEnv
scan, `multiturn.make_collect`; one rollout tree per prompt, `tree.make_tree_collect`) and
`score_fn(params, tokens, valid) -> (log_probs, entropies, values)` (the loss's score;
default `make_score_fn`, multi-turn `multiturn.make_score_fn`, the action-masked
distribution). Every objective, KL option, critic and DAPO option applies to either.

Two-phase iterations (`make_rl_phases`): `collect` (steps 1-3, returns `RolloutData`),
then host-side work on the batch (e.g. Monte-Carlo values of its step prefixes, supplied as
`host_fields`), then `update` (steps 4-5 on that fixed batch). `make_rl_update` is the two
phases composed inside one function (no host fields). Optional pieces: a separate critic
network with its own optimiser, and a `loss_mask` field (`LEARNER_FIELDS`) that restricts
the loss to some tokens.

Modules: `rewards` (verifier scores on tokens), `providers` (Trajectory fields, in jit and
the pieces of host fields), `rollout` (sample and score), `dapo` (DAPO's reward shaping and
dynamic sampling), `loss` (`LossOptions`, the PPO loss), `learner` (the iteration), `sft`
(warm start and evaluation), `multiturn` (token environments). The names below are
re-exported here.

States are plain dicts of arrays (checkpointable with orbax, no keys, no Python
objects): `step` [] int32, `params`, `opt_state`, and `ref_params` when the KL
term is on. Nothing here is jitted; the experiment jits whole iterations.
"""

from jaxca.lm import dapo
from jaxca.lm import learner
from jaxca.lm import loss
from jaxca.lm import providers
from jaxca.lm import rewards
from jaxca.lm import rollout
from jaxca.lm import sft
from jaxca.lm import tree
from jaxca.lm.dapo import REWARD_SHAPING_KEYS
from jaxca.lm.dapo import reward_shaping_options
from jaxca.lm.learner import RLPhases
from jaxca.lm.learner import collect_dynamic
from jaxca.lm.learner import init_from_params
from jaxca.lm.learner import make_init
from jaxca.lm.learner import make_rl_phases
from jaxca.lm.learner import make_rl_update
from jaxca.lm.learner import merge_params
from jaxca.lm.loss import LOSS_KEYS
from jaxca.lm.loss import LossOptions
from jaxca.lm.loss import loss_options
from jaxca.lm.loss import make_loss
from jaxca.lm.loss import make_ppo_loss
from jaxca.lm.providers import PROVIDERS
from jaxca.lm.providers import RolloutContext
from jaxca.lm.providers import build_trajectory
from jaxca.lm.providers import check_providers
from jaxca.lm.rewards import REWARDS
from jaxca.lm.rewards import last_token_rewards
from jaxca.lm.rewards import prompt_mask
from jaxca.lm.rewards import reward_positions
from jaxca.lm.rewards import sequence_rewards
from jaxca.lm.rollout import LEARNER_FIELDS
from jaxca.lm.rollout import Collect
from jaxca.lm.rollout import Rollout
from jaxca.lm.rollout import RolloutData
from jaxca.lm.rollout import advantage_by_class
from jaxca.lm.rollout import make_rollout_fn
from jaxca.lm.rollout import make_sample_collect
from jaxca.lm.rollout import make_score_fn
from jaxca.lm.sections import validate_sections
from jaxca.lm.sft import make_eval_fn
from jaxca.lm.sft import make_sampler
from jaxca.lm.sft import make_sft_loss
from jaxca.lm.sft import make_sft_update
from jaxca.lm.sft import mean_metrics
from jaxca.lm.sft import target_mask

__all__ = [
  'validate_sections',
  'Collect',
  'LEARNER_FIELDS',
  'LOSS_KEYS',
  'LossOptions',
  'PROVIDERS',
  'REWARDS',
  'REWARD_SHAPING_KEYS',
  'RLPhases',
  'Rollout',
  'RolloutContext',
  'RolloutData',
  'build_trajectory',
  'check_providers',
  'collect_dynamic',
  'dapo',
  'init_from_params',
  'last_token_rewards',
  'learner',
  'loss',
  'loss_options',
  'make_eval_fn',
  'make_sampler',
  'make_init',
  'make_loss',
  'make_ppo_loss',
  'make_rl_phases',
  'make_rl_update',
  'advantage_by_class',
  'make_rollout_fn',
  'make_sample_collect',
  'make_score_fn',
  'make_sft_loss',
  'make_sft_update',
  'mean_metrics',
  'merge_params',
  'prompt_mask',
  'providers',
  'reward_positions',
  'reward_shaping_options',
  'rewards',
  'rollout',
  'sequence_rewards',
  'sft',
  'target_mask',
  'tree',
]
