"""`Trajectory`: the one pytree every advantage estimator reads.

Shape legend (batch-major; used throughout jaxca):
  B  rows (responses / episodes); with groups, B = P * G for P prompts of G samples.
  C  reward components of a row (`reward_components`).
  T  tokens (time steps) of a row: the response tokens of a language model, or
     the environment steps of an episode.
  S  steps of a row: contiguous spans of tokens (reasoning steps, turns); S is a
     static upper bound, S <= T (a step has at least one token).
  U  turns of a row (agent turns: the policy's span between two environment / tool
     replies); a static upper bound, U <= T.

Index `t` is the transition (s_t, a_t, r_t, s_{t+1}); `values[t] = V(s_t)`;
`discounts[t] = gamma * (1 - terminated after t)`. Masks are bool and True where
the policy acted; masked tokens are transparent to every estimator (their
outputs are 0 and they do not change any other token's output).

Fields (each documented here once; the optional ones are None when absent):
  rewards         [B, T] float32  reward of each token (required). Outcome
                                  rewards sit on the last valid token; process
                                  rewards on the token that closes their step.
  mask            [B, T] bool     True where the policy generated / acted (required).
  discounts       [B, T] float32  per-token discount; absent = the estimator's gamma.
  bootstrap_value [B]    float32  V(s_T) after the last token; absent = 0.
  values          [B, T] float32  critic values V(s_t) at sampling time.
  log_probs       [B, T] float32  log pi_old(a_t | s_t) of the sampled tokens.
  entropies       [B, T] float32  entropy of pi_old(. | s_t) at each token.
  group_ids       [B]    int32    group of each row in [0, num_groups) (e.g. the
                                  prompt a response answers).
  num_groups      static int      number of groups (pytree metadata, not a leaf).
  groups_contiguous static bool   True promises group_ids == arange(B) // (B //
                                  num_groups) (the sampler's row p*G + g layout):
                                  estimators may reshape to [P, G] instead of
                                  segment sums (same values, summation order aside).
  step_ids        [B, T] int32    step index in [0, S) of each token; -1 for a
                                  token in no step (e.g. masked or after the end).
                                  A step's last token is its "closer" (the
                                  separator, EOS, or the last valid token).
  step_rewards    [B, S] float32  reward of each step (e.g. a process reward
                                  model's score); 0 at steps that do not occur.
  anchor_ids      [B, S] int32    hashed environment / text state at the start
                                  of each step (GiGPO's anchor states,
                                  arXiv 2505.10978); -1 where absent.
  mc_values       [B, S] float32  Monte-Carlo value estimates at the start of
                                  each step from extra rollouts (VinePPO,
                                  arXiv 2410.01679).
  token_weights   [B, T] float32  per-token credit weights (e.g. entropy- or
                                  attention-based: GTPO, arXiv 2508.04349).
  reward_components [B, C] float32 one outcome score per reward component
                                  (C components, e.g. correctness and format:
                                  GDPO, arXiv 2601.05242).
  turn_ids        [B, T] int32    turn index in [0, U) of each token; -1 for a token in
                                  no turn (tool / environment replies, padding).
  turn_rewards    [B, U] float32  reward of each turn (e.g. MatchTIR's matched tool-call
                                  rewards, arXiv 2601.10712); 0 at turns that do not occur.
  agent_ids       [B]    int32    the agent (role, player) that acted in each row, in
                                  [0, B) (MARS's agent-specific normalisation,
                                  arXiv 2510.15414).
  extras          dict[str, Array] fields a method needs before they earn a
                                  name here (looked up by `get` like the rest),
                                  e.g. the rollout-tree fields `node_ids [B, T]`
                                  and `parent_ids [B, N]` (`estimators.tree`).

`Trajectory` is a registered pytree (`jax.tree_util.register_dataclass`): the
arrays are leaves, `num_groups` and `groups_contiguous` are static metadata, so
a jitted function retraces when they change and never sees them as tracers.
"""

import dataclasses
from typing import Any
from typing import Mapping
from typing import Optional

import jax

# Field names an estimator may list in `requires` (plus any key of `extras`).
FIELDS = (
  'rewards',
  'mask',
  'discounts',
  'bootstrap_value',
  'values',
  'log_probs',
  'entropies',
  'group_ids',
  'step_ids',
  'step_rewards',
  'anchor_ids',
  'mc_values',
  'token_weights',
  'reward_components',
  'turn_ids',
  'turn_rewards',
  'agent_ids',
)
TOKEN_FIELDS = ('rewards', 'mask', 'discounts', 'values', 'log_probs', 'entropies')
TOKEN_FIELDS += ('step_ids', 'token_weights', 'turn_ids')
STEP_FIELDS = ('step_rewards', 'anchor_ids', 'mc_values')
TURN_FIELDS = ('turn_rewards',)
ROW_FIELDS = ('bootstrap_value', 'group_ids', 'agent_ids')


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """A batch of trajectories (see the module docstring for every field)."""

  rewards: jax.Array
  mask: jax.Array
  discounts: Optional[jax.Array] = None
  bootstrap_value: Optional[jax.Array] = None
  values: Optional[jax.Array] = None
  log_probs: Optional[jax.Array] = None
  entropies: Optional[jax.Array] = None
  group_ids: Optional[jax.Array] = None
  step_ids: Optional[jax.Array] = None
  step_rewards: Optional[jax.Array] = None
  anchor_ids: Optional[jax.Array] = None
  mc_values: Optional[jax.Array] = None
  token_weights: Optional[jax.Array] = None
  reward_components: Optional[jax.Array] = None
  turn_ids: Optional[jax.Array] = None
  turn_rewards: Optional[jax.Array] = None
  agent_ids: Optional[jax.Array] = None
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  num_groups: Optional[int] = None
  groups_contiguous: bool = False

  def get(self, name: str):
    """The field `name` (or `extras[name]`); None when absent."""
    if name in FIELDS:
      return getattr(self, name)
    return self.extras.get(name)

  def has(self, name: str) -> bool:
    """Whether the field `name` is present (`group_ids` also needs `num_groups`)."""
    if name == 'group_ids':
      return self.group_ids is not None and self.num_groups is not None
    return self.get(name) is not None

  def replace(self, **kwargs) -> 'Trajectory':
    """A copy with fields replaced; unknown names go to `extras`."""
    known = {f.name for f in dataclasses.fields(self)}
    extras = dict(self.extras)
    for k in [k for k in kwargs if k not in known]:
      extras[k] = kwargs.pop(k)
    return dataclasses.replace(self, extras=extras, **kwargs)

  @property
  def num_steps(self) -> Optional[int]:
    """S, from the first step-level field present (None when there is none)."""
    for name in STEP_FIELDS:
      x = getattr(self, name)
      if x is not None:
        return x.shape[-1]
    return None

  @property
  def num_turns(self) -> Optional[int]:
    """U, from `turn_rewards` (None when absent)."""
    return None if self.turn_rewards is None else self.turn_rewards.shape[-1]


jax.tree_util.register_dataclass(
  Trajectory,
  data_fields=list(FIELDS) + ['extras'],
  meta_fields=['num_groups', 'groups_contiguous'],
)


def missing(traj: Trajectory, requires) -> list[str]:
  """The names in `requires` that `traj` does not have, in order."""
  return [name for name in requires if not traj.has(name)]


def check_requires(traj: Trajectory, requires, who: str) -> None:
  """Raises one ValueError listing every required field `traj` lacks.

  Args:
    traj: the trajectory.
    requires: field names (see the module docstring).
    who: what needs them (named in the message), e.g. "estimator 'grpo'".
  """
  lacking = missing(traj, requires)
  if lacking:
    hint = ' (`group_ids` also needs the static `num_groups`)' if 'group_ids' in lacking else ''
    raise ValueError(
      f'{who} requires Trajectory field(s) {lacking}, which are absent{hint}; '
      f'it requires {list(requires)}.'
    )


def config_get(cfg, name: str, default=None):
  """`cfg[name]` of a ConfigDict, dict or object (attribute), `default` if absent or cfg is None."""
  if cfg is None:
    return default
  if hasattr(cfg, 'get'):
    return cfg.get(name, default)
  return getattr(cfg, name, default)
