"""Math word problems in GSM8K format (Cobbe et al. 2021, arXiv 2110.14168) for pretrained LMs.

A record is `{'question': str, 'answer': str}` whose answer ends in `#### <number>` (the
GSM8K release format). `Task.load_data(path)` reads local JSONL or Parquet files (nothing is
downloaded): a file, or a directory holding `*train*` and `*test*` files (e.g. the `main/`
folder of the Hugging Face dataset, or OpenAI's `train.jsonl` / `test.jsonl`).

Prompts are the question inside `instruction`, wrapped in the checkpoint's chat template
when it has one (`jaxca.tokenizer.Tokenizer.prompt_ids`), left-padded to `prompt_len`;
questions whose prompt is longer are dropped at load time.

Final answers (`extract_answer`, host side) are read from the response text, first match
wins: the last `\\boxed{...}` (LaTeX fractions, `\\text{}`, `$`, `%` and spacing commands
removed), else the first number after the last `####`, else the last number in the text.
Numbers may carry a sign, thousands separators (`1,234,567`), decimals and a `$`; they are
compared exactly as fractions (`72`, `72.0`, `$72.00` and `\\boxed{72}` are all 72).

Verifiers. `outcome` decodes the responses on the host through `jax.pure_callback` (the
text is needed; it is jit- and vmap-safe, and runs on one host: with `jax.distributed` every
process scores the rows it holds). `exact_match` (the response is the reference solution,
token for token, up to EOS) and `parse_steps` (a step ends at a token whose text contains a
newline, or at EOS) are pure JAX. There is no per-step verifier: `step_correct` raises, so
use `reward='outcome'` (the GSM8K setting) with this task.
"""

from collections.abc import Mapping
import dataclasses
import fractions
import glob
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import tokenizer as tokenizer_lib
from jaxca.tasks import base

INSTRUCTION = (
  'Solve the following math word problem. Reason step by step, then give the final answer '
  "as a number after '####'.\n\n{question}"
)
ANSWER_WIDTH = 32  # bytes of the normalised reference answer in a batch

_DIGITS = r'(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)'
_NUMBER = re.compile(
  r'(?<![\w.])(?P<sign>(?<![^\s(\[{=:$*])[-+\u2212])?\$?\s?'
  r'(?P<int>' + _DIGITS + r')?(?P<frac>\.\d+)?(?![\d])'
)
_FRACTION = re.compile(r'^\s*([-+\u2212]?)\s*(\d+)\s*/\s*(\d+)\s*$')


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Token ids the learner needs (from the tokenizer)."""

  pad_id: int
  eos_id: int
  size: int


def _numbers(text: str) -> list[fractions.Fraction]:
  """Every number in `text`, in order, as exact fractions."""
  out = []
  for m in _NUMBER.finditer(text):
    if m.group('int') is None and m.group('frac') is None:
      continue
    digits = (m.group('int') or '0').replace(',', '') + (m.group('frac') or '')
    value = fractions.Fraction(digits)
    out.append(-value if m.group('sign') in ('-', '\u2212') else value)
  return out


def _boxed(text: str) -> str | None:
  """Contents of the last `\\boxed{...}` (balanced braces), or None."""
  start = text.rfind('\\boxed')
  while start >= 0:
    i = text.find('{', start)
    if i >= 0 and not text[start + len('\\boxed') : i].strip():
      depth = 0
      for j in range(i, len(text)):
        depth += {'{': 1, '}': -1}.get(text[j], 0)
        if depth == 0:
          return text[i + 1 : j]
    start = text.rfind('\\boxed', 0, start)
  return None


def _parse_boxed(content: str) -> fractions.Fraction | None:
  content = content.replace('{,}', ',')
  content = re.sub(r'\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}', r'(\1)/(\2)', content)
  content = re.sub(r'\\text\s*\{([^{}]*)\}', r'\1', content)
  content = re.sub(r'\\[,!;: ]|\\%|%|\\\$|\$|\\left|\\right', '', content)
  simple = _FRACTION.match(content.replace('(', '').replace(')', ''))
  if simple and int(simple.group(3)) != 0:
    value = fractions.Fraction(int(simple.group(2)), int(simple.group(3)))
    return -value if simple.group(1) in ('-', '\u2212') else value
  found = _numbers(content)
  return found[-1] if found else None


def extract_answer(text: str) -> fractions.Fraction | None:
  """The final numeric answer of a response (rules in the module docstring), or None."""
  boxed = _boxed(text)
  if boxed is not None:
    return _parse_boxed(boxed)
  if '####' in text:
    found = _numbers(text[text.rfind('####') + 4 :])
    return found[0] if found else None
  found = _numbers(text)
  return found[-1] if found else None


def reference_answer(answer: str) -> fractions.Fraction:
  """The number after the last `####` of a GSM8K `answer` field.

  Raises:
    ValueError: no `####` or no number after it.
  """
  if '####' not in answer:
    raise ValueError(f'GSM8K answer without "####": {answer[-80:]!r}')
  found = _numbers(answer[answer.rfind('####') + 4 :])
  if not found:
    raise ValueError(f'No number after "####": {answer[-80:]!r}')
  return found[0]


def _to_bytes(value: fractions.Fraction) -> np.ndarray:
  text = str(value).encode()
  if len(text) > ANSWER_WIDTH:
    raise ValueError(f'Answer {value} needs more than {ANSWER_WIDTH} characters.')
  out = np.zeros(ANSWER_WIDTH, np.uint8)
  out[: len(text)] = np.frombuffer(text, np.uint8)
  return out


def _from_bytes(row: np.ndarray) -> fractions.Fraction:
  return fractions.Fraction(bytes(np.asarray(row, np.uint8)).rstrip(b'\0').decode())


def read_records(path: str) -> list[dict]:
  """Host side: the records of one JSONL (`.jsonl`, `.json` lines) or Parquet file."""
  if path.endswith('.parquet'):
    try:
      import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency
      raise ImportError('Reading Parquet needs pyarrow: pip install pyarrow.') from e
    return pq.read_table(path, columns=['question', 'answer']).to_pylist()
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _split_files(path: str) -> dict[str, str | None]:
  if os.path.isfile(path):
    return {'all': path}
  found = {}
  for split in ('train', 'test'):
    files = sorted(
      f
      for ext in ('jsonl', 'json', 'parquet')
      for f in glob.glob(os.path.join(path, '**', f'*{split}*.{ext}'), recursive=True)
    )
    if len(files) != 1:
      raise ValueError(
        f'Expected one *{split}*.jsonl|json|parquet file under {path!r}; found {files}.'
      )
    found[split] = files[0]
  return found


class Task:
  """GSM8K-format word problems for a tokenizer (implements `jaxca.tasks.base.Task`).

  Attributes:
    tokenizer: the `jaxca.tokenizer.Tokenizer`.
    vocab: `Vocab(pad_id, eos_id, size)` of the tokenizer.
    prompt_len: Lp (prompts are left-padded to it; longer ones are dropped).
    response_len: N, the number of new tokens sampled.
    instruction: prompt text, with `{question}` for the question.
    system: optional system message for a chat template.
    pad_token: the padding token (default the tokenizer's `pad_token`, else its EOS). It
      must never occur in a prompt (the learner masks prompts by `prompts != pad_id`);
      `encode` checks this. Llama 3 tokenizers, whose EOS ends every chat turn, need one,
      e.g. '<|finetune_right_pad_id|>'.
  """

  batch_keys = ('prompts', 'targets', 'answers')

  def __init__(
    self,
    tokenizer: tokenizer_lib.Tokenizer,
    *,
    prompt_len: int = 256,
    response_len: int = 256,
    instruction: str = INSTRUCTION,
    system: str | None = None,
    pad_token: str | None = None,
  ):
    if '{question}' not in instruction:
      raise ValueError('`instruction` must contain "{question}".')
    self.tokenizer = tokenizer
    pad_id = tokenizer.pad_id
    if pad_token:
      pad_id = tokenizer.token_id(pad_token)
      if pad_id is None:
        raise ValueError(f'`pad_token` {pad_token!r} is not a token of the tokenizer.')
    self.vocab = Vocab(pad_id, tokenizer.eos_id, tokenizer.vocab_size)
    self.prompt_len = int(prompt_len)
    self.response_len = int(response_len)
    self.instruction = instruction
    self.system = system
    self._newline = None

  # ------------------------------------------------------------------ host side: data

  def encode(self, records) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Records -> (arrays of `batch_keys`, indices of the records kept).

    prompts [P, Lp] int32 (left-padded), targets [P, N] int32 (the reference solution, EOS,
    then padding; cut at N), answers [P, ANSWER_WIDTH] uint8 (the normalised final number).
    Records whose prompt exceeds Lp are dropped.
    """
    tok, n, pad = self.tokenizer, self.response_len, self.vocab.pad_id
    prompts, targets, answers, kept = [], [], [], []
    for i, r in enumerate(records):
      ids = tok.prompt_ids(self.instruction.format(question=r['question']), system=self.system)
      if len(ids) > self.prompt_len:
        continue
      if pad in ids:
        raise ValueError(
          f'A prompt contains the padding token {tok.backend.id_to_token(pad)!r} (id {pad}); '
          'set `pad_token` to a token that never occurs in prompts.'
        )
      target = (tok.encode(r['answer'], add_special_tokens=False) + [tok.eos_id])[:n]
      prompts.append(ids)
      targets.append(target + [pad] * (n - len(target)))
      answers.append(_to_bytes(reference_answer(r['answer'])))
      kept.append(i)
    if not kept:
      raise ValueError(f'No record fits `prompt_len` {self.prompt_len}.')
    ids, _ = tokenizer_lib.left_pad(prompts, self.prompt_len, pad)
    arrays = dict(prompts=ids, targets=np.asarray(targets, np.int32), answers=np.stack(answers, 0))
    return arrays, np.asarray(kept)

  def load_data(
    self, data_dir: str, *, num_train: int | None = None, num_test: int | None = None, seed=0
  ) -> dict:
    """Host side: {'train': arrays, 'test': arrays} from local GSM8K-format files.

    Args:
      data_dir: a JSONL/Parquet file (split by a seeded permutation: the last `num_test`
        records, default 10%, are the test split) or a directory with one `*train*` and one
        `*test*` file.
      num_train, num_test: keep at most this many records of each split (None: all).
      seed: the permutation seed of a single file.
    """
    files = _split_files(data_dir)
    if 'all' in files:
      records = read_records(files['all'])
      order = np.random.default_rng(seed).permutation(len(records))
      n_test = num_test if num_test is not None else max(1, len(records) // 10)
      if not 0 < n_test < len(records):
        raise ValueError(f'Cannot hold out {n_test} of {len(records)} records for the test split.')
      splits = {
        'train': [records[i] for i in order[:-n_test]],
        'test': [records[i] for i in order[-n_test:]],
      }
    else:
      splits = {s: read_records(f) for s, f in files.items()}
    out = {}
    for split, limit in (('train', num_train), ('test', num_test)):
      arrays, _ = self.encode(splits[split])
      out[split] = {k: v[:limit] for k, v in arrays.items()}
    return out

  # ------------------------------------------------------------------ verifiers

  def _score_host(self, responses, mask, answers):
    shape = responses.shape[:-1]
    texts = self.tokenizer.decode_responses(
      responses.reshape(-1, responses.shape[-1]), mask.reshape(-1, mask.shape[-1])
    )
    refs = answers.reshape(-1, answers.shape[-1])
    ends = (responses == self.vocab.eos_id) & mask
    finished = ends.reshape(-1, ends.shape[-1]).any(-1)
    out = [
      float(done and extract_answer(t) == _from_bytes(a))
      for t, a, done in zip(texts, refs, finished)
    ]
    return np.asarray(out, np.float32).reshape(shape)

  def outcome(self, responses, mask, batch) -> jax.Array:
    """[B] float32: 1 iff the response ended (EOS) and its final number equals the reference."""
    responses = jnp.asarray(responses).astype(jnp.int32)
    mask = jnp.asarray(mask, jnp.bool_)
    answers = jnp.asarray(batch['answers']).astype(jnp.uint8)
    return jax.pure_callback(
      self._score_host,
      jax.ShapeDtypeStruct(responses.shape[:-1], jnp.float32),
      responses,
      mask,
      answers,
      vmap_method='broadcast_all',
    )

  def exact_match(self, responses, mask, batch) -> jax.Array:
    """[B] float32: 1 iff the response up to its first EOS is the reference solution."""
    responses = jnp.asarray(responses).astype(jnp.int32)
    mask = jnp.asarray(mask, jnp.bool_)
    targets = jnp.asarray(batch['targets']).astype(jnp.int32)
    eos = self.vocab.eos_id
    read = jnp.where(mask, responses, -1)  # a masked hole matches nothing
    seen = jnp.cumsum(read == eos, axis=-1) - (read == eos)
    before = seen == 0  # up to and including the first EOS
    target_before = (jnp.cumsum(targets == eos, axis=-1) - (targets == eos)) == 0
    same = jnp.where(before | target_before, read == targets, True)
    ended = jnp.any(read == eos, axis=-1)
    return (ended & jnp.all(same, axis=-1)).astype(jnp.float32)

  def newline_tokens(self) -> np.ndarray:
    """[V] bool: the tokens whose text contains a newline (step delimiters)."""
    if self._newline is None:
      backend = self.tokenizer.backend
      texts = backend.decode_batch([[i] for i in range(self.vocab.size)], skip_special_tokens=True)
      self._newline = np.asarray(['\n' in t for t in texts], bool)
    return self._newline

  def parse_steps(self, responses, mask) -> base.Steps:
    """Steps end at a newline token or at EOS; only tokens up to the first EOS count.

    All steps are `STEP_FILLER` (free text: no value is read from a step), S = N.
    """
    responses = jnp.asarray(responses).astype(jnp.int32)
    mask = jnp.asarray(mask, jnp.bool_)
    n = responses.shape[-1]
    eos = mask & (responses == self.vocab.eos_id)
    live = mask & ((jnp.cumsum(eos, axis=-1) - eos) == 0)
    closer = live & (jnp.asarray(self.newline_tokens())[responses] | eos)
    seg = jnp.cumsum(closer, axis=-1, dtype=jnp.int32) - closer
    step_ids = jnp.where(live, seg, -1)
    steps = jnp.arange(n, dtype=jnp.int32).reshape((1,) * (responses.ndim - 1) + (n, 1))
    valid = jnp.any(step_ids[..., None, :] == steps, axis=-1)
    kinds = jnp.where(valid, base.STEP_FILLER, base.STEP_NONE).astype(jnp.int32)
    return base.Steps(step_ids, kinds, jnp.full(valid.shape, -1, jnp.int32), valid)

  def step_correct(self, responses, mask, batch) -> jax.Array:
    """No per-step verifier for free-text solutions."""
    raise ValueError("The GSM8K task has no per-step verifier; use reward='outcome'.")

  def anchors(self, responses, mask, batch, steps):
    """None: free-text states do not repeat."""
    return None

  def eval_metrics(self, responses, mask, batch) -> Mapping[str, jax.Array]:
    """Per-row `final_answer` (outcome), `exact_match` and `finished` (emitted EOS)."""
    ended = jnp.any(jnp.asarray(mask) & (jnp.asarray(responses) == self.vocab.eos_id), axis=-1)
    return dict(
      final_answer=self.outcome(responses, mask, batch),
      exact_match=self.exact_match(responses, mask, batch),
      finished=ended.astype(jnp.float32),
    )


def make_task(cfg: Any = None, **kwargs) -> Task:
  """`Task` from a config / mapping / kwargs with `tokenizer` (a directory with
  tokenizer.json, or a `Tokenizer`) and optional `prompt_len`, `response_len`,
  `instruction`, `system`, `pad_token` (empty strings mean the defaults)."""
  options = {}
  if cfg is not None:
    options.update(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg))
  options.update(kwargs)
  options = {k: v for k, v in options.items() if v != '' or k == 'tokenizer'}
  tok = options.pop('tokenizer', None)
  if not tok:
    raise ValueError('The gsm8k task needs `tokenizer` (a directory with tokenizer.json).')
  if isinstance(tok, str):
    tok = tokenizer_lib.Tokenizer.load(tok)
  return Task(tok, **options)


# ---------------------------------------------------------------------- tiny data


_NAMES = ('Ada', 'Ben', 'Cleo', 'Dev', 'Eli', 'Fay')
_ITEMS = ('apples', 'books', 'coins', 'pens', 'stamps')


def generate(n: int, seed: int = 0) -> list[dict]:
  """`n` tiny GSM8K-format problems (two-step additions/products; some answers have
  thousands separators or decimals) for smoke runs and tests."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = (int(x) for x in rng.integers(2, 60, size=3))
    kind = int(rng.integers(0, 3))
    if kind == 0:
      q = f'{name} has {a} {item} and gets {b} more, then {c} more. How many {item} now?'
      s, total = a + b, a + b + c
      sol = f'{a} + {b} = <<{a}+{b}={s}>>{s}\n{s} + {c} = <<{s}+{c}={total}>>{total}'
      ans = str(total)
    elif kind == 1:
      q = f'{name} buys {a} boxes of {b * 37} {item} each. How many {item} in total?'
      total = a * b * 37
      sol = f'{a} * {b * 37} = <<{a}*{b * 37}={total}>>{total}'
      ans = f'{total:,}'
    else:
      q = f'{name} pays ${a}.50 for each of {b} {item}. How many dollars in total?'
      total = fractions.Fraction(2 * a + 1, 2) * b
      value = f'{float(total):.2f}'.rstrip('0').rstrip('.')
      sol = f'{a}.50 * {b} = <<{a}.50*{b}={value}>>{value}'
      ans = value
    out.append(dict(question=q, answer=f'{sol}\n#### {ans}'))
  return out


def write_jsonl(path: str, records) -> None:
  """Host side: writes records as JSON lines."""
  with open(path, 'w') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')
