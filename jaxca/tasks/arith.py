"""Verifiable multi-step modular-arithmetic chains.

A problem is a start value `x0` and `K` operations `(op_i, a_i)`; the answer is
the chain `x_i = (x_{i-1} op_i a_i) mod m`, written out step by step.

Token layout (every number `0..m-1` is ONE token; see `Vocab`):

  prompt   (length 2K+3): BOS x0 op1 a1 op2 a2 ... opK aK =
  response (length 2K):   x1 ; x2 ; ... ; xK EOS

`Task.generate` draws problems on the host with NumPy (deterministic given the
seed). The verifiers (`outcome_reward`, `exact_match`, `step_correctness`,
`process_rewards`) are pure JAX: jit/vmap-safe, any number of leading batch
axes, the response tokens on the last axis.

How a response is read by every verifier:
  * Tokens where `mask` is False read as PAD (neither a number nor a delimiter,
    so a hole in the mask makes the step it falls in wrong).
  * The response ends at its FIRST (unmasked) EOS; whatever follows is ignored,
    masked or not ("garbage after EOS" cannot change a reward).
  * A response without an EOS is unfinished: outcome reward 0, no exact match,
    and a step counts only once its closing STEP/EOS token has been written.
"""

from collections.abc import Mapping
import dataclasses
import math
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxca.tasks import base

OPS = ('add', 'sub', 'mul')
_OP_SYMBOLS = {'add': '+', 'sub': '-', 'mul': '*'}
MAX_MODULUS = 1000


@dataclasses.dataclass(frozen=True)
class ArithConfig:
  """Knobs of the arithmetic-chain task.

  Attributes:
    num_steps: K, the number of operations (and of response steps); >= 1.
    modulus: m; every value and operand lies in 0..m-1 and is one token;
      2 <= m <= 1000.
    ops: the operations drawn uniformly per step, a non-empty subset of
      ('add', 'sub', 'mul') (order is irrelevant; duplicates are rejected).
      The string 'invertible' means every op with only invertible operands:
      `+a`, `-a` with a in 1..m-1 and `*a` with a a unit of Z_m other than 1
      ({3, 7, 9} for m = 10), so a wrong intermediate value makes the answer
      wrong unless a later error cancels it (stored as `invertible=True`).
    operand_range: inclusive (low, high) range of the operands a_i, sampled
      uniformly; None means (0, m-1). The start value x0 is always uniform on
      0..m-1. Not combinable with invertible ops.
    invertible: set by `ops='invertible'`: the op is drawn uniformly, then its
      operand uniformly from that op's invertible operands.
    filler_rate: probability that a generated target gets one filler step
      `THINK ;` at a uniformly drawn slot among its K+1 step slots (a
      "reflection" step that carries no value, the step a process reward model
      can be hacked with: PURE, arXiv 2504.15275). Any value > 0 adds the THINK
      token to the vocabulary and makes the verifiers skip filler steps; 0 (the
      default) leaves the task exactly as without this knob.
    max_response_len: N, the response length samplers get (and the length of
      `targets`, PAD after EOS); 0 means the canonical 2K. Must be >= 2K (>= 2K+2
      with fillers, so a target with a filler fits).
  """

  num_steps: int = 2
  modulus: int = 10
  ops: tuple[str, ...] = OPS
  operand_range: tuple[int, int] | None = None
  invertible: bool = False
  filler_rate: float = 0.0
  max_response_len: int = 0

  def __post_init__(self):
    if isinstance(self.ops, str) and self.ops == 'invertible':
      object.__setattr__(self, 'ops', OPS)
      object.__setattr__(self, 'invertible', True)
    if isinstance(self.ops, str):
      raise ValueError(
        f'`ops` must be a sequence of op names from {OPS}; got the string {self.ops!r}.'
      )
    object.__setattr__(self, 'ops', tuple(self.ops))
    if not self.ops:
      raise ValueError(f'`ops` must name at least one op; choices: {OPS}.')
    for op in self.ops:
      if op not in OPS:
        raise ValueError(f'Unknown op {op!r} in `ops`; choices: {OPS}.')
    if len(set(self.ops)) != len(self.ops):
      raise ValueError(f'`ops` has duplicates: {self.ops}.')
    if not isinstance(self.num_steps, (int, np.integer)) or self.num_steps < 1:
      raise ValueError(f'`num_steps` must be an int >= 1; got {self.num_steps!r}.')
    if not isinstance(self.modulus, (int, np.integer)) or not 2 <= self.modulus <= MAX_MODULUS:
      raise ValueError(f'`modulus` must be an int in [2, {MAX_MODULUS}]; got {self.modulus!r}.')
    object.__setattr__(self, 'num_steps', int(self.num_steps))
    object.__setattr__(self, 'modulus', int(self.modulus))
    if self.operand_range is not None:
      lo, hi = (int(v) for v in self.operand_range)
      if not 0 <= lo <= hi <= self.modulus - 1:
        raise ValueError(
          f'`operand_range` must be (low, high) with 0 <= low <= high <= modulus-1 = '
          f'{self.modulus - 1}; got {self.operand_range!r}.'
        )
      object.__setattr__(self, 'operand_range', (lo, hi))
    object.__setattr__(self, 'invertible', bool(self.invertible))
    if self.invertible:
      if self.operand_range is not None:
        raise ValueError('`operand_range` cannot be combined with invertible ops.')
      if len(self.step_choices) == 0:
        raise ValueError(f'No invertible operands for modulus {self.modulus}.')
    rate = float(self.filler_rate)
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f'`filler_rate` must be in [0, 1]; got {self.filler_rate!r}.')
    object.__setattr__(self, 'filler_rate', rate)
    n = self.max_response_len
    least = 2 * self.num_steps + (2 if rate > 0 else 0)
    if not isinstance(n, (int, np.integer)) or (n != 0 and n < least):
      raise ValueError(f'`max_response_len` must be 0 or an int >= {least}; got {n!r}.')
    object.__setattr__(self, 'max_response_len', int(n))

  @property
  def operands_of(self) -> dict[str, tuple[int, ...]]:
    """The operands each op draws from."""
    lo, hi = self.operand_bounds
    if not self.invertible:
      return {op: tuple(range(lo, hi + 1)) for op in self.ops}
    m = self.modulus
    units = tuple(a for a in range(2, m) if math.gcd(a, m) == 1)
    table = {'add': tuple(range(1, m)), 'sub': tuple(range(1, m)), 'mul': units}
    return {op: table[op] for op in self.ops}

  @property
  def step_choices(self) -> tuple[tuple[int, int], ...]:
    """Every (op index, operand) pair a step can take, in enumeration order."""
    per_op = self.operands_of
    return tuple((i, a) for i, op in enumerate(self.ops) for a in per_op[op])

  @property
  def operand_bounds(self) -> tuple[int, int]:
    """Inclusive (low, high) of the operands."""
    return self.operand_range if self.operand_range is not None else (0, self.modulus - 1)

  @property
  def name(self) -> str:
    """A short unique name, e.g. 'k2_m10_add-sub-mul' (+ '_r1-9' for a custom operand range)."""
    ops = '-'.join(op for op in OPS if op in self.ops)
    out = f'k{self.num_steps}_m{self.modulus}_{ops}'
    if self.operand_range is not None:
      out += f'_r{self.operand_range[0]}-{self.operand_range[1]}'
    if self.invertible:
      out += '_inv'
    if self.filler_rate > 0:
      out += f'_fill{self.filler_rate:g}'
    if self.max_response_len:
      out += f'_n{self.max_response_len}'
    return out

  @property
  def think(self) -> bool:
    """Whether the task has filler steps (and the THINK token)."""
    return self.filler_rate > 0


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Token ids. The layout depends on the modulus only (all op tokens always exist).

  ids: PAD=0, BOS=1, '='=2, STEP(';')=3, EOS=4, '+'=5, '-'=6, '*'=7, then the
  number n in 0..m-1 is token 8+n; `size` = 8+m. With `think=True` (a task with
  filler steps) THINK = 8+m is appended and `size` = 9+m.
  """

  modulus: int
  pad_id: int = 0
  bos_id: int = 1
  eq_id: int = 2
  step_id: int = 3
  eos_id: int = 4
  add_id: int = 5
  sub_id: int = 6
  mul_id: int = 7
  num_offset: int = 8
  think: bool = False

  @property
  def size(self) -> int:
    return self.num_offset + self.modulus + int(self.think)

  @property
  def think_id(self) -> int:
    """The THINK token (filler step content); -1 when the vocabulary has none."""
    return self.num_offset + self.modulus if self.think else -1

  @property
  def op_ids(self) -> dict[str, int]:
    return {'add': self.add_id, 'sub': self.sub_id, 'mul': self.mul_id}

  def number_id(self, n):
    """Token id of the number n (int or array, host or traced)."""
    return n + self.num_offset

  def is_number(self, tokens):
    """Elementwise: is the token a number (works on NumPy and JAX arrays)."""
    return (tokens >= self.num_offset) & (tokens < self.num_offset + self.modulus)

  def _names(self) -> dict[int, str]:
    names = {
      self.pad_id: '<pad>',
      self.bos_id: '<bos>',
      self.eq_id: '=',
      self.step_id: ';',
      self.eos_id: '<eos>',
    }
    names.update({self.op_ids[op]: sym for op, sym in _OP_SYMBOLS.items()})
    if self.think:
      names[self.think_id] = 'THINK'
    return names

  def decode(self, tokens, *, skip_pad: bool = True) -> str:
    """Host-side: token ids -> a space-separated string, e.g. '<bos> 3 + 4 = 7 <eos>'."""
    names = self._names()
    out = []
    for t in np.asarray(tokens).reshape(-1).tolist():
      if skip_pad and t == self.pad_id:
        continue
      if t in names:
        out.append(names[t])
      elif self.num_offset <= t < self.num_offset + self.modulus:
        out.append(str(t - self.num_offset))
      else:
        out.append(f'<unk:{t}>')
    return ' '.join(out)

  def encode(self, text: str) -> np.ndarray:
    """Host-side inverse of `decode` (int32); unknown words raise ValueError."""
    ids = {name: i for i, name in self._names().items()}
    out = []
    for word in text.split():
      if word in ids:
        out.append(ids[word])
      elif word.isdigit() and int(word) < self.modulus:
        out.append(self.number_id(int(word)))
      else:
        raise ValueError(f'Cannot encode {word!r}: not a token of the mod-{self.modulus} vocab.')
    return np.asarray(out, np.int32)


def _as_generator(seed_or_rng) -> np.random.Generator:
  if isinstance(seed_or_rng, np.random.Generator):
    return seed_or_rng
  return np.random.default_rng(seed_or_rng)


def problem_hash(prompts: np.ndarray) -> np.ndarray:
  """Host-side 64-bit hash of each prompt row (FNV-1a over the tokens, then a splitmix64 finaliser).

  Args:
    prompts: [n, Lp] integer prompt tokens.

  Returns:
    [n] uint64, a deterministic function of the problem (x0, ops, operands)
    that does not depend on the platform or on NumPy's random streams.
  """
  p = np.asarray(prompts).astype(np.uint64)
  h = np.full(p.shape[:-1], 0xCBF29CE484222325, np.uint64)
  with np.errstate(over='ignore'):
    for j in range(p.shape[-1]):
      h = (h ^ p[..., j]) * np.uint64(0x100000001B3)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
  return h


SPLITS = ('train', 'validation', 'test')
NUM_BUCKETS = 1000
_ENUMERATE_LIMIT = 2_000_000  # `distinct` draws enumerate problem spaces up to this size


def split_of(prompts: np.ndarray, test_fraction: float) -> np.ndarray:
  """Host-side: which split each problem belongs to (bool [n], True = test).

  A problem is a test problem iff `problem_hash(prompt) % 1000 < round(1000 *
  test_fraction)`. The split depends on the problem only, so the train and test
  splits can never share a problem, whatever seeds or sizes are used.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f'`test_fraction` must be in (0, 1); got {test_fraction}.')
  cut = max(1, round(NUM_BUCKETS * test_fraction))
  return problem_hash(prompts) % np.uint64(NUM_BUCKETS) < np.uint64(cut)


def split_names(
  prompts: np.ndarray, test_fraction: float = 0.1, validation_fraction: float = 0.0
) -> np.ndarray:
  """Host-side: the split of each problem, [n] str in `SPLITS`.

  Test is `split_of(prompts, test_fraction)` (unchanged by the validation
  share). Validation is carved out of the train side by the same hash: a
  problem is a validation problem iff its bucket `problem_hash % 1000` lies in
  the next `round(1000 * validation_fraction)` buckets after the test ones, so
  train, validation and test never share a problem, and every validation
  problem was a train problem without a validation split. 0 (the default) means
  no validation problems.
  """
  is_test = split_of(prompts, test_fraction)
  if not 0.0 <= validation_fraction < 1.0 - test_fraction:
    raise ValueError(
      f'`validation_fraction` must be in [0, 1 - test_fraction = {1.0 - test_fraction:g}); '
      f'got {validation_fraction}.'
    )
  lo = max(1, round(NUM_BUCKETS * test_fraction))
  hi = lo + (max(1, round(NUM_BUCKETS * validation_fraction)) if validation_fraction > 0 else 0)
  bucket = problem_hash(prompts) % np.uint64(NUM_BUCKETS)
  is_val = ~is_test & (bucket < np.uint64(hi))
  return np.where(is_test, 'test', np.where(is_val, 'validation', 'train'))


@dataclasses.dataclass(frozen=True)
class Task:
  """A built arithmetic-chain task (hashable; safe to close over in jitted code).

  Attributes:
    config: the ArithConfig.
    vocab: the Vocab.
    prompt_len: 2K+3.
    response_len: N = `config.max_response_len` or 2K, the canonical response
      length incl. EOS (= the number of new tokens a sampler needs).
  """

  config: ArithConfig
  vocab: Vocab

  batch_keys = ('prompts', 'targets', 'answers', 'intermediates')

  @property
  def num_steps(self) -> int:
    return self.config.num_steps

  # --------------------------------------------------- the `jaxca.tasks.Task` interface

  def load_data(self, data_dir: str, *, num_train: int, num_test: int, seed: int = 0):
    """Host side: builds (if needed) and opens the tfds dataset; {'train', 'test'} sources."""
    from jaxca.tasks import arith_data  # local: tensorflow_datasets only when data is needed

    return arith_data.load(self.config, data_dir, num_train=num_train, num_test=num_test, seed=seed)

  def outcome(self, responses, mask, batch) -> jax.Array:
    """[B] `outcome_reward` against `batch['answers']`."""
    return outcome_reward(self, responses, mask, batch['answers'])

  def exact_match(self, responses, mask, batch) -> jax.Array:
    """[B] `exact_match` against `batch['targets']`."""
    return exact_match(self, responses, mask, batch['targets'])

  def parse_steps(self, responses, mask) -> base.Steps:
    """`parse_steps(self, responses, mask)`."""
    return parse_steps(self, responses, mask)

  def step_correct(self, responses, mask, batch) -> jax.Array:
    """[B, S = N] `step_correctness` of segment i at step i (0 for steps i >= K)."""
    correct, _ = step_correctness(self, responses, mask, batch['intermediates'])
    n = jnp.shape(responses)[-1]
    k = correct.shape[-1]
    if k >= n:
      return correct[..., :n]
    return jnp.concatenate([correct, jnp.zeros(correct.shape[:-1] + (n - k,), correct.dtype)], -1)

  def anchors(self, responses, mask, batch, steps: base.Steps) -> jax.Array:
    """[B, S] int32 hash of (problem, step index, value written by the previous step).

    The state at the start of step s is the prompt plus what the response wrote so
    far; on a chain only the last written value matters for what comes next, so two
    responses to one problem share an anchor at step s iff they wrote the same value
    at step s - 1 (GiGPO's anchor states, arXiv 2505.10978). -1 at absent steps.
    """
    prompts = jnp.asarray(batch['prompts']).astype(jnp.uint32)
    h = jnp.full(prompts.shape[:-1], 2166136261, jnp.uint32)
    for j in range(prompts.shape[-1]):
      h = (h ^ prompts[..., j]) * jnp.uint32(16777619)
    prev = jnp.concatenate(
      [jnp.full(steps.values.shape[:-1] + (1,), -1, jnp.int32), steps.values[..., :-1]], -1
    )
    idx = _lead(jnp.arange(steps.values.shape[-1], dtype=jnp.uint32), steps.values.ndim)
    a = (h[..., None] ^ (idx * jnp.uint32(0x9E3779B1))) * jnp.uint32(16777619)
    a = (a ^ prev.astype(jnp.uint32)) * jnp.uint32(16777619)
    a = (a >> 1).astype(jnp.int32)  # non-negative
    return jnp.where(steps.valid, a, -1)

  def eval_metrics(self, responses, mask, batch):
    """Per-row `exact_match`, `final_answer` (outcome) and `step_accuracy` (mean over K)."""
    steps, _ = step_correctness(self, responses, mask, batch['intermediates'])
    return dict(
      exact_match=exact_match(self, responses, mask, batch['targets']),
      final_answer=outcome_reward(self, responses, mask, batch['answers']),
      step_accuracy=jnp.mean(steps, axis=-1),
    )

  @property
  def prompt_len(self) -> int:
    return 2 * self.config.num_steps + 3

  @property
  def response_len(self) -> int:
    return self.config.max_response_len or 2 * self.config.num_steps

  @property
  def num_problems(self) -> int:
    """Size of the problem space: m * (len(ops) * number of operands) ** K."""
    if self.config.invertible:
      per_step = len(self.config.step_choices)
    else:
      lo, hi = self.config.operand_bounds
      per_step = len(self.config.ops) * (hi - lo + 1)
    return self.config.modulus * per_step**self.config.num_steps

  def generate(
    self,
    seed_or_rng,
    n: int,
    *,
    split: str | None = None,
    test_fraction: float = 0.1,
    validation_fraction: float = 0.0,
    distinct: bool = False,
  ) -> dict[str, np.ndarray]:
    """Draws `n` problems on the host (deterministic given the seed).

    The problems come from `draw_problems` (same arguments). With `filler_rate`
    > 0 each target then gets a filler step with that probability (`add_fillers`,
    drawn from the same generator after the problems); with `max_response_len`
    the targets are padded with PAD to that length.
    """
    rng = _as_generator(seed_or_rng)
    out = self.draw_problems(
      rng,
      n,
      split=split,
      test_fraction=test_fraction,
      validation_fraction=validation_fraction,
      distinct=distinct,
    )
    if self.config.think:
      out['targets'] = add_fillers(self, out['intermediates'], rng)
    elif self.response_len > out['targets'].shape[1]:
      pad = self.response_len - out['targets'].shape[1]
      out['targets'] = np.pad(out['targets'], ((0, 0), (0, pad)), constant_values=self.vocab.pad_id)
    return out

  def draw_problems(
    self,
    seed_or_rng,
    n: int,
    *,
    split: str | None = None,
    test_fraction: float = 0.1,
    validation_fraction: float = 0.0,
    distinct: bool = False,
  ) -> dict[str, np.ndarray]:
    """Draws `n` problems with canonical targets on the host (deterministic given the seed).

    Args:
      seed_or_rng: an int seed (or anything `np.random.default_rng` accepts)
        or a `np.random.Generator` (advanced in place).
      n: number of problems.
      split: None draws from all problems; 'train' / 'validation' / 'test' keeps
        only problems of that split (see `split_names`).
      test_fraction: the test share of the problem space when `split` is set.
      validation_fraction: the validation share carved out of the train side
        (`split_names`); 0 means no validation split (train is every non-test
        problem).
      distinct: False draws i.i.d. (problems may repeat). True draws without
        replacement: every problem (of the split) at most once while they last;
        if the split has fewer than `n` problems, all of them come first (in
        random order) and further fresh permutations of them fill the rest.

    Returns:
      prompts: [n, 2K+3] int32 prompt tokens.
      targets: [n, 2K] int32 canonical response `x1 ; ... ; xK EOS`.
      answers: [n] int32 final value x_K (a number, not a token id).
      intermediates: [n, K] int32 values x_1..x_K (the last column is `answers`).
    """
    if split is not None and split not in SPLITS:
      raise ValueError(f'Unknown split {split!r}; choices: {SPLITS} or None.')
    rng = _as_generator(seed_or_rng)
    keep = lambda prompts: (
      np.ones(len(prompts), bool)
      if split is None
      else split_names(prompts, test_fraction, validation_fraction) == split
    )
    if split is not None:
      split_names(np.zeros((0, 1), np.int32), test_fraction, validation_fraction)  # validates
    if split is None and not distinct:
      return self._assemble(*self._sample(rng, n))
    if distinct and self.num_problems <= _ENUMERATE_LIMIT:
      every = self._assemble(*self._enumerate())
      pool = {k: v[keep(every['prompts'])] for k, v in every.items()}
      count = len(pool['prompts'])
      if count == 0:
        raise ValueError(f'The {split!r} split of {self.config} has no problems.')
      order = np.concatenate([rng.permutation(count) for _ in range(-(-n // count))])[:n]
      return {k: v[order] for k, v in pool.items()}
    parts, have, seen, idle = [], 0, set(), 0
    while have < n:
      chunk = self._assemble(*self._sample(rng, max(2 * (n - have), 64)))
      ok = keep(chunk['prompts'])
      if distinct:
        for i in np.flatnonzero(ok):
          row = chunk['prompts'][i].tobytes()
          ok[i] = row not in seen
          seen.add(row)
      parts.append({k: v[ok] for k, v in chunk.items()})
      have += int(ok.sum())
      idle = 0 if ok.any() else idle + 1
      if idle > 1000:
        raise ValueError(
          f'Found only {have} of {n} {split or "any"!r} problems for {self.config} '
          f'(test_fraction={test_fraction}, validation_fraction={validation_fraction}, '
          f'distinct={distinct}): the problem space is too small.'
        )
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}

  def _sample(self, rng: np.random.Generator, n: int):
    cfg = self.config
    lo, hi = cfg.operand_bounds
    x0 = rng.integers(0, cfg.modulus, size=n, dtype=np.int64)
    op_idx = rng.integers(0, len(cfg.ops), size=(n, cfg.num_steps))
    if cfg.invertible:
      per_op = [cfg.operands_of[op] for op in cfg.ops]
      table = np.zeros((len(per_op), max(map(len, per_op))), np.int64)
      for i, vals in enumerate(per_op):
        table[i, : len(vals)] = vals
      sizes = np.asarray([len(v) for v in per_op])
      pick = rng.integers(0, sizes[op_idx])
      return x0, op_idx, table[op_idx, pick]
    operands = rng.integers(lo, hi + 1, size=(n, cfg.num_steps), dtype=np.int64)
    return x0, op_idx, operands

  def _enumerate(self):
    """Every problem once, as (x0 [P], op_idx [P, K], operands [P, K]) in mixed-radix order."""
    cfg = self.config
    lo, hi = cfg.operand_bounds
    n_ops, per_step = len(cfg.ops), len(cfg.ops) * (hi - lo + 1)
    idx = np.arange(self.num_problems, dtype=np.int64)
    x0, rest = idx % cfg.modulus, idx // cfg.modulus
    if cfg.invertible:
      choices = np.asarray(cfg.step_choices, np.int64)
      per_step = len(choices)
    digits = np.stack([(rest // per_step**i) % per_step for i in range(cfg.num_steps)], axis=1)
    if cfg.invertible:
      return x0, choices[digits, 0], choices[digits, 1]
    return x0, digits % n_ops, lo + digits // n_ops

  def _assemble(self, x0, op_idx, operands) -> dict[str, np.ndarray]:
    cfg, voc = self.config, self.vocab
    k, m = cfg.num_steps, cfg.modulus
    n = len(x0)
    op_names = np.asarray(cfg.ops)[op_idx]
    inter = np.empty((n, k), np.int64)
    x = x0
    for i in range(k):
      a, name = operands[:, i], op_names[:, i]
      x = np.where(name == 'add', x + a, np.where(name == 'sub', x - a, x * a)) % m
      inter[:, i] = x
    op_tok = np.asarray([voc.op_ids[o] for o in cfg.ops])[op_idx]
    prompts = np.empty((n, 2 * k + 3), np.int64)
    prompts[:, 0] = voc.bos_id
    prompts[:, 1] = voc.number_id(x0)
    prompts[:, 2:-1:2] = op_tok
    prompts[:, 3:-1:2] = voc.number_id(operands)
    prompts[:, -1] = voc.eq_id
    targets = np.full((n, 2 * k), voc.step_id, np.int64)
    targets[:, 0::2] = voc.number_id(inter)
    targets[:, -1] = voc.eos_id
    return {
      'prompts': prompts.astype(np.int32),
      'targets': targets.astype(np.int32),
      'answers': inter[:, -1].astype(np.int32),
      'intermediates': inter.astype(np.int32),
    }


def add_fillers(task: Task, intermediates, seed_or_rng) -> np.ndarray:
  """Host side: targets with filler steps, [n, N] int32 (PAD after EOS).

  Row i gets, with probability `filler_rate`, one step `THINK` at a slot drawn
  uniformly from the K+1 slots (before value step 1, ..., after value step K):
  e.g. K=3, slot 1 -> `x1 ; THINK ; x2 ; x3 EOS`, slot 3 -> `x1 ; x2 ; x3 ; THINK EOS`.

  Args:
    task: a task with `filler_rate` > 0.
    intermediates: [n, K] int values x_1..x_K.
    seed_or_rng: an int seed or a `np.random.Generator` (advanced in place).
  """
  if not task.config.think:
    raise ValueError('add_fillers needs a task with filler_rate > 0.')
  rng = _as_generator(seed_or_rng)
  voc, k = task.vocab, task.num_steps
  inter = np.asarray(intermediates)
  n = len(inter)
  has = rng.random(n) < task.config.filler_rate
  slot = rng.integers(0, k + 1, size=n)
  out = np.full((n, task.response_len), voc.pad_id, np.int32)
  for i in range(n):
    contents = [voc.number_id(int(v)) for v in inter[i]]
    if has[i]:
      contents.insert(int(slot[i]), voc.think_id)
    row = []
    for c in contents:
      row += [c, voc.step_id]
    row[-1] = voc.eos_id
    out[i, : len(row)] = row
  return out


def make_task(cfg: ArithConfig | Mapping[str, Any] | Any = None, **kwargs) -> Task:
  """Builds a Task from an ArithConfig, a ConfigDict / mapping of its fields, or keyword args.

  Unknown fields raise ValueError listing the known ones.
  """
  if cfg is None:
    cfg = {}
  if isinstance(cfg, ArithConfig):
    if kwargs:
      cfg = dataclasses.replace(cfg, **kwargs)
  else:
    fields = dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg, **kwargs)
    known = [f.name for f in dataclasses.fields(ArithConfig)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
      raise ValueError(f'Unknown arith task field(s) {unknown}; known: {known}.')
    if fields.get('operand_range') is not None:
      fields['operand_range'] = tuple(fields['operand_range'])
    cfg = ArithConfig(**fields)
  return Task(config=cfg, vocab=Vocab(modulus=cfg.modulus, think=cfg.think))


# ----------------------------------------------------------------------------- verifiers (JAX)


class _Parsed(NamedTuple):
  tokens: jax.Array  # [..., N] int32; PAD where masked out or after the first EOS
  upto: jax.Array  # [..., N] bool; at or before the first EOS (everywhere if no EOS)
  valid: jax.Array  # [..., N] bool; `upto` and masked in
  has_eos: jax.Array  # [...] bool
  eos_pos: jax.Array  # [...] int32; N when there is no EOS


def _check(task: Task, responses, mask, name: str, other, other_tail: tuple[int, ...]):
  responses = jnp.asarray(responses)
  if responses.ndim < 1 or not jnp.issubdtype(responses.dtype, jnp.integer):
    raise ValueError(
      f'`responses` must be an integer array [..., N]; got {responses.dtype}{responses.shape}.'
    )
  mask = jnp.asarray(mask)
  if mask.shape != responses.shape or mask.dtype != jnp.bool_:
    raise ValueError(
      f'`mask` must be bool with the shape of `responses` {responses.shape}; '
      f'got {mask.dtype}{mask.shape}.'
    )
  other = jnp.asarray(other)
  want = responses.shape[:-1] + other_tail
  if other.shape != want or not jnp.issubdtype(other.dtype, jnp.integer):
    raise ValueError(
      f'`{name}` must be an integer array of shape {want}; got {other.dtype}{other.shape}.'
    )
  return responses.astype(jnp.int32), mask, other.astype(jnp.int32)


def _lead(x, ndim: int):
  """Adds leading unit axes so `x` has rank `ndim` (explicit broadcasting)."""
  return jnp.reshape(x, (1,) * (ndim - x.ndim) + x.shape)


def _parse(task: Task, responses, mask) -> _Parsed:
  voc = task.vocab
  n = responses.shape[-1]
  pos = jnp.arange(n, dtype=jnp.int32)
  tok = jnp.where(mask, responses, voc.pad_id)
  is_eos = tok == voc.eos_id
  has_eos = jnp.any(is_eos, axis=-1)
  eos_pos = jnp.where(has_eos, jnp.argmax(is_eos, axis=-1), n).astype(jnp.int32)
  upto = _lead(pos, mask.ndim) <= eos_pos[..., None]
  valid = mask & upto
  return _Parsed(jnp.where(valid, tok, voc.pad_id), upto, valid, has_eos, eos_pos)


def _filler_tokens(task: Task, p: _Parsed, delim):
  """(skip, value_delim) [..., N] bool: the tokens of filler steps and the other delimiters.

  A filler step is a THINK token right after the start or a delimiter and right
  before a delimiter; `skip` marks its THINK and its delimiter, `value_delim`
  the delimiters that close every other step.
  """
  is_think = p.tokens == task.vocab.think_id
  prev = jnp.concatenate([jnp.ones_like(delim[..., :1]), delim[..., :-1]], axis=-1)
  nxt = jnp.concatenate([delim[..., 1:], jnp.zeros_like(delim[..., :1])], axis=-1)
  fill = is_think & prev & nxt
  fill_delim = delim & jnp.concatenate([jnp.zeros_like(fill[..., :1]), fill[..., :-1]], axis=-1)
  return fill | fill_delim, delim & ~fill_delim


def _outcome_with_fillers(task: Task, p: _Parsed, ans_tok) -> jax.Array:
  """Correct iff EOS-terminated with exactly K non-filler steps, each one number, the last right."""
  voc, k = task.vocab, task.num_steps
  delim = p.valid & ((p.tokens == voc.step_id) | (p.tokens == voc.eos_id))
  skip, vdelim = _filler_tokens(task, p, delim)
  seg = jnp.cumsum(vdelim, axis=-1, dtype=jnp.int32) - vdelim
  content = p.upto & ~delim & ~skip
  steps = _lead(jnp.arange(k, dtype=jnp.int32)[:, None], seg.ndim + 1)
  in_seg = (seg[..., None, :] == steps) & content[..., None, :]
  count = jnp.sum(in_seg, axis=-1)
  value = jnp.sum(jnp.where(in_seg, p.tokens[..., None, :], 0), axis=-1)
  n_seg = jnp.sum(vdelim, axis=-1)
  well_formed = jnp.all((count == 1) & voc.is_number(value), axis=-1)
  return p.has_eos & (n_seg == k) & well_formed & (value[..., k - 1] == ans_tok)


def outcome_reward(
  task: Task, responses, mask, answers, *, require_format: bool = True
) -> jax.Array:
  """Final-answer reward: 1.0 iff the response's final answer is correct.

  With fillers (`filler_rate` > 0) the filler steps (`THINK ;`, anywhere) are
  skipped first and the rest must be that layout (EOS-terminated, exactly K
  steps of one number each, the last one `answers`).
  With `require_format=True` (default) the response, up to its first EOS, must
  have the canonical layout `n ; n ; ... ; n EOS` with exactly K numbers, and
  its last number must equal `answers`; the intermediate VALUES are not checked
  (use `exact_match` / `step_correctness` for those). With
  `require_format=False` only "an EOS is present and the token right before it
  is the number `answers`" is required (so 'x_K EOS' alone scores 1).

  Args:
    task: the Task.
    responses: [..., N] int32 response tokens (N may exceed 2K).
    mask: [..., N] bool, True where the policy generated the token.
    answers: [...] int32 correct final values (numbers, not token ids).
    require_format: static Python bool, see above.

  Returns:
    [...] float32 in {0, 1}.
  """
  responses, mask, answers = _check(task, responses, mask, 'answers', answers, ())
  p = _parse(task, responses, mask)
  voc, k = task.vocab, task.num_steps
  ans_tok = voc.number_id(answers)
  if require_format and voc.think:
    return _outcome_with_fillers(task, p, ans_tok).astype(jnp.float32)
  if require_format:
    if responses.shape[-1] < 2 * k:
      return jnp.zeros(responses.shape[:-1], jnp.float32)
    head = p.tokens[..., : 2 * k]
    idx = _lead(jnp.arange(2 * k), head.ndim)
    expect_delim = jnp.where(idx == 2 * k - 1, voc.eos_id, voc.step_id)
    layout = jnp.where(idx % 2 == 0, voc.is_number(head), head == expect_delim)
    ok = jnp.all(layout, axis=-1) & (head[..., 2 * k - 2] == ans_tok)
  else:
    before = jnp.take_along_axis(p.tokens, jnp.maximum(p.eos_pos - 1, 0)[..., None], axis=-1)[
      ..., 0
    ]
    ok = p.has_eos & (p.eos_pos >= 1) & (before == ans_tok)
  return ok.astype(jnp.float32)


def exact_match(task: Task, responses, mask, targets) -> jax.Array:
  """1.0 iff the response up to and including its first EOS equals `targets` exactly.

  Args:
    task: the Task.
    responses: [..., N] int32 response tokens (N >= 2K for a match to be possible).
    mask: [..., N] bool, True where the policy generated the token.
    targets: [..., 2K] int32 canonical responses (as from `Task.generate`).

  Returns:
    [...] float32 in {0, 1}.
  """
  k2 = task.response_len
  responses, mask, targets = _check(task, responses, mask, 'targets', targets, (k2,))
  if responses.shape[-1] < k2:
    return jnp.zeros(responses.shape[:-1], jnp.float32)
  p = _parse(task, responses, mask)
  return jnp.all(p.tokens[..., :k2] == targets, axis=-1).astype(jnp.float32)


def step_correctness(task: Task, responses, mask, intermediates) -> tuple[jax.Array, jax.Array]:
  """Per-step correctness and the position where each step ends.

  The response (up to its first EOS) is cut into segments at its delimiter
  tokens (STEP or EOS); segment i is step i and ends at the (i+1)-th delimiter.
  Step i is correct iff its segment exists, is closed by a delimiter and
  consists of exactly one token, the number `intermediates[..., i]` (a PAD or
  masked-out token inside the segment makes it wrong). So a wrong
  value at step i only marks step i wrong (later steps are judged against the
  true chain, not against the response's own earlier values); a missing or
  extra token shifts nothing but that segment.

  Args:
    task: the Task.
    responses: [..., N] int32 response tokens.
    mask: [..., N] bool, True where the policy generated the token.
    intermediates: [..., K] int32 true values x_1..x_K.

  Returns:
    correct: [..., K] float32 in {0, 1}.
    positions: [..., K] int32 index in the response of the delimiter closing
      step i; for a step that is never closed, the last valid response token
      (so a reward put there is not dropped by the mask; 0 when the response is
      empty).
  """
  k = task.num_steps
  responses, mask, inter = _check(task, responses, mask, 'intermediates', intermediates, (k,))
  voc = task.vocab
  n = responses.shape[-1]
  p = _parse(task, responses, mask)
  delim = p.valid & ((p.tokens == voc.step_id) | (p.tokens == voc.eos_id))
  content = p.upto & ~delim
  if voc.think:  # filler steps are skipped: step i is the i-th step that is not a filler
    skip, delim_v = _filler_tokens(task, p, delim)
    content = content & ~skip
  else:
    delim_v = delim
  seg = jnp.cumsum(delim_v, axis=-1, dtype=jnp.int32) - delim_v  # exclusive count = segment index
  steps = _lead(jnp.arange(k, dtype=jnp.int32)[:, None], seg.ndim + 1)  # [1.., K, 1]
  in_seg = (seg[..., None, :] == steps) & content[..., None, :]  # [..., K, N]
  count = jnp.sum(in_seg, axis=-1)
  value = jnp.sum(jnp.where(in_seg, p.tokens[..., None, :], 0), axis=-1)
  closer = (seg[..., None, :] == steps) & delim_v[..., None, :]  # [..., K, N]
  closed = jnp.any(closer, axis=-1)
  correct = closed & (count == 1) & (value == voc.number_id(inter))
  pos = _lead(jnp.arange(n, dtype=jnp.int32), p.valid.ndim)
  last_valid = jnp.max(jnp.where(p.valid, pos, 0), axis=-1)
  positions = jnp.where(closed, jnp.argmax(closer, axis=-1), last_valid[..., None])
  return correct.astype(jnp.float32), positions.astype(jnp.int32)


def process_rewards(task: Task, responses, mask, intermediates) -> jax.Array:
  """Per-step correctness placed on the token that closes each step (PRM-style rewards).

  Args: as `step_correctness`.

  Returns:
    [..., N] float32: rewards[..., positions[..., i]] += correct[..., i]; zero
    elsewhere (a correct step always has its own closing delimiter, so no two
    correct steps share a position).
  """
  correct, positions = step_correctness(task, responses, mask, intermediates)
  n = jnp.shape(responses)[-1]
  onehot = positions[..., None] == _lead(jnp.arange(n, dtype=jnp.int32), positions.ndim + 1)
  return jnp.sum(jnp.where(onehot, correct[..., None], 0.0), axis=-2)


def parse_steps(task: Task, responses, mask) -> base.Steps:
  """Cuts responses into steps: a step ends at a delimiter (STEP or EOS) or at the last valid token.

  Only tokens up to the first EOS that are masked in belong to a step. A step is
  a value step iff it holds exactly one token besides its delimiter and that
  token is a number, a filler step (tasks with `filler_rate` > 0) iff that
  token is THINK; anything else is malformed.

  Args:
    task: the Task.
    responses: [..., N] int32 response tokens.
    mask: [..., N] bool.

  Returns:
    `base.Steps` with S = N.
  """
  responses = jnp.asarray(responses).astype(jnp.int32)
  mask = jnp.asarray(mask)
  voc = task.vocab
  n = responses.shape[-1]
  p = _parse(task, responses, mask)
  delim = p.valid & ((p.tokens == voc.step_id) | (p.tokens == voc.eos_id))
  seg = jnp.cumsum(delim, axis=-1, dtype=jnp.int32) - delim
  step_ids = jnp.where(p.valid, seg, -1)
  content = p.valid & ~delim
  steps = _lead(jnp.arange(n, dtype=jnp.int32)[:, None], seg.ndim + 1)  # [1.., S, 1]
  member = step_ids[..., None, :] == steps  # [..., S, N]
  valid = jnp.any(member, axis=-1)
  in_content = member & content[..., None, :]
  count = jnp.sum(in_content, axis=-1)
  token = jnp.sum(jnp.where(in_content, p.tokens[..., None, :], 0), axis=-1)
  is_value = valid & (count == 1) & voc.is_number(token)
  kinds = jnp.where(valid, jnp.where(is_value, base.STEP_VALUE, base.STEP_MALFORMED), -1)
  if voc.think:
    is_filler = valid & (count == 1) & (token == voc.think_id)
    kinds = jnp.where(is_filler, base.STEP_FILLER, kinds)
  values = jnp.where(is_value, token - voc.num_offset, -1)
  return base.Steps(step_ids, kinds.astype(jnp.int32), values.astype(jnp.int32), valid)
