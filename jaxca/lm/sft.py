"""Supervised fine-tuning (warm start) and greedy evaluation of a language policy."""

from typing import Callable
from typing import Dict

import jax
import jax.numpy as jnp
import optax

from jaxca import ops
from jaxca import sampling
from jaxca import train as train_lib
from jaxca.lm import rewards as rewards_lib
from jaxca.lm import rollout as rollout_lib
from jaxca.networks import transformer
from jaxca.tasks import base as tasks_base


def target_mask(task: tasks_base.Task, targets: jax.Array) -> jax.Array:
  """[b, N] bool: target tokens up to and including the first EOS (and not PAD)."""
  is_eos = targets == task.vocab.eos_id
  after = (jnp.cumsum(is_eos, axis=-1) - is_eos) > 0
  return ~after & (targets != task.vocab.pad_id)


def make_sft_loss(policy: transformer.Policy, task: tasks_base.Task) -> Callable:
  """Returns loss_fn(params, batch) -> (loss, aux): teacher-forced cross-entropy.

  `batch` = dict(prompts [b, Lp] int32, targets [b, N] int32). The loss is the
  mean negative log-likelihood over target tokens (through EOS); `aux` holds
  `token_accuracy` (argmax equals the target) and `sequence_accuracy`.
  """
  lp = task.prompt_len

  def loss_fn(params, batch):
    prompts, targets = batch['prompts'], batch['targets']
    tmask = target_mask(task, targets)
    tokens = jnp.concatenate([prompts, targets], axis=1).astype(jnp.int32)
    valid = jnp.concatenate([rewards_lib.prompt_mask(task, prompts), tmask], axis=1)
    logits, log_probs, _ = rollout_lib.forward(policy, params, tokens, valid, lp, 1.0)
    nll = ops.masked_mean(-log_probs, tmask)
    hit = (jnp.argmax(logits, axis=-1) == targets) | ~tmask
    aux = dict(
      token_accuracy=ops.masked_mean(hit.astype(jnp.float32), tmask),
      sequence_accuracy=jnp.mean(jnp.all(hit, axis=-1).astype(jnp.float32)),
    )
    return nll, jax.lax.stop_gradient(aux)

  return loss_fn


def make_sft_update(
  policy: transformer.Policy, task: tasks_base.Task, tx: optax.GradientTransformation
) -> Callable:
  """Returns update(state, batch) -> (state, metrics): one supervised warm-start step."""
  grad_step = train_lib.make_gradient_step(make_sft_loss(policy, task), tx)

  def update(state, batch):
    (params, opt_state), metrics = grad_step((state['params'], state['opt_state']), batch)
    metrics['params_finite'] = train_lib.params_finite(params)
    return dict(state, step=state['step'] + 1, params=params, opt_state=opt_state), metrics

  return update


def make_sampler(policy: transformer.Policy, task: tasks_base.Task) -> Callable:
  """Returns sample(params, prompts, key, greedy=False, num_samples=1) -> `sampling.Samples`.

  `sampling.sample` of the task's responses (`task.response_len` tokens, its EOS and PAD, its
  prompt mask) at temperature 1; `key` is unused by greedy decoding.
  """
  voc = task.vocab

  def sample(params, prompts, key, greedy=False, num_samples=1):
    return sampling.sample(
      policy,
      params,
      key,
      prompts,
      rewards_lib.prompt_mask(task, prompts),
      num_samples=num_samples,
      max_new_tokens=task.response_len,
      temperature=1.0,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
      greedy=greedy,
    )

  return sample


def make_eval_fn(policy: transformer.Policy, task: tasks_base.Task) -> Callable:
  """Returns evaluate(params, batch) -> dict of [P] float32 per-prompt scores (greedy decoding).

  Scores: the task's `eval_metrics` (arith: `exact_match`, `final_answer`,
  `step_accuracy`). Average them on the host or in the caller's jit.
  """
  voc = task.vocab

  def evaluate(params, batch):
    prompts = batch['prompts']
    samples = sampling.sample(
      policy,
      params,
      jax.random.key(0),  # unused by greedy decoding
      prompts,
      rewards_lib.prompt_mask(task, prompts),
      num_samples=1,
      max_new_tokens=task.response_len,
      eos_id=voc.eos_id,
      pad_id=voc.pad_id,
      greedy=True,
    )
    return task.eval_metrics(samples.responses, samples.mask, batch)

  return evaluate


def mean_metrics(per_prompt: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
  """Averages the [P] scores of `make_eval_fn` to scalars."""
  return {k: jnp.mean(v) for k, v in per_prompt.items()}
