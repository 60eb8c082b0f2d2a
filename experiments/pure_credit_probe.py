"""PURE (arXiv 2504.15275) reproduction's probes: what reward hacking looks like in a batch.

Traced (jit) metrics of `experiments/pure_credit.py`'s responses: the scripted PRM's sum /
min / soft-min over steps, the step kinds (value, THINK filler, malformed), length and
truncation, per-step local and global correctness (`jaxca.prm.step_checks`), the filler-free
exact match (`canonical`), the learner's per-batch metrics (`make_metrics_fn`), the held-out
greedy evaluation (`make_evaluate`) and the warm start's sampled THINK rate
(`make_think_probe`: a learner must write fillers to discover the hack).
"""

import jax
import jax.numpy as jnp

from jaxca import credit
from jaxca import ops
from jaxca import prm as prm_lib
from jaxca.objectives import kl
from jaxca.objectives import losses
from jaxca.tasks import base


def batch_metrics(task, prm_scores, responses, mask, prompts, ref_log_probs=None, log_probs=None):
  """Per-batch scalars of responses (traced): PRM, step kinds, length, step correctness."""
  steps = task.parse_steps(responses, mask)
  chk = prm_lib.step_checks(task, prompts, responses, mask, steps)
  valid = steps.valid
  k = task.num_steps
  big = 2.0
  pr = jnp.where(valid, prm_scores, 0.0)
  pr_min = jnp.min(jnp.where(valid, pr, big), axis=-1)
  pr_min = jnp.where(jnp.any(valid, -1), pr_min, 0.0)
  softmin = jnp.sum(credit.min_form_rewards(pr, 0.1, mask=valid), axis=-1)
  kinds = steps.kinds
  count = lambda kind: jnp.sum(kinds == kind, axis=-1).astype(jnp.float32)  # noqa: E731
  tok = jnp.where(mask, responses, task.vocab.pad_id)
  has_eos = jnp.any(tok == task.vocab.eos_id, axis=-1)
  out = dict(
    prm_sum=jnp.mean(jnp.sum(pr, -1)),
    prm_min=jnp.mean(pr_min),
    prm_softmin=jnp.mean(softmin),
    value_steps=jnp.mean(count(base.STEP_VALUE)),
    think_steps=jnp.mean(count(base.STEP_FILLER)),
    malformed_steps=jnp.mean(count(base.STEP_MALFORMED)),
    length=jnp.mean(jnp.sum(mask, -1).astype(jnp.float32)),
    truncated=jnp.mean((~has_eos).astype(jnp.float32)),
    step1_global=jnp.mean(jnp.any(chk.global_ok & (chk.value_index == 0), -1).astype(jnp.float32)),
  )
  for j in range(k):
    at_j = chk.value_index == j
    has_j = jnp.any(at_j, -1)
    local = jnp.any(chk.local_ok & at_j, -1)
    out[f'local_ok_{j + 1}'] = jnp.sum(local) / jnp.maximum(jnp.sum(has_j), 1)
    glob = jnp.any(chk.global_ok & at_j, -1)
    out[f'global_ok_{j + 1}'] = jnp.mean(glob.astype(jnp.float32))
  if ref_log_probs is not None:
    k3 = kl.kl_k3(log_probs, ref_log_probs, mask)
    out['kl_tok'] = ops.masked_mean(k3, mask)
    out['kl_seq'] = jnp.mean(jnp.sum(jnp.where(mask, k3, 0.0), -1))
  return out


def canonical(task, responses, mask, batch):
  """[B] 1.0 where a response is the filler-free chain `v1 ; v2 ; ... vK EOS` with every value
  right (greedy exact match; the SFT targets carry random fillers, so they are not the key)."""
  steps = task.parse_steps(responses, mask)
  chk = prm_lib.step_checks(task, batch['prompts'], responses, mask, steps)
  kinds = steps.kinds
  clean = ~jnp.any(steps.valid & (kinds != base.STEP_VALUE), axis=-1)
  right = jnp.sum(chk.global_ok & steps.valid, axis=-1) == task.num_steps
  return (clean & right).astype(jnp.float32)


def make_metrics_fn(task):
  def metrics_fn(ctx, traj, targets):
    del targets
    out = batch_metrics(
      task,
      traj.step_rewards,
      ctx.responses,
      ctx.mask,
      ctx.batch['prompts'],
      ctx.ref_log_probs,
      ctx.log_probs,
    )
    out['entropy'] = ops.masked_mean(losses.entropy_from_logits(ctx.response_logits), ctx.mask)
    correct = task.outcome(ctx.responses, ctx.mask, ctx.batch)
    ref = ctx.batch['index'] % 10 == 0
    out['acc_ref'] = jnp.sum(jnp.where(ref, correct, 0.0)) / jnp.maximum(jnp.sum(ref), 1)
    out['acc_noref'] = jnp.sum(jnp.where(ref, 0.0, correct)) / jnp.maximum(jnp.sum(~ref), 1)
    return out

  return metrics_fn


def make_evaluate(task, sample, prm):
  """`evaluate(params, batch)`: greedy responses' `batch_metrics` under `prm`, the final-answer
  accuracy and the exact match (`canonical` and right); `sample` is `lm.make_sampler`'s."""

  def evaluate(params, batch):
    s = sample(params, batch['prompts'], jax.random.key(0), True)
    out = batch_metrics(task, prm.score(None, batch['prompts'], s.responses, s.mask),
                        s.responses, s.mask, batch['prompts'])  # fmt: skip
    correct = task.outcome(s.responses, s.mask, batch)
    out['accuracy'] = jnp.mean(correct)  # greedy final answer
    out['exact_match'] = jnp.mean(canonical(task, s.responses, s.mask, batch) * correct)
    return out

  return evaluate


def make_think_probe(task, sample):
  """`probe(params, batch, key)`: THINK steps per sampled (T=1) response, and its accuracy."""

  def probe(params, batch, key):
    s = sample(params, batch['prompts'], key, False)
    steps = task.parse_steps(s.responses, s.mask)
    return dict(
      think_per_response=jnp.mean(jnp.sum(steps.kinds == base.STEP_FILLER, -1).astype(jnp.float32)),
      accuracy=jnp.mean(task.outcome(s.responses, s.mask, batch)),
    )

  return probe
