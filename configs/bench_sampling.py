"""Sampling benchmark: KV-cache decoding vs recomputing the prefix (issue 5, sampling target).

Commands (run from the repository root):

  # full benchmark (about a minute on 2 CPU cores); writes results.{json,md} to the workdir
  python -m experiments.bench_sampling --config configs/bench_sampling.py \
      --workdir runs/bench_sampling

  # seconds: tiny model and shapes (what CI runs)
  python -m experiments.bench_sampling --config configs/bench_sampling.py:smoke \
      --workdir runs/bench_sampling_smoke

  # e.g. a longer generation
  python -m experiments.bench_sampling --config configs/bench_sampling.py \
      --config.max_new_tokens=128 --config.policy.max_len=160 --workdir runs/bench_sampling_128

Both contenders are `jaxca.sampling.sample` jitted with the same policy, parameters, prompts
and keys (so they draw the same tokens); only `use_cache` differs. `use_cache=False` runs the
full [B, Lp + N] forward pass at every one of the N steps.

A second table times Monte-Carlo completions from many prefixes (the VinePPO / SPO values of
experiments/mc_credit.py): `sampling.sample_from_prefixes` (each prefix prefilled once, its
KV cache repeated to the n samples) vs re-prefilling every one of the U * n rows
(`bench.prefix_sampling`), reported as completions/s. A third table times one tree per
prompt (`tree_sampling.sample_tree`, the sampler of experiments/tree_credit.py) against as
many independent samples: leaves/s and generated tokens/s.

Expected result (issue 5 target): with a 2-layer width-128 transformer, 64 prompts x 8 samples,
prompt length 16 and 64 new tokens, the KV-cache path is >= 5x faster than recomputation
(median of interleaved timed runs after compilation); see BUILD_NOTES.md for measured numbers.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  """Benchmark settings; `arg` is 'smoke' and/or key=value pairs (see configs.common)."""
  args = common.parse_arg(arg, smoke=False)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.vocab_size = 32
  c.policy = dict(
    width=128, depth=2, num_heads=4, max_len=80, mlp_ratio=4, dtype='float32', value_head=False
  )
  c.num_prompts = 64  # P
  c.num_samples = 8  # G; B = P * G sequences
  c.prompt_len = 16  # Lp (left-padded; real lengths uniform in [min_prompt_len, Lp])
  c.min_prompt_len = 8
  c.max_new_tokens = 64  # N
  c.temperature = 1.0
  # Rows that emit EOS continue as padding: the cost is the same (the scan is static), so
  # throughput is reported per computed decoding step, B * N / time (and mean length).
  c.eos_id = 1
  c.pad_id = 0
  c.reps = 3  # timed calls per contender after one warm-up (compile); interleaved
  # Monte-Carlo completions (VinePPO / SPO): U prefixes (lengths uniform in
  # [prefix_len // 2, prefix_len], right-padded) x n completions; shared prefill vs naive.
  c.mc_num_prefixes = 1024  # U
  c.mc_num_samples = 9  # n
  c.mc_prefix_len = 20
  c.mc_max_new_tokens = 8
  # Tree sampling (tree credit): one tree per prompt, branching 2 x 2 x 2 at 16, 16 and 32
  # tokens = G = 8 leaves of N = 64 tokens, vs 8 independent samples of 64 tokens; () skips it.
  c.tree_branching = (2, 2, 2)
  c.tree_segment_len = (16, 16, 32)
  if args.smoke:
    c.vocab_size = 11
    c.policy.width = 32
    c.policy.max_len = 16
    c.num_prompts = 2
    c.num_samples = 2
    c.prompt_len = 4
    c.min_prompt_len = 2
    c.max_new_tokens = 6
    c.reps = 2
    c.mc_num_prefixes = 4
    c.mc_num_samples = 2
    c.mc_prefix_len = 4
    c.mc_max_new_tokens = 3
    c.tree_branching = (2, 1)
    c.tree_segment_len = (3, 3)
  return c
