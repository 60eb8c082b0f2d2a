"""Slow, obviously correct plain-Python references for jaxca.tasks.arith (no jax import).

Token ids are passed in as `ids`, a dict with keys pad, bos, eq, step, eos, add,
sub, mul, offset, modulus (see `ids_of`), so this module does not import jaxca.
"""


def ids_of(vocab) -> dict:
  return dict(
    pad=vocab.pad_id,
    bos=vocab.bos_id,
    eq=vocab.eq_id,
    step=vocab.step_id,
    eos=vocab.eos_id,
    add=vocab.add_id,
    sub=vocab.sub_id,
    mul=vocab.mul_id,
    offset=vocab.num_offset,
    modulus=vocab.modulus,
  )


def chain(x0: int, ops: list, operands: list, modulus: int) -> list:
  """The values x_1..x_K of the chain x_i = (x_{i-1} op_i a_i) mod m."""
  out, x = [], x0
  for op, a in zip(ops, operands):
    if op == 'add':
      x = (x + a) % modulus
    elif op == 'sub':
      x = (x - a) % modulus
    elif op == 'mul':
      x = (x * a) % modulus
    else:
      raise ValueError(op)
    out.append(x)
  return out


def parse_prompt(prompt, ids) -> tuple:
  """BOS x0 op1 a1 ... opK aK = -> (x0, [op names], [operands])."""
  prompt = [int(t) for t in prompt]
  assert prompt[0] == ids['bos'] and prompt[-1] == ids['eq'], prompt
  names = {ids['add']: 'add', ids['sub']: 'sub', ids['mul']: 'mul'}
  x0 = prompt[1] - ids['offset']
  ops = [names[t] for t in prompt[2:-1:2]]
  operands = [t - ids['offset'] for t in prompt[3:-1:2]]
  return x0, ops, operands


def read(tokens, mask, ids) -> list:
  """The response as the verifiers read it: masked-out tokens are PAD; stop after the first EOS."""
  seq = []
  for t, m in zip(tokens, mask):
    tok = int(t) if m else ids['pad']
    seq.append(tok)
    if tok == ids['eos']:
      break
  return seq


def is_number(tok, ids) -> bool:
  return ids['offset'] <= tok < ids['offset'] + ids['modulus']


def outcome(tokens, mask, answer, num_steps, ids, require_format=True) -> float:
  seq = read(tokens, mask, ids)
  ans = int(answer) + ids['offset']
  if not seq or seq[-1] != ids['eos']:
    return 0.0
  if not require_format:
    return float(len(seq) >= 2 and seq[-2] == ans)
  if len(seq) != 2 * num_steps:
    return 0.0
  for j in range(num_steps):
    if not is_number(seq[2 * j], ids):
      return 0.0
    if j < num_steps - 1 and seq[2 * j + 1] != ids['step']:
      return 0.0
  return float(seq[-2] == ans)


def exact(tokens, mask, target, ids) -> float:
  return float(read(tokens, mask, ids) == [int(t) for t in target])


def steps(tokens, mask, intermediates, ids) -> tuple:
  """(correct list [K], positions list [K]) by splitting the read response at STEP/EOS."""
  seq = read(tokens, mask, ids)
  segments, cur = [], []
  for i, tok in enumerate(seq):
    if tok in (ids['step'], ids['eos']):
      segments.append((cur, i))
      cur = []
    else:
      cur.append(tok)
  valid_positions = [i for i in range(len(seq)) if mask[i]]
  last_valid = valid_positions[-1] if valid_positions else 0
  correct, positions = [], []
  for i, want in enumerate(intermediates):
    if i < len(segments):
      toks, end = segments[i]
      correct.append(float(toks == [int(want) + ids['offset']]))
      positions.append(end)
    else:
      correct.append(0.0)
      positions.append(last_valid)
  return correct, positions


def parse_steps(tokens, mask, ids, num_slots) -> tuple:
  """(step_ids [N], kinds [S], values [S]) by a loop: kinds 0 value, 2 malformed, -1 absent."""
  seq = read(tokens, mask, ids)
  n = len(tokens)
  step_ids = [-1] * n
  contents = []
  cur, step = [], 0
  for i, tok in enumerate(seq):
    if not mask[i]:
      continue
    step_ids[i] = step
    if tok in (ids['step'], ids['eos']):
      contents.append(cur)
      cur, step = [], step + 1
    else:
      cur.append(tok)
  if any(s == step for s in step_ids):  # an open last step
    contents.append(cur)
  kinds = [-1] * num_slots
  values = [-1] * num_slots
  for s, toks in enumerate(contents):
    if len(toks) == 1 and is_number(toks[0], ids):
      kinds[s], values[s] = 0, toks[0] - ids['offset']
    else:
      kinds[s] = 2
  return step_ids, kinds, values
