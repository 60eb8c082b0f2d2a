r"""Policy objectives on the flagship task: PPO-clip, clip-higher, GSPO, CISPO (GRPO advantages).

  python -m experiments.policy_objectives --config configs/policy_objectives.py \
      --workdir results/policy_objectives        # default: 5 arms x 4 seeds, ~22 min
  python -m experiments.policy_objectives --config configs/policy_objectives.py:pilot  # ~3 min
  python -m experiments.policy_objectives --config configs/policy_objectives.py:calibrate \
      --workdir results/recipe_calibration       # the base recipe's sweep, ~15 min
  python -m experiments.policy_objectives --config configs/policy_objectives.py:smoke  # seconds

Arithmetic chains (K=2, M=10, add/sub/mul) and the flagship 2-layer d=128 policy, as in
configs/arith_rl.py. ONE supervised warm start (until VALIDATION greedy exact match first
reaches 35%, as arith_rl's stop_at_accuracy; the validation problems are disjoint from train
and held-out test; cached in <workdir>/warmstart, keyed by its config), then every
arm x seed from it with ONE estimator (GRPO) and the base recipe of the arithmetic
reproductions (configs/common.ARITH_RL_RECIPE: Adam 1e-4, grad-norm 1, entropy bonus 0.01,
2 epochs x 2 minibatches, P=32 x G=8, 200 iterations), plus the shuffled-reward noise floor;
only the `loss` section differs between arms (`jaxca.objectives.from_config` keys):

  ppo_clip     PPO-clip, eps 0.2 both sides (arXiv 1707.06347), token-mean
  clip_higher  PPO-clip, eps_low 0.2, eps_high 0.28 (DAPO, arXiv 2503.14476), token-mean
  gspo         sequence-level ratio, eps 3e-4 / 4e-4, seq-mean-token-mean (arXiv 2507.18071)
  cispo        REINFORCE with sg(clip(r, -, 1 + 0.2)) weights, no lower bound, token-mean
               (MiniMax-M1, arXiv 2506.13585; verl's CISPO example)

Why 2 epochs x 2 minibatches (rl.num_epochs, rl.num_minibatches): with one epoch over one
minibatch the learner's policy IS the sampler, every ratio r = 1, nothing is clipped, and
PPO-clip, clip-higher and CISPO give the same gradient (-A grad log pi); GSPO differs only
in its aggregation. With 2 x 2 there are four gradient steps per batch and three of them
are off-policy (r != 1), where the clip ranges and the CISPO weights act. More passes
(e.g. 4 minibatches, arith_rl's note) collapsed the entropy from a 40% warm start; 2 x 2
doubles the update cost of arith_rl's 1 x 1, which the wall-clock budget allows.

Shared by every arm: no KL; arith_rl's entropy bonus 0.01 (in a pilot without it, PPO-clip's
entropy fell from 0.49 to 0.07 in 250 steps and held-out exact match from 35.7% to 28.5%;
with it: 0.52 -> 0.13 and 34.4%). Only the objective changes between arms. Every arm runs
rl.iterations steps (the same for every arm, so the "vs step" curves end together) unless
rl.max_wall_s of training wall clock (compile and evaluation excluded; a safety cap for a
loaded machine) comes first.
"""

import ml_collections
from ml_collections import config_dict

from configs import common

# Arm name -> label and the `loss` keys it sets over the shared `loss` section.
ARMS = {
  'ppo_clip': dict(
    label='PPO-clip (eps 0.2)',
    loss=dict(objective='ppo_clip', clip_eps=0.2, clip_eps_high=None, agg_mode='token_mean'),
  ),
  'clip_higher': dict(
    label='clip-higher (0.2 / 0.28)',
    loss=dict(objective='ppo_clip', clip_eps=0.2, clip_eps_high=0.28, agg_mode='token_mean'),
  ),
  'gspo': dict(
    label='GSPO (3e-4 / 4e-4, seq)',
    loss=dict(objective='gspo', clip_eps=3e-4, clip_eps_high=4e-4, agg_mode='seq_mean_token_mean'),
  ),
  'cispo': dict(
    label='CISPO (eps_high 0.2)',
    loss=dict(objective='cispo', clip_eps=0.0, clip_eps_high=0.2, agg_mode='token_mean'),
  ),
  # The noise floor (jaxca.report's gate): PPO-clip on GRPO advantages of another prompt's
  # outcomes (estimators.group.shuffled_reward).
  'shuffled_reward': dict(
    label='shuffled reward (noise floor)',
    loss=dict(objective='ppo_clip', clip_eps=0.2, clip_eps_high=None, agg_mode='token_mean'),
    credit=dict(estimator='shuffled_reward'),
  ),
}

# The calibration sweep of the base recipe (common.ARITH_RL_RECIPE): PPO-clip on GRPO
# advantages under a few learning rates, entropy bonuses and update shapes, and the noise floor.
RECIPES = {
  'r_lr2e-4_ent01_2x2': dict(
    optim=dict(lr=2e-4), rl=dict(num_epochs=2, num_minibatches=2), ent_coef=0.01
  ),
  'r_lr1e-4_ent01_2x2': dict(
    optim=dict(lr=1e-4), rl=dict(num_epochs=2, num_minibatches=2), ent_coef=0.01
  ),
  'r_lr2e-4_ent0_2x2': dict(
    optim=dict(lr=2e-4), rl=dict(num_epochs=2, num_minibatches=2), ent_coef=0.0
  ),
  'r_lr2e-4_ent01_1x1': dict(
    optim=dict(lr=2e-4), rl=dict(num_epochs=1, num_minibatches=1), ent_coef=0.01
  ),
  'r_lr1e-4_ent01_1x1': dict(
    optim=dict(lr=1e-4), rl=dict(num_epochs=1, num_minibatches=1), ent_coef=0.01
  ),
}


def _arm(arm):
  """A copy of `arm` whose `loss.clip_eps_high=None` stays settable on the command line."""
  loss = {
    k: config_dict.placeholder(float) if k == 'clip_eps_high' and v is None else v
    for k, v in arm['loss'].items()
  }
  return dict(arm, loss=loss)


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, pilot=False, calibrate=False)
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2, 3)  # RL seeds (sampling and batch order); the warm start is shared
  c.task = dict(name='arith', num_steps=2, modulus=10, ops=('add', 'sub', 'mul'))
  # Generated on the host (jaxca.warmstart.make_splits): the warm start stops on the
  # validation share (carved out of the train side by problem hash), results use the test.
  c.data = dict(num_train=20_000, num_test=512, validation_fraction=0.05, num_validation=512)
  c.policy = dict(width=128, depth=2, num_heads=4, max_len=16, dtype='float32', value_head=False)
  # Supervised warm start (jaxca.warmstart.warm_start): stop at the first evaluation
  # with validation greedy exact match >= band[0].
  c.warmstart = dict(max_steps=400, batch_size=64, eval_every=10, band=(0.35, 1.0), lr=1e-3)
  c.credit = dict(estimator='grpo')  # a jaxca.estimators name or spec, the same for every arm
  recipe = dict(common.ARITH_RL_RECIPE)
  c.rl = dict(
    iterations=recipe['iterations'],
    # A safety cap on a run's training wall clock (compile and evaluation excluded) for a
    # loaded machine; quiet, a 200-step run trains for 45-105 s (the noise floor's longest).
    max_wall_s=300.0,
    prompts=recipe['prompts'],
    group_size=recipe['group_size'],
    temperature=recipe['temperature'],
    num_epochs=recipe['num_epochs'],  # > 1 (see the docstring): otherwise r = 1 and the
    num_minibatches=recipe['num_minibatches'],  # objectives coincide
    eval_every=recipe['eval_every'],
  )
  # The RL optimizer (jaxca.train.make_optimizer; fresh, not the warm start's): Adam, grad-norm
  # clip 1. An arm's `optim` keys override it (the calibration's learning rates).
  c.optim = dict(name='adam', lr=recipe['lr'], max_grad_norm=1.0)
  # Refuse arms with one gradient step per batch (where the objectives coincide).
  c.objectives_differ = True
  c.baseline = 'ppo_clip'  # the gate's baseline arm (jaxca.report.arm_gate)
  # The shared loss keys; each arm's `loss` overrides them (jaxca.objectives.from_config).
  c.loss = dict(agg_mode='token_mean', kl_coef=0.0, ent_coef=recipe['ent_coef'])
  # The arm definitions, and which of them run in which order (a ConfigDict sorts its keys).
  c.arms = {k: _arm(v) for k, v in ARMS.items()}
  c.run_arms = tuple(ARMS)
  if arg.calibrate:  # results/recipe_calibration: 2 seeds x 5 recipes + the noise floor
    c.seeds = (0, 1)
    c.rl.update(iterations=200, max_wall_s=1e4)  # judged at equal iterations, not wall clock
    base = ARMS['ppo_clip']
    c.arms = {'shuffled_reward': _arm(ARMS['shuffled_reward'])}
    for name, r in RECIPES.items():
      c.arms[name] = _arm(
        dict(
          label=name,
          loss=dict(base['loss'], ent_coef=r['ent_coef']),
          rl=dict(r['rl']),
          optim=dict(r['optim']),
        )
      )
    c.run_arms = tuple(RECIPES) + ('shuffled_reward',)
    c.objectives_differ = False
    c.baseline = 'r_lr2e-4_ent01_2x2'
  if arg.pilot:
    c.seeds = (0,)
    c.rl.update(iterations=50, eval_every=25)
  c.smoke = arg.smoke  # verdicts of a smoke run are labelled "not a result"
  if arg.smoke:
    c.seeds = (0,)
    c.data.update(num_train=256, num_test=16, num_validation=16)
    c.policy.update(width=16, depth=1, num_heads=2)
    c.warmstart.update(max_steps=4, batch_size=16, eval_every=2, band=(1.01, 1.01))
    c.rl.update(iterations=2, max_wall_s=60.0, prompts=4, group_size=4, eval_every=1)
  return c
