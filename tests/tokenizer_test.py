"""jaxca.tokenizer on a tiny byte-level BPE tokenizer trained here (the comparison with
`transformers`' tokenizer and chat templates is in tests/crosscheck/)."""

import json

import numpy as np
import pytest

from jaxca import tokenizer as tokenizer_lib
from jaxca.tasks import gsm8k

CORPUS = [r['question'] + '\n' + r['answer'] for r in gsm8k.generate(200, seed=0)]


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
  return tokenizer_lib.train_tiny(str(tmp_path_factory.mktemp('tok')), CORPUS, vocab_size=400)


def test_round_trip_and_special_tokens(tok):
  text = 'Ada has 1,234 apples.\n#### 1,234 and $12.50'
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.vocab_size <= 400 and max(ids) < tok.vocab_size
  assert tok.eos_id == tok.token_id('<|im_end|>') and tok.pad_id == tok.token_id('<|endoftext|>')
  assert tok.bos_id is None
  assert len(tok.encode('apples apples apples')) < len('apples apples apples')  # merges learnt


def test_chat_template(tok):
  text = tok.apply_chat_template([{'role': 'user', 'content': 'Hi 2+2?'}])
  assert text == '<|im_start|>user\nHi 2+2?<|im_end|>\n<|im_start|>assistant\n'
  ids = tok.prompt_ids('Hi 2+2?', system='Be brief.')
  assert ids[0] == tok.token_id('<|im_start|>')
  assert tok.decode(ids, skip_special_tokens=False).startswith('<|im_start|>system\nBe brief.')
  assert ids.count(tok.token_id('<|im_end|>')) == 2


def test_no_template_and_generation_config(tmp_path):
  plain = tokenizer_lib.train_tiny(str(tmp_path), CORPUS, vocab_size=300, chat_template=None)
  assert plain.chat_template is None
  assert plain.prompt_ids('Ada has 3') == plain.encode('Ada has 3')
  assert plain.eos_id == plain.token_id('<|endoftext|>')
  with pytest.raises(ValueError, match='no chat template'):
    plain.apply_chat_template([{'role': 'user', 'content': 'x'}])
  # Several stop ids: the one the chat template writes is the EOS.
  config = json.loads((tmp_path / 'tokenizer_config.json').read_text())
  config['chat_template'] = tokenizer_lib.CHATML_TEMPLATE
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps(config))
  ids = [plain.token_id('<|endoftext|>'), plain.token_id('<|im_end|>')]
  (tmp_path / 'generation_config.json').write_text(json.dumps({'eos_token_id': ids}))
  assert tokenizer_lib.Tokenizer.load(str(tmp_path)).eos_id == ids[1]
  (tmp_path / 'tokenizer.json').unlink()
  with pytest.raises(FileNotFoundError, match='tokenizer.json'):
    tokenizer_lib.Tokenizer.load(str(tmp_path))


def test_decode_responses_cuts_at_eos_and_mask(tok):
  a = tok.encode('#### 12')
  b = tok.encode('7 + 5')
  n = max(len(a), len(b)) + 3
  rows = np.full((2, n), tok.pad_id)
  rows[0, : len(a)] = a
  rows[0, len(a)] = tok.eos_id
  rows[0, len(a) + 1] = tok.encode('9')[0]  # after EOS: ignored
  rows[1, : len(b)] = b
  mask = np.arange(n)[None] < np.array([[len(a) + 2], [len(b)]])
  assert tok.decode_responses(rows, mask) == ['#### 12', '7 + 5']


def test_left_pad():
  ids, mask = tokenizer_lib.left_pad([[5, 6], [], [1, 2, 3]], 3, 0)
  np.testing.assert_array_equal(ids, [[0, 5, 6], [0, 0, 0], [1, 2, 3]])
  np.testing.assert_array_equal(mask, [[0, 1, 1], [0, 0, 0], [1, 1, 1]])
  with pytest.raises(ValueError, match='more than'):
    tokenizer_lib.left_pad([[1, 2, 3, 4]], 3, 0)
