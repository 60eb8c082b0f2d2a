r"""jaxca's LM RL loop side by side with tunix (`google-tunix`) on the same Qwen2-shaped model.

  pip install -e ".[peer]"   # tunix, an optional extra (BUILD_NOTES.md > Environment)
  python -m experiments.bench_llm_peer --config configs/bench_llm_peer.py:cpu \
      --workdir results/bench_llm_peer/cpu
  python -m experiments.bench_llm_peer --config configs/bench_llm_peer.py --workdir runs/peer_gpu
  python -m experiments.bench_llm_peer --config configs/bench_llm_peer.py:smoke --workdir /tmp/p

Default: the Qwen2.5-0.5B shape (configs/bench_llm.py), bfloat16 compute, float32 parameters and
Adam state, for an accelerator. `:cpu` is bench_llm's scaled-down shape of the same proportions
in float32; `:smoke` a tiny one for the tests.

One random checkpoint is written in the Hugging Face layout and loaded by each library's own
loader (`jaxca.networks.hf.load_pretrained`, `tunix.models.qwen2.params
.create_model_from_safe_tensors`); the run refuses to time anything unless both give the same
logits on the same tokens (`logits_rtol` of the largest logit). Then, interleaved after one
untimed warm-up call each (`jaxca.bench.interleaved`), four pairs:
  * sample_greedy / sample_t1: P prompts x G samples x N new tokens with the KV cache (prefill
    + decode), greedy and at temperature 1; tunix's `Sampler` engine (its sample-state
    initialisation, jitted prefill and decode loop) without its string tokenisation;
  * train_step: one full-batch PPO-clip / GRPO gradient step (forward + backward + clipped
    Adam, the same optax transformation) on the B = P * G sequences of one jaxca rollout;
    tunix's `grpo_loss_fn` under `nnx.value_and_grad` and `nnx.Optimizer`, as its trainer;
  * grpo_iteration: sample G per prompt at T = 1, score, group advantages, update over
    `num_minibatches`; jaxca's `lm.make_rl_update`; tunix composed from its own parts in the
    order of its `GRPOLearner` (sampler engine, the reward, `compute_advantages`, the train step
    above per minibatch), without the learner's orchestration (cluster, metrics, strings).
Reported per pair: tokens/s of each, compile time (first call minus the median call), the
per-round ratio tunix time / jaxca time (> 1: jaxca faster) as min / median / max, and the
machine load before and after.
"""

import ml_collections

from configs import bench_llm
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, cpu=False)
  base = bench_llm.get_config(','.join(k for k in ('smoke', 'cpu') if arg[k]) or None)
  c = ml_collections.ConfigDict()
  c.model = base.model.to_dict()
  c.dtype = base.dtype  # compute; parameters and optimizer state are float32
  c.prompts = base.prompts  # P
  c.group_size = base.group_size  # G
  c.prompt_len = base.prompt_len
  c.response_len = base.response_len
  c.num_minibatches = base.num_minibatches
  c.reps = 5  # interleaved rounds: five per-round ratios per pair
  c.seed = 0
  # Largest |logit difference| allowed, as a fraction of the largest |logit|.
  c.logits_rtol = 1e-4 if c.dtype == 'float32' else 3e-2
  if arg.smoke:
    c.reps = 2
  return c
