r"""The estimator zoo: jaxca's critic-free advantage estimators on the flagship task.

  python -m experiments.estimator_zoo --config configs/estimator_zoo.py \
      --workdir results/estimator_zoo         # default: 10 arms x 3 seeds, <= 30 min on CPU
  python -m experiments.estimator_zoo --config configs/estimator_zoo.py:full  # accelerators
  python -m experiments.estimator_zoo --config configs/estimator_zoo.py:smoke  # seconds

Arithmetic chains (K=2, M=10, add/sub/mul) and the flagship 2-layer d=128 policy, as in
configs/policy_objectives.py. ONE supervised warm start (until validation greedy exact match
first reaches 35%; cached in <workdir>/warmstart, keyed by its config), then every arm x seed
from it with one objective (PPO-clip, eps 0.2, token-mean) and the base recipe of the
arithmetic reproductions (configs/common.ARITH_RL_RECIPE: Adam 1e-4, grad-norm 1, entropy 0.01,
2 epochs x 2 minibatches, 200 iterations); only the `credit` section
(`jaxca.estimators.from_config` keys) differs between arms:

  grpo              (r - mean) / (std + 1e-6), singletons 0 (arXiv 2402.03300); the gate's
                    baseline
  dr_grpo           r - mean (arXiv 2503.20783)
  rloo              r - mean of the others (arXiv 2402.14740)
  grpo_verl         verl's default GRPO
  grpo_trl          TRL's default GRPO (eps 1e-4)
  grpo_nemo         NeMo-RL's default: leave-one-out baseline and std, no division at std 0
  maxrl             (r - mean) / mean (binary rewards)
  reinforce_whiten  REINFORCE returns, whitened over the batch (REINFORCE++, arXiv 2501.03262)
  rloo_whiten       RLOO, whitened over the batch
  shuffled_reward   the noise floor: GRPO on the outcome of another prompt's response (rows
                    rolled by one group), so advantages carry no information about the
                    response they weight

Not in the zoo (they need more than an outcome reward and the policy): gae, vapo_gae and
macro_gae (a critic), vineppo and spo_chain (Monte-Carlo rollouts), min_form and pure (a
process reward model), gigpo_* and turn_step (anchor states / turns), gtpo / grpo_s / hicra
(token signals), gdpo (reward components), implicit_reward (a DPO-trained policy); their own
experiments (pure_credit, mc_credit, gigpo_keydoor, token_credit) compare them.
"""

import ml_collections

from configs import common

# Arm name -> label and the `credit` section it uses (jaxca.estimators.from_config keys).
ARMS = {
  'grpo': dict(label='GRPO', credit=dict(estimator='grpo')),
  'dr_grpo': dict(label='Dr. GRPO', credit=dict(estimator='dr_grpo')),
  'rloo': dict(label='RLOO', credit=dict(estimator='rloo')),
  'grpo_verl': dict(label='GRPO (verl)', credit=dict(estimator='grpo_verl')),
  'grpo_trl': dict(label='GRPO (TRL)', credit=dict(estimator='grpo_trl')),
  'grpo_nemo': dict(label='GRPO (NeMo-RL, LOO)', credit=dict(estimator='grpo_nemo')),
  'maxrl': dict(label='MaxRL', credit=dict(estimator='maxrl')),
  'reinforce_whiten': dict(
    label='REINFORCE++ (whiten)', credit=dict(estimator='reinforce | whiten')
  ),
  'rloo_whiten': dict(label='RLOO | whiten', credit=dict(estimator='rloo | whiten')),
  'shuffled_reward': dict(
    label='shuffled reward (noise floor)', credit=dict(estimator='shuffled_reward')
  ),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, full=False)
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2)  # RL seeds (sampling and batch order); the warm start is shared
  c.task = dict(name='arith', num_steps=2, modulus=10, ops=('add', 'sub', 'mul'))
  c.data = dict(num_train=20_000, num_test=512, validation_fraction=0.05, num_validation=512)
  c.policy = dict(width=128, depth=2, num_heads=4, max_len=16, dtype='float32', value_head=False)
  c.warmstart = dict(max_steps=400, batch_size=64, eval_every=10, band=(0.35, 1.0), lr=1e-3)
  recipe = common.ARITH_RL_RECIPE  # the base recipe of the arithmetic reproductions
  c.rl = dict(
    # 30 runs x 200 steps x 0.22-0.3 s per step (quiet), plus 10 compiles and evaluations:
    # ~30 min on the 2-core CPU.
    iterations=recipe['iterations'],
    max_wall_s=300.0,  # safety cap on a run's training wall clock (compile, eval excluded)
    prompts=recipe['prompts'],
    group_size=recipe['group_size'],
    temperature=recipe['temperature'],
    num_epochs=recipe['num_epochs'],
    num_minibatches=recipe['num_minibatches'],
    eval_every=recipe['eval_every'],
  )
  # The RL optimizer (jaxca.train.make_optimizer; fresh, not the warm start's): Adam with the
  # recipe's learning rate, grad-norm clip 1.
  c.optim = dict(name='adam', lr=recipe['lr'], max_grad_norm=1.0)
  # The one objective of every arm (jaxca.objectives.from_config keys).
  c.loss = dict(
    objective='ppo_clip',
    clip_eps=0.2,
    agg_mode='token_mean',
    kl_coef=0.0,
    ent_coef=recipe['ent_coef'],
  )
  c.arms = {k: dict(v) for k, v in ARMS.items()}
  c.run_arms = tuple(ARMS)
  c.baseline = 'grpo'  # the gate's baseline arm (jaxca.report.arm_gate)
  if arg.full:
    c.seeds = (0, 1, 2, 3, 4)
    c.rl.update(iterations=500, max_wall_s=600.0, eval_every=25)
  c.smoke = arg.smoke  # verdicts of a smoke run are labelled "not a result"
  if arg.smoke:
    c.seeds = (0,)
    c.data.update(num_train=256, num_test=16, num_validation=16)
    c.policy.update(width=16, depth=1, num_heads=2)
    c.warmstart.update(max_steps=4, batch_size=16, eval_every=2, band=(1.01, 1.01))
    c.rl.update(iterations=2, max_wall_s=60.0, prompts=4, group_size=4, eval_every=1)
  return c
