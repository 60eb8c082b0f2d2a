r"""Throughput of a GRPO iteration for a Qwen2-shaped model initialised at random (no weights).

  python -m experiments.bench_llm --config configs/bench_llm.py --workdir runs/bench_llm
  python -m experiments.bench_llm --config configs/bench_llm.py:cpu --workdir runs/bench_llm_cpu
  python -m experiments.bench_llm --config configs/bench_llm.py:smoke --workdir runs/bench_llm_smoke

Default: the Qwen2.5-0.5B shape (24 layers, width 896, 14 query / 2 key-value heads, SwiGLU
4864, vocabulary 151,936, tied embeddings), bfloat16 compute, float32 parameters and Adam
state, for an accelerator. `:cpu` is a scaled-down shape of the same proportions for a CPU;
`:smoke` a tiny one for the tests.

Contenders (jitted once, timed in interleaved rounds after compilation, median):
  * sample: G responses per prompt with the KV cache (`sampling.sample`);
  * train_step: one full-batch PPO-clip gradient step (forward + backward + Adam) on the
    B = P * G sequences of a rollout;
  * rl_iteration: the whole GRPO iteration of `jaxca.lm.make_rl_update` (sample, reward,
    teacher-forced old log-probs, estimator, PPO epochs/minibatches).
Reported: sampling tokens/s (generated tokens), training tokens/s (prompt + response tokens
of every sequence), model FLOPs per second and model FLOP utilisation (MFU) against
`peak_tflops` (0: looked up from the device kind where known; on a CPU it is not reported).

Expected: GPU figures pending (no accelerator was available while this was built); CPU
figures of the `:cpu` shape are in BUILD_NOTES.md.
"""

import ml_collections

from configs import common

QWEN2_0_5B = dict(
  vocab_size=151_936,
  hidden_size=896,
  intermediate_size=4864,
  num_layers=24,
  num_heads=14,
  num_kv_heads=2,
  head_dim=64,
  rope_theta=1_000_000.0,
)


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, cpu=False)
  c = ml_collections.ConfigDict()
  c.model = dict(QWEN2_0_5B)
  c.dtype = 'bfloat16'  # compute; parameters and optimizer state are float32
  c.prompts = 8  # P
  c.group_size = 8  # G
  c.prompt_len = 256
  c.response_len = 256
  c.num_minibatches = 4  # of the rl_iteration's PPO step
  c.reps = 5
  c.peak_tflops = 0.0  # 0: from the device kind (bfloat16 dense peak) where known
  if arg.cpu:
    c.model.update(
      vocab_size=8192,
      hidden_size=224,
      intermediate_size=1216,
      num_layers=6,
      num_heads=7,
      num_kv_heads=1,  # 7 query heads per key-value head, as 14 / 2
      head_dim=32,
    )
    c.dtype = 'float32'
    c.update(prompts=4, group_size=4, prompt_len=64, response_len=64, num_minibatches=2, reps=3)
  if arg.smoke:
    c.model.update(
      vocab_size=64,
      hidden_size=32,
      intermediate_size=48,
      num_layers=1,
      num_heads=4,
      num_kv_heads=2,
      head_dim=8,
    )
    c.dtype = 'float32'
    c.update(prompts=2, group_size=2, prompt_len=4, response_len=4, num_minibatches=1, reps=1)
  return c
