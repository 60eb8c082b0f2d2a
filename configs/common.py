"""Shared config helpers: `parse_arg` for `--config configs/x.py:smoke,key=value`."""

import ml_collections


def parse_arg(arg, **defaults) -> ml_collections.ConfigDict:
  """'smoke,lambda_=0.8' -> ConfigDict(smoke=True, lambda_=0.8, ...), typed by the defaults.

  A bare name sets a bool to True. Unknown keys fail with the list of known ones.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'Unknown config arg {key!r}; known: {sorted(defaults)}.')
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.strip().lower() in ('', 'true', '1', 'yes')
    else:
      out[key] = kind(value)
  return out


# The base RL recipe of the arithmetic reproductions (policy_objectives, mc_credit,
# token_credit, pure_credit read it; a reproduction may override a key and says why). Chosen by
# the calibration sweep `configs/policy_objectives.py:calibrate` (results/recipe_calibration/):
# from a warm start past the SFT transition, GRPO must gain >= 8 points of held-out greedy exact
# match over its warm start in every seed, and beat the shuffled-reward noise floor.
ARITH_RL_RECIPE = dict(
  prompts=32,  # P prompts per iteration
  group_size=8,  # G samples per prompt
  temperature=1.0,
  lr=1e-4,  # Adam, grad-norm clip 1.0 (the sweep: 2e-4 gained 3.9 / 12.5 points, 1e-4 13.4 / 18.9)
  ent_coef=0.01,  # entropy bonus: without it the entropy collapses (configs/arith_rl.py)
  num_epochs=2,
  num_minibatches=2,
  iterations=200,  # >= 150 (the early dip of GRPO lasts ~100-150 iterations); the sweep's budget
  eval_every=25,
)
