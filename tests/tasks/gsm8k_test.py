"""jaxca.tasks.gsm8k: answer extraction, data loading (JSONL, Parquet, split directories),
and the verifiers (host-side outcome under jit/vmap, pure-JAX exact match and steps)."""

import fractions

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxca import tasks
from jaxca import tokenizer as tokenizer_lib
from jaxca.tasks import base
from jaxca.tasks import gsm8k

F = fractions.Fraction
RECORDS = gsm8k.generate(60, seed=3)


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
  corpus = [r['question'] + '\n' + r['answer'] for r in gsm8k.generate(300, seed=0)]
  corpus += [gsm8k.INSTRUCTION] * 20
  return tokenizer_lib.train_tiny(str(tmp_path_factory.mktemp('tok')), corpus, vocab_size=400)


@pytest.fixture(scope='module')
def task(tok):
  return gsm8k.Task(tok, prompt_len=128, response_len=48)


@pytest.mark.parametrize(
  'text, want',
  [
    ('The answer is 1,234,567.', F(1234567)),
    ('so he pays $72.00 in total', F(72)),
    ('#### -72', F(-72)),
    ('#### 18.\nThen 5 more', F(18)),  # the number after the last ####, not the last number
    ('a #### 3\n b #### 4,000', F(4000)),
    ('x = -5 and 3-5 = 2', F(2)),  # a minus between numbers is not a sign
    ('it is \u22127', F(-7)),
    ('total 0.5 and then .25', F(1, 4)),
    ('12,34', F(34)),  # not a thousands separator
    ('+3 degrees', F(3)),
    (r'\boxed{\frac{7}{2}} then 9', F(7, 2)),  # boxed wins over later numbers
    (r'\boxed{-3/4}', F(-3, 4)),
    (r'we get \boxed{1{,}000}', F(1000)),
    (r'\boxed{\text{42 apples}}', F(42)),
    (r'\boxed{ \$18.50 }', F(37, 2)),
    (r'\boxed{1} and \boxed{ {2} }', F(2)),  # the last box, nested braces
    (r'\boxed{50\%}', F(50)),
    ('no numbers here', None),
    ('####', None),
    (r'\boxed{x}', None),
  ],
)
def test_extract_answer(text, want):
  assert gsm8k.extract_answer(text) == want


def test_reference_answer_and_bytes():
  assert gsm8k.reference_answer('a\nb\n#### 1,000') == 1000
  with pytest.raises(ValueError, match='without'):
    gsm8k.reference_answer('42')
  for value in (F(0), F(-12), F(7, 2), F(123456789)):
    assert gsm8k._from_bytes(gsm8k._to_bytes(value)) == value


def test_generated_records_are_consistent():
  for r in RECORDS:
    value = gsm8k.reference_answer(r['answer'])
    assert gsm8k.extract_answer(r['answer']) == value
    assert value > 0


def _write(tmp_path, task):
  gsm8k.write_jsonl(str(tmp_path / 'all.jsonl'), RECORDS)
  split = tmp_path / 'main'
  split.mkdir()
  pa = pytest.importorskip('pyarrow')
  import pyarrow.parquet as pq

  pq.write_table(pa.Table.from_pylist(RECORDS[:40]), str(split / 'train-00000-of-00001.parquet'))
  gsm8k.write_jsonl(str(split / 'test.jsonl'), RECORDS[40:])
  return str(tmp_path / 'all.jsonl'), str(split)


def test_load_data(tmp_path, task):
  single, directory = _write(tmp_path, task)
  data = task.load_data(single, num_test=10, seed=0)
  assert len(data['train']['prompts']) == 50 and len(data['test']['prompts']) == 10
  again = task.load_data(single, num_test=10, seed=0)
  np.testing.assert_array_equal(data['test']['answers'], again['test']['answers'])
  data = task.load_data(directory, num_train=32)
  assert len(data['train']['prompts']) == 32 and len(data['test']['prompts']) == 20
  d = data['train']
  assert d['prompts'].shape == (32, 128) and d['prompts'].dtype == np.int32
  assert d['targets'].shape == (32, 48) and d['answers'].shape == (32, gsm8k.ANSWER_WIDTH)
  # Row 0 is RECORDS[0] (no shuffling of a split file): prompt, target and answer.
  tok = task.tokenizer
  prompt = tok.decode(d['prompts'][0], skip_special_tokens=False).replace('<|endoftext|>', '')
  assert RECORDS[0]['question'] in prompt and prompt.endswith('<|im_start|>assistant\n')
  assert d['prompts'][0, 0] == tok.pad_id  # left-padded
  assert tok.decode(d['targets'][0]) == RECORDS[0]['answer']
  assert gsm8k._from_bytes(d['answers'][0]) == gsm8k.reference_answer(RECORDS[0]['answer'])
  gsm8k.write_jsonl(str(tmp_path / 'other_test.jsonl'), RECORDS[:3])
  with pytest.raises(ValueError, match='Expected one'):
    task.load_data(str(tmp_path))  # two *test* files
  # Prompts longer than prompt_len are dropped.
  short = gsm8k.Task(tok, prompt_len=40, response_len=8)
  with pytest.raises(ValueError, match='No record fits'):
    short.load_data(single)


def _responses(task, texts, *, eos=True, width=48):
  tok = task.tokenizer
  rows = np.full((len(texts), width), tok.pad_id, np.int32)
  mask = np.zeros((len(texts), width), bool)
  for i, t in enumerate(texts):
    ids = tok.encode(t, add_special_tokens=False) + ([tok.eos_id] if eos else [])
    rows[i, : len(ids)] = ids
    mask[i, : len(ids)] = True
  return rows, mask


def test_outcome_and_exact_match(task):
  arrays, _ = task.encode(RECORDS[:4])
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  ans = [gsm8k.reference_answer(r['answer']) for r in RECORDS[:4]]
  texts = [
    RECORDS[0]['answer'],  # the reference itself
    f'I think it is {ans[1]}.',  # right number, other words
    f'#### {ans[2] + 1}',  # wrong
    f'\\boxed{{{ans[3]}}}',
  ]
  rows, mask = _responses(task, texts)
  outcome = jax.jit(task.outcome)(rows, mask, batch)
  np.testing.assert_array_equal(outcome, [1, 1, 0, 1])
  np.testing.assert_array_equal(task.outcome(rows, mask, batch), outcome)  # without jit
  exact = jax.jit(task.exact_match)(rows, mask, batch)
  np.testing.assert_array_equal(exact, [1, 0, 0, 0])
  # No EOS: neither counts. A hole in the mask breaks the exact match.
  rows2, mask2 = _responses(task, texts, eos=False)
  np.testing.assert_array_equal(task.outcome(rows2, mask2, batch), [0, 0, 0, 0])
  np.testing.assert_array_equal(task.exact_match(rows2, mask2, batch), [0, 0, 0, 0])
  holed = mask.copy()
  holed[0, 1] = False
  assert float(task.exact_match(rows, holed, batch)[0]) == 0
  # Tokens after EOS are ignored by both.
  after = rows.copy()
  n0 = int(mask[0].sum())
  after[0, n0] = task.tokenizer.encode('9')[0]
  full = np.ones_like(mask)
  np.testing.assert_array_equal(task.exact_match(after, full, batch), [1, 0, 0, 0])
  np.testing.assert_array_equal(task.outcome(after, full, batch)[0], 1)
  # vmap over a leading axis (the callback sees the batched arrays).
  stacked = jax.tree.map(lambda x: jnp.stack([x, x]), (rows, mask, batch))
  out = jax.vmap(task.outcome)(*stacked)
  np.testing.assert_array_equal(out, [[1, 1, 0, 1]] * 2)


def test_exact_match_against_python_loop(task):
  rng = np.random.default_rng(0)
  eos, pad = task.vocab.eos_id, task.vocab.pad_id
  toks = np.array([5, 6, eos])
  responses = rng.choice(toks, size=(200, 6)).astype(np.int32)
  targets = rng.choice(toks, size=(200, 6)).astype(np.int32)
  targets[:100] = responses[:100]
  mask = rng.random((200, 6)) < 0.9
  got = np.asarray(jax.jit(task.exact_match)(responses, mask, {'targets': targets}))
  for b in range(200):
    read = [t if m else None for t, m in zip(responses[b], mask[b])]
    want = 0.0
    if eos in read:
      cut = read.index(eos) + 1
      t = list(targets[b])
      want = float(eos in t and t[: t.index(eos) + 1] == read[:cut])
    assert got[b] == want, (b, read, targets[b])
  assert 0 < got.sum() < 200
  del pad


def test_parse_steps(task):
  rows, mask = _responses(task, ['a 1\nb 2\nc', 'x'])
  steps = jax.jit(task.parse_steps)(rows, mask)
  nl = task.newline_tokens()
  assert nl[task.tokenizer.encode('\n')[0]] and not nl[task.tokenizer.encode('a')[0]]
  n0 = int(mask[0].sum())
  ids = np.asarray(steps.step_ids)
  assert ids[0, :n0].max() == 2 and ids[0, n0 - 1] == 2 and (ids[0, n0:] == -1).all()
  assert (ids[1, : int(mask[1].sum())] == 0).all()
  np.testing.assert_array_equal(np.asarray(steps.valid).sum(-1), [3, 1])
  assert set(np.unique(steps.kinds)) == {base.STEP_NONE, base.STEP_FILLER}
  with pytest.raises(ValueError, match='outcome'):
    task.step_correct(rows, mask, {})
  assert task.anchors(rows, mask, {}, steps) is None


def test_make_by_name(tmp_path, tok):
  with pytest.raises(ValueError, match='tokenizer'):
    tasks.make('gsm8k')
  tok_dir = tmp_path / 'tok'
  tokenizer_lib.train_tiny(str(tok_dir), ['1 2 3 apples'], vocab_size=280)
  task = tasks.make('gsm8k', {'tokenizer': str(tok_dir)}, response_len=16)
  assert task.response_len == 16 and task.prompt_len == 256
  assert task.vocab.eos_id == task.tokenizer.token_id('<|im_end|>')


def test_pad_token_must_not_occur_in_prompts(tok):
  # With the end-of-turn token as padding (as for a tokenizer without a pad token), chat
  # prompts contain it: refused with the fix.
  task = gsm8k.Task(tok, prompt_len=128, response_len=8, pad_token='<|im_end|>', system='Hi.')
  with pytest.raises(ValueError, match='pad_token'):
    task.encode(RECORDS[:2])
  with pytest.raises(ValueError, match='not a token'):
    gsm8k.Task(tok, pad_token='<|nope|>')
  ok = gsm8k.Task(
    tok, prompt_len=128, response_len=8, pad_token='<|im_start|>', instruction='{question}'
  )
  with pytest.raises(ValueError, match='pad_token'):  # every chat prompt starts with it
    ok.encode(RECORDS[:1])
