r"""Turn-level credit for a tool-using agent on ToolArith (MatchTIR, arXiv 2601.10712).

Claims tested (MatchTIR): turn-level rewards from matching the predicted tool calls against
the reference calls, combined with the trajectory-level outcome by the dual-level advantage,
beat the trajectory-level outcome reward alone (GRPO) on final accuracy and on tool-call
precision (also judged on call F1, the official test score: precision is 1 for a problem
without calls, so a policy that stops calling scores 1); the hard assignment (Kuhn-Munkres)
beats the soft one (optimal transport) at small scale (the paper's ablation).

  python -m experiments.tool_credit --config configs/tool_credit.py \
      --workdir results/tool_credit_warmstart   # default: 5 arms x 4 seeds x 150 it, ~6-10 min
  python -m experiments.tool_credit --config configs/tool_credit.py:pilot   # 1 seed, 40 it
  python -m experiments.tool_credit --config configs/tool_credit.py:full    # + MARS arm
  python -m experiments.tool_credit --config configs/tool_credit.py:smoke   # seconds

Task (`jaxca.tasks.tool_arith`): x0 and K=2 operations mod 5 (add, mul); the policy calls a
calculator (`CALL(op, a)`, one action token a turn; the reply is two observation tokens,
out of the loss) or answers (`ANS(d)`); each call costs 0.05 and fails with probability 0.1
(reply ERR, accumulator unchanged); at most 4 turns. 400 problems of the 500 are for training,
of which 50 are the warm start's validation (never trained on by RL); 100 are held out.

Warm start (as MatchTIR starts from an instruction-tuned model that already calls tools, and
the GiGPO reproduction from noisy-BFS demonstrations): SFT on the action tokens of 2000 noisy
scripted demonstrations (`tool_arith.noisy_reference_policy`, p_opt=0.3: per turn the next
reference call, repeated after an ERR, then ANS(acc), each with probability 0.3, else a random
action; they solve 19% of their problems), Adam 1e-3, batch 64, validation greedy accuracy every
25 steps, stopped at the first >= 25% (at most 1500 steps), cached in <workdir>/warmstart.
Every arm and seed starts from it. The earlier random-init run (results/tool_credit_protocol)
collapsed within 10 steps to answering from the prompt in every arm (0 calls per problem), so
its claims were judged on policies that never call.

Calibration (the gate's preconditions only: the warm-started policy calls the tool at
iteration 0 (> 0.5 calls per problem), GRPO gains >= 8 points over its iteration 0, the noise
floor ends below GRPO; not any claim's outcome). Four pilots, each
`python -m experiments.tool_credit --config configs/tool_credit.py:pilot
--config.rl.iterations=150 --workdir /work/pilots/toolwarm/<name> [overrides]` (grpo,
matchtir_km, the noise floor; 1 seed; 2-core CPU at load 2-3):
  p1_m5_s30 (stop_at 0.3, seed 0): SFT 325 steps, validation 38%, 2.24 calls; held-out start
    22%, 2.42 calls; grpo 22% -> 33% (+11, 0 calls from step 10), matchtir_km -> 82%, noise
    floor -> 17%. 117 s.
  p2_m11_s30 (modulus 11, data 1000/100/200, stop_at 0.3): SFT never reached the stop (1500
    steps, validation <= 9%); start 4%, 2.21 calls; grpo -> 15% (0 calls), matchtir_km -> 16%,
    noise floor -> 6%: modulus 11 rejected (the warm start does not learn the tool). 143 s.
  p3_m5_s25 (stop_at 0.25, seed 0): SFT 175 steps, validation 28%, 2.28 calls; start 18%, 2.45
    calls; grpo 18% -> 29% (+11; best 37%, 0 calls from step 10), matchtir_km -> 71%, noise
    floor -> 0%. 113 s.
  p4_m5_s25_seed1 (stop_at 0.25, seed 1): the same warm start; grpo 18% -> 32% (+14),
    matchtir_km -> 71%, noise floor -> 6%. 106 s.
Chosen: modulus 5, stop_at 0.25 (a lower start than 0.3 leaves GRPO more room above the gate
in every seed). In every pilot GRPO learns by dropping the tool (the sampled warm-start policy
rarely completes a tool path, an immediate answer is right about 1 time in 5).

Time: estimated from the pilots (3 runs: about 16 s of SFT, 12-15 s of compile per arm, 10-14
s of training per run of 150 steps): the default's 20 runs (5 compiles, one warm start) about
6-10 min on this 2-core CPU at load 2-3.

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
                     eval_every=25, stop_at=0.25)  # fmt: skip
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
