r"""Turn-level credit for a tool-using agent on ToolArith (MatchTIR, arXiv 2601.10712).

Claims tested (MatchTIR): turn-level rewards from matching the predicted tool calls against
the reference calls, combined with the trajectory-level outcome by the dual-level advantage,
beat the trajectory-level outcome reward alone (GRPO) on final accuracy and on tool-call
precision (also judged on call F1, the official test score: precision is 1 for a problem
without calls, so a policy that stops calling scores 1); the hard assignment (Kuhn-Munkres)
beats the soft one (optimal transport) at small scale (the paper's ablation).

  python -m experiments.tool_credit --config configs/tool_credit.py \
      --workdir results/tool_credit_protocol   # default: 5 arms x 4 seeds x 150 it, ~15-20 min
  python -m experiments.tool_credit --config configs/tool_credit.py:pilot   # 1 seed, 40 it
  python -m experiments.tool_credit --config configs/tool_credit.py:full    # + MARS arm
  python -m experiments.tool_credit --config configs/tool_credit.py:smoke   # seconds

Time: estimated from one pilot (grpo, matchtir_km and the noise floor, 1 seed x 100 it, 2-core
CPU at load 12-16: 176 s in all, about 30 s of compile per arm, 11-17 s of training per run);
the default's 20 runs of 150 iterations with 11 evaluations each: about 15-20 min. In that
pilot GRPO went from 7% to 31% held-out accuracy by answering without the tool (0 calls per
problem, so precision 1 by the official convention), matchtir_km to 30% with 0.35 calls per
problem (precision 0.82), the noise floor to 14%.

Task (`jaxca.tasks.tool_arith`): x0 and K=2 operations mod 5 (add, mul); the policy calls a
calculator (`CALL(op, a)`, one action token a turn; the reply is two observation tokens,
out of the loss) or answers (`ANS(d)`); each call costs 0.05 and fails with probability 0.1
(reply ERR, accumulator unchanged); at most 4 turns. Random init, no SFT (as KeyDoor).

Arms (each its own compiled update, shared by its seeds):
  grpo             GRPO on the environment's rewards (outcome - call costs): the baseline
  matchtir_km      MatchTIR's dual-level advantage; turn rewards = env reward + matched
                   call reward, hard assignment (optimal; unmatched calls -0.5)
  matchtir_ot      the same with the soft assignment (Sinkhorn, reg 0.1; no penalty)
  turn_gae         GAE over turns on the env rewards (value head, whitened advantages)
  shuffled_reward  the noise floor (`jaxca.report.NOISE_FLOOR_ARM`)
:full adds mars_km (MARS's turn-level advantage, arXiv 2510.15414, on the KM turn rewards,
one agent, whitened as its official configs).
Gate (`jaxca.report.arm_gate`): grpo must gain >= 8 points of held-out greedy accuracy over
its iteration-0 accuracy and end above the noise floor in every seed, else every claim reads
UNTESTABLE.
"""

import ml_collections

from configs import common
from jaxca import report


def _arm(label, estimator, assignment=None, **extra):
  return dict(label=label, estimator=estimator, assignment=assignment, **extra)


ARMS = dict(
  grpo=_arm('outcome only (GRPO)', 'grpo'),
  matchtir_km=_arm('dual-level, hard (KM) matching', 'matchtir', 'km'),
  matchtir_ot=_arm('dual-level, soft (OT) matching', 'matchtir', 'ot'),
  turn_gae=_arm(
    'turn-level GAE (value head)', 'turn_gae | whiten', value_head=True, credit=dict(gamma=1.0)
  ),
  **{report.NOISE_FLOOR_ARM: _arm('noise floor', 'shuffled_reward')},
  mars_km=_arm('MARS turn-level, KM matching', 'mars | whiten', 'km', credit=dict(gamma=1.0)),
)


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, pilot=False, full=False)
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2, 3)
  c.env = dict(num_steps=2, modulus=5, ops=('add', 'mul'), horizon=4, error_rate=0.1,
               call_cost=0.05)  # fmt: skip
  # num_val of the num_train problems are the warm start's validation (never trained on by RL)
  c.data = dict(num_train=400, num_val=50, num_test=100, seed=0)
  # SFT warm start on noisy scripted demonstrations (tool_arith.noisy_reference_policy), stopped
  # at the first evaluation whose validation greedy accuracy reaches stop_at (None: random init)
  c.warmstart = dict(p_opt=0.3, num_demos=2000, batch_size=64, lr=1e-3, max_steps=1500,
                     eval_every=25, stop_at=0.3)  # fmt: skip
  c.policy = dict(width=64, depth=2, num_heads=4, max_len=32, dtype='float32', value_head=False)
  c.rl = dict(
    iterations=150, prompts=16, group_size=8, num_epochs=1, num_minibatches=2, temperature=1.0,
    eval_every=10, max_wall_s=float('inf'),
  )  # fmt: skip
  c.loss = dict(clip_eps=0.2, agg_mode='token_mean', ent_coef=0.0, vf_coef=0.5)
  c.optim = dict(lr=1e-3, max_grad_norm=1.0)
  # credit options: MatchTIR's turn discount 0.9 (an arm's `credit` overrides: GAE and MARS
  # use gamma 1 over turns), GAE's lambda over turns, the matched rewards' penalty and weight.
  c.credit = dict(gamma=0.9, lambda_=0.95, eps=1e-6, unmatched_penalty=-0.5, match_weight=1.0)
  c.arms = ARMS
  c.run_arms = ('grpo', 'matchtir_km', 'matchtir_ot', 'turn_gae', report.NOISE_FLOOR_ARM)
  if arg.full:
    c.run_arms += ('mars_km',)
  c.baseline = 'grpo'
  c.smoke = arg.smoke
  if arg.pilot:
    c.seeds = (0,)
    c.rl.iterations = 40
    c.run_arms = ('grpo', 'matchtir_km', report.NOISE_FLOOR_ARM)
  if arg.smoke:
    c.seeds = (0,)
    c.data.update(num_train=32, num_val=8, num_test=8)
    c.warmstart.update(num_demos=16, batch_size=8, max_steps=2, eval_every=1, stop_at=2.0)
    c.policy.update(width=16, depth=1, num_heads=2)
    c.rl.update(iterations=2, prompts=4, group_size=4, eval_every=1)
  return c
