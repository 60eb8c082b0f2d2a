"""jaxca.tokenizer against `transformers`' tokenizer on a tiny tokenizer trained here: the
same ids and the same chat-template text (a ChatML template and one using the jinja features
Hugging Face templates rely on)."""

import pytest

pytest.importorskip(  # transformers' tokenizers load without torch, but the extra brings both
  'torch', reason='cross-check reference: pip install -e ".[crosscheck]" (CPU torch suffices)'
)
transformers = pytest.importorskip(
  'transformers', reason='cross-check reference: pip install -e ".[crosscheck]"'
)

from jaxca import tokenizer as tokenizer_lib  # noqa: E402
from jaxca.tasks import gsm8k  # noqa: E402

FANCY = (
  "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
  '{%- set rest = messages[1:] %}'
  "{%- else %}{%- set system = 'You are helpful.' %}{%- set rest = messages %}{%- endif %}"
  "{{ bos_token if bos_token else '' }}<|im_start|>system\n{{ system }}<|im_end|>\n"
  '{%- for m in rest %}'
  "{%- if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role') }}{%- endif %}"
  "\n<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>"
  '{%- if loop.last %}{% break %}{% endif %}'
  '{%- endfor %}\n'
  "{%- if add_generation_prompt %}<|im_start|>assistant {{ {'n': 1} | tojson }}\n{%- endif %}"
)
MESSAGES = [
  [{'role': 'user', 'content': 'Ada has 3 apples. How many?'}],
  [
    {'role': 'system', 'content': 'Answer with ####.'},
    {'role': 'user', 'content': '  2 + 2?  '},
    {'role': 'assistant', 'content': '#### 4'},
    {'role': 'user', 'content': 'And 1,000 * 3?'},
  ],
]


@pytest.mark.parametrize('template', ['chatml', 'fancy'])
def test_same_ids_and_chat_text(tmp_path, template):
  corpus = [r['question'] + '\n' + r['answer'] for r in gsm8k.generate(200, seed=0)]
  chat = tokenizer_lib.CHATML_TEMPLATE if template == 'chatml' else FANCY
  ours = tokenizer_lib.train_tiny(str(tmp_path), corpus, vocab_size=350, chat_template=chat)
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  for text in corpus[:20] + ['  spaces\tand\nnewlines  ', '$1,234.50 #### -7']:
    assert ours.encode(text) == theirs.encode(text)
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text))
  for messages in MESSAGES:
    for gen in (True, False):
      text = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
      assert ours.apply_chat_template(messages, add_generation_prompt=gen) == text
  ids = theirs.apply_chat_template(MESSAGES[0], tokenize=True, add_generation_prompt=True)
  ids = ids['input_ids'] if not isinstance(ids, list) else ids
  assert ours.prompt_ids(MESSAGES[0][0]['content']) == list(ids)
  assert ours.eos_id == theirs.convert_tokens_to_ids(theirs.eos_token)
  if template == 'fancy':
    with pytest.raises(Exception, match='bad role'):
      ours.apply_chat_template([{'role': 'tool', 'content': 'x'}])
