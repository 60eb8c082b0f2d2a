r"""RL with verifiable rewards for a pretrained LM (Llama / Qwen2) on GSM8K-format problems.

Point it at a downloaded Hugging Face checkpoint directory (config.json, *.safetensors,
tokenizer.json) and a local GSM8K-format file or directory (JSONL or Parquet):

  python -m experiments.llm_rl --config configs/llm_rl.py \
      --config.model.path=/data/Qwen2.5-0.5B-Instruct --config.data.path=/data/gsm8k/main \
      --workdir runs/llm_rl
  python -m experiments.llm_rl --config configs/llm_rl.py:smoke --workdir runs/llm_smoke

`:smoke` builds everything itself (a tiny random Qwen2-shaped checkpoint, a tiny trained
tokenizer and a generated dataset, under <workdir>/assets) and runs in seconds.

Any estimator by name (`--config.credit.estimator=rloo`; 'gae' adds a fresh value head).
Parameters and optimizer state are sharded FSDP-style over `mesh.fsdp` devices (0 = all
devices) and the batch over all devices; add --multihost on multi-host clusters. Same
checkpoints / resume / metrics / summary behaviour as experiments/arith_rl.py (rerun the
same command to resume; only `SAFE_KEYS` may change).

Expected: GPU figures pending (no accelerator was available while this was built); the
smoke run takes ~1 min of CPU time, dominated by compilation.
"""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, estimator='grpo')
  c = ml_collections.ConfigDict()
  c.seed = 0
  # A local Hugging Face checkpoint; None is only allowed with build_tiny (the smoke config).
  c.model = dict(
    path=config_dict.placeholder(str),
    dtype='bfloat16',  # compute dtype; logits, values and softmax stay float32
    param_dtype='float32',  # parameters and optimizer state
    build_tiny=False,  # write a tiny random checkpoint + tokenizer + dataset first
  )
  c.tokenizer = dict(path=config_dict.placeholder(str))  # None = model.path
  # A GSM8K-format JSONL/Parquet file, or a directory with *train* and *test* files.
  c.data = dict(path=config_dict.placeholder(str), num_train=0, num_test=0)  # 0 = all records
  c.task = dict(
    prompt_len=256,
    response_len=256,
    system='',
    pad_token=config_dict.placeholder(str),  # None: the tokenizer's pad token (else EOS)
  )
  # `stages`: an importable module whose STAGES dict adds stages the spec may name (None: none;
  # README > A new estimator stage).
  c.credit = dict(
    estimator=arg.estimator,
    gamma=1.0,
    lambda_=1.0,
    eps=1e-6,
    whiten=False,
    stages=config_dict.placeholder(str),
  )
  c.rl = dict(
    steps=200,
    prompts_per_step=16,  # P (divisible by the number of devices)
    group_size=8,
    temperature=1.0,
    num_epochs=1,
    num_minibatches=4,
    steps_per_call=1,  # RL iterations per jitted call (lax.scan)
  )
  c.loss = dict(
    clip_eps=0.2,
    clip_eps_high=config_dict.placeholder(float),  # None: = clip_eps
    agg_mode='token_mean',
    kl_coef=0.0,
    ent_coef=0.0,
    vf_coef=0.5,
    vf_clip=config_dict.placeholder(float),  # None: the value loss is not clipped
  )
  c.optim = dict(name='adam', lr=1e-6, max_grad_norm=1.0, warmup_steps=0, anneal_steps=0, kwargs={})
  c.eval = dict(every=20, num_prompts=64)  # every: a multiple of rl.steps_per_call
  c.train = dict(ckpt_every=20, max_to_keep=2)
  c.mesh = dict(fsdp=0)  # devices along the 'fsdp' axis; 0 = all (pure FSDP)
  if arg.smoke:
    c.model.update(build_tiny=True, dtype='float32')
    c.data.update(num_train=64, num_test=8)
    c.task.update(prompt_len=128, response_len=12)
    c.rl.update(steps=2, prompts_per_step=2, group_size=2, num_minibatches=2)
    c.optim.update(lr=1e-3)
    c.loss.update(ent_coef=0.01)  # a gradient even when every reward is 0
    c.eval.update(every=1, num_prompts=4)
    c.train.update(ckpt_every=1)
  return c
