"""Host side: text <-> token ids for pretrained checkpoints, via the `tokenizers` library.

`Tokenizer.load(path)` reads a Hugging Face-format directory: `tokenizer.json` (required),
and where present `tokenizer_config.json` (special tokens, `chat_template`),
`chat_template.jinja` (newer checkpoints keep the template there) and
`generation_config.json` (the end-of-turn token(s) generation stops at). The chat template is
rendered with jinja2 in a sandbox, with the conventions Hugging Face checkpoints rely on
(`trim_blocks`, `lstrip_blocks`, `raise_exception`, `tojson`, the special tokens as
variables), and the rendered text is encoded without adding special tokens again.

`train_tiny(directory, corpus)` trains and saves a small byte-level BPE tokenizer with a
ChatML-style template: the tokenizer of smoke runs and tests (no download needed).
"""

import datetime
import json
import os
from typing import Sequence

import numpy as np

CHATML_TEMPLATE = (
  '{% for message in messages %}'
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
  '{% endfor %}'
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_SPECIAL_KEYS = ('bos_token', 'eos_token', 'pad_token', 'unk_token')


def _content(token):
  """A special token from tokenizer_config.json: a string or {'content': ...}."""
  if isinstance(token, dict):
    return token.get('content')
  return token


class Tokenizer:
  """A `tokenizers.Tokenizer` plus the special tokens and chat template of a checkpoint.

  Attributes:
    backend: the `tokenizers.Tokenizer`.
    chat_template: the jinja2 chat template, or None.
    special_tokens: {'bos_token': str | None, 'eos_token': ..., 'pad_token': ..., ...}.
    vocab_size: number of ids (with added tokens).
    eos_id: the id generation stops at (the end-of-turn token of a chat model).
    pad_id: the padding id (`pad_token`, else `eos_id`).
    bos_id: id of `bos_token`, or None.
  """

  def __init__(self, backend, *, chat_template=None, special_tokens=None, eos_id=None):
    self.backend = backend
    self.chat_template = chat_template
    self.special_tokens = {k: _content((special_tokens or {}).get(k)) for k in _SPECIAL_KEYS}
    self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
    ids = {k: self.token_id(v) for k, v in self.special_tokens.items()}
    self.bos_id = ids['bos_token']
    self.eos_id = eos_id if eos_id is not None else ids['eos_token']
    if self.eos_id is None:
      raise ValueError('The tokenizer defines no eos_token (and no generation eos_token_id).')
    self.pad_id = ids['pad_token'] if ids['pad_token'] is not None else self.eos_id

  @classmethod
  def load(cls, path: str) -> 'Tokenizer':
    """Reads the tokenizer files of the checkpoint directory `path` (see the module doc)."""
    from tokenizers import Tokenizer as Backend

    file = os.path.join(path, 'tokenizer.json')
    if not os.path.exists(file):
      raise FileNotFoundError(f'No tokenizer.json in {path!r}.')
    backend = Backend.from_file(file)
    config = _read_json(os.path.join(path, 'tokenizer_config.json'))
    template = config.get('chat_template')
    jinja = os.path.join(path, 'chat_template.jinja')
    if os.path.exists(jinja):
      with open(jinja) as f:
        template = f.read()
    if isinstance(template, list):  # [{'name': 'default', 'template': ...}, ...]
      template = {t['name']: t['template'] for t in template}.get('default')
    eos_id = _read_json(os.path.join(path, 'generation_config.json')).get('eos_token_id')
    if isinstance(eos_id, list):
      # Several stop tokens (e.g. end of text and end of turn): the sampler takes one, the
      # first that the chat template writes (the end of an assistant turn), else the first.
      written = [i for i in eos_id if template and backend.id_to_token(i) in template]
      eos_id = (written or eos_id or [None])[0]
    special = {k: config.get(k) for k in _SPECIAL_KEYS}
    return cls(backend, chat_template=template, special_tokens=special, eos_id=eos_id)

  def token_id(self, token: str | None) -> int | None:
    """The id of `token` (None for None or an unknown token)."""
    return None if token is None else self.backend.token_to_id(token)

  def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
    """Token ids of `text`."""
    return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

  def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
    """Text of `ids`."""
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def decode_responses(self, responses, mask) -> list[str]:
    """Texts of sampled responses `[B, N]` with `mask [B, N]`, each cut at its first EOS."""
    out = []
    for row, keep in zip(np.asarray(responses), np.asarray(mask, bool)):
      ids = row[keep]
      stop = np.flatnonzero(ids == self.eos_id)
      out.append(self.decode(ids[: stop[0]] if stop.size else ids))
    return out

  def apply_chat_template(self, messages, *, add_generation_prompt: bool = True) -> str:
    """The chat-formatted text of `messages` ([{'role': ..., 'content': ...}, ...])."""
    if self.chat_template is None:
      raise ValueError('This tokenizer has no chat template.')
    import jinja2.ext
    import jinja2.sandbox

    def raise_exception(message):
      raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
      return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
      )

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters['tojson'] = tojson
    env.globals['raise_exception'] = raise_exception
    env.globals['strftime_now'] = lambda fmt: datetime.datetime.now().strftime(fmt)
    variables = {k: v for k, v in self.special_tokens.items() if v is not None}
    return env.from_string(self.chat_template).render(
      messages=list(messages), add_generation_prompt=add_generation_prompt, **variables
    )

  def prompt_ids(self, text: str, *, system: str | None = None) -> list[int]:
    """Ids of a prompt: the chat template around `text` (a user turn, after an optional
    system turn) when there is one, else `text` with the tokenizer's own special tokens."""
    if self.chat_template is None:
      return self.encode(text)
    messages = ([{'role': 'system', 'content': system}] if system else []) + [
      {'role': 'user', 'content': text}
    ]
    return self.encode(self.apply_chat_template(messages), add_special_tokens=False)


def _read_json(file: str) -> dict:
  if not os.path.exists(file):
    return {}
  with open(file) as f:
    return json.load(f)


def left_pad(rows: Sequence[Sequence[int]], length: int, pad_id: int):
  """Left-pads id lists into `([P, length] int32 ids, [P, length] bool mask)`.

  Raises:
    ValueError: a row is longer than `length`.
  """
  ids = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f'Row {i} has {len(row)} tokens, more than `length` {length}.')
    if row:
      ids[i, length - len(row) :] = row
      mask[i, length - len(row) :] = True
  return ids, mask


def train_tiny(
  directory: str,
  corpus: Sequence[str],
  *,
  vocab_size: int = 300,
  chat_template: str | None = CHATML_TEMPLATE,
) -> Tokenizer:
  """Trains a byte-level BPE tokenizer on `corpus`, saves it in `directory`, loads it back.

  Special tokens `<|endoftext|>` (padding), `<|im_start|>`, `<|im_end|>` (end of turn, the
  EOS); `tokenizer_config.json` carries `chat_template` (ChatML by default; None for none).
  """
  from tokenizers import Tokenizer as Backend
  from tokenizers import decoders
  from tokenizers import models
  from tokenizers import pre_tokenizers
  from tokenizers import trainers

  special = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']
  backend = Backend(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=special,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  backend.train_from_iterator(list(corpus), trainer=trainer)
  os.makedirs(directory, exist_ok=True)
  backend.save(os.path.join(directory, 'tokenizer.json'))
  config = dict(
    tokenizer_class='PreTrainedTokenizerFast',
    eos_token='<|im_end|>' if chat_template else '<|endoftext|>',
    pad_token='<|endoftext|>',
    bos_token=None,
  )
  if chat_template:
    config['chat_template'] = chat_template
  with open(os.path.join(directory, 'tokenizer_config.json'), 'w') as f:
    json.dump(config, f, indent=2)
  return Tokenizer.load(directory)
