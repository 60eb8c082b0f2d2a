"""jaxca.tree_sampling: each leaf equals sampling its path alone (no cache) with the same keys."""

import functools

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxca import networks
from jaxca import tree_sampling
from jaxca.credit import tree

VOCAB, EOS, PAD, SEP = 7, 6, 0, 3
P, LP = 2, 4


@functools.cache
def _setup():
  cfg = ml_collections.ConfigDict(
    dict(width=32, depth=1, num_heads=4, max_len=20, dtype='float32', value_head=False)
  )
  policy = networks.make_policy(cfg, vocab_size=VOCAB)
  params = jax.jit(policy.init)(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (P, LP), 1, EOS)
  prompt_mask = jnp.arange(LP)[None, :] >= jnp.array([0, 2])[:, None]
  return policy, params, jnp.where(prompt_mask, tokens, PAD), prompt_mask


@functools.cache
def _tree_fn(branching, segment_len, branch_at):
  policy = _setup()[0]
  fn = functools.partial(
    tree_sampling.sample_tree,
    policy,
    branching=branching,
    segment_len=segment_len,
    eos_id=EOS,
    pad_id=PAD,
    branch_at=branch_at,
    sep_id=SEP if branch_at == 'step' else None,
  )
  return jax.jit(fn)


def _path_alone(key, p, leaf, branching, segment_len, branch_at, temperature=1.0):
  """One path, one token at a time, the full forward pass every step (no cache)."""
  policy, params, prompts, prompt_mask = _setup()
  apply = jax.jit(policy.apply)
  width = LP + sum(segment_len)
  toks = np.zeros(width, np.int32)
  valid = np.zeros(width, bool)
  toks[:LP], valid[:LP] = np.asarray(prompts[p]), np.asarray(prompt_mask[p])
  used = LP
  path = tree.leaf_paths(branching)[leaf]
  out_t, out_lp, out_node = [], [], []
  done = False
  for d in range(len(branching)):
    node_key = jax.random.fold_in(jax.random.fold_in(key, p), int(path[d]))
    chain = []  # (token, logp, entropy)
    for k in range(segment_len[d]):
      if done:
        break
      logits = apply(params, jnp.asarray(toks[None]), jnp.asarray(valid[None])).logits[0]
      last = int(np.flatnonzero(valid)[-1])
      scaled = logits[last] / temperature
      tok = int(jax.random.categorical(jax.random.fold_in(node_key, k), scaled))
      logp = np.asarray(jax.nn.log_softmax(scaled))
      chain.append((tok, float(logp[tok]), float(-(np.exp(logp) * logp).sum())))
      toks[used + k], valid[used + k] = tok, True
      done = tok == EOS
      if branch_at == 'step' and tok == SEP:
        break  # the step ends; the path goes on at the next level
    keep = len(chain)
    if branch_at in ('entropy', 'surprisal') and d < len(branching) - 1:
      scores = [c[2] if branch_at == 'entropy' else -c[1] for c in chain]
      cands = list(range(1, len(chain)))
      if cands:
        keep = max(cands, key=lambda j: (scores[j], -j))  # first maximum, like argmax
        done = False
      else:
        done = True
      valid[used + keep : used + segment_len[d]] = False
    for c in chain[:keep]:
      out_t.append(c[0])
      out_lp.append(c[1])
      out_node.append(int(path[d]))
    # the next level's tokens go after the kept ones (same positions, no gap needed)
    toks[used + keep :] = 0
    valid[used + keep :] = False
    used += keep
  return out_t, out_lp, out_node


class TreeSamplerTest(parameterized.TestCase):
  @parameterized.parameters(
    ((2, 2), (3, 3), 'fixed'),
    ((2, 2, 2), (3, 2, 3), 'step'),
    ((2, 3), (4, 2), 'entropy'),
    ((3, 2), (3, 3), 'surprisal'),
  )
  def test_each_leaf_equals_its_path_alone(self, branching, segment_len, branch_at):
    _, params, prompts, prompt_mask = _setup()
    key = jax.random.key(7)
    s = _tree_fn(branching, segment_len, branch_at)(params, key, prompts, prompt_mask)
    leaves = int(np.prod(branching))
    mask = np.asarray(s.mask)
    for p in range(P):
      for leaf in range(leaves):
        row = p * leaves + leaf
        want_t, want_lp, want_node = _path_alone(key, p, leaf, branching, segment_len, branch_at)
        n = len(want_t)
        self.assertEqual(int(s.lengths[row]), n)
        np.testing.assert_array_equal(mask[row], np.arange(mask.shape[1]) < n)
        np.testing.assert_array_equal(np.asarray(s.responses[row, :n]), want_t)
        np.testing.assert_allclose(np.asarray(s.log_probs[row, :n]), want_lp, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(s.node_ids[row, :n]), want_node)
        np.testing.assert_array_equal(np.asarray(s.node_ids[row, n:]), -1)

  def test_log_probs_match_recomputed_policy_and_structure(self):
    policy, params, prompts, prompt_mask = _setup()
    branching, segment_len = (2, 3), (4, 2)
    s = _tree_fn(branching, segment_len, 'entropy')(params, jax.random.key(3), prompts, prompt_mask)
    logits = jax.jit(policy.apply)(params, s.tokens, s.valid).logits
    recomputed = networks.response_log_probs(logits, s.tokens, LP)
    m = np.asarray(s.mask)
    np.testing.assert_allclose(np.asarray(s.log_probs)[m], np.asarray(recomputed)[m], atol=1e-4)
    np.testing.assert_array_equal(s.parents, tree.complete_tree(branching))
    # siblings share their parent's kept tokens; generated counts every sampled token
    self.assertTrue(np.all(np.asarray(s.generated) >= np.asarray(s.lengths).reshape(P, -1).max(1)))
    nv = np.asarray(s.node_valid)
    ids = np.asarray(s.node_ids).reshape(P, -1)
    for p in range(P):
      seen = set(ids[p][ids[p] >= 0].tolist()) | {0}
      np.testing.assert_array_equal(np.flatnonzero(nv[p]), sorted(seen))

  def test_vmaps_over_prompts(self):
    _, params, prompts, prompt_mask = _setup()
    fn = _tree_fn((2, 2), (3, 3), 'fixed')
    key = jax.random.key(2)
    both = fn(params, key, prompts, prompt_mask)
    one = jax.vmap(lambda pr, pm: fn(params, key, pr[None], pm[None]).responses)(
      prompts, prompt_mask
    )
    # prompt p of the batch uses fold_in(key, p); alone, each prompt is prompt 0
    np.testing.assert_array_equal(one[0], np.asarray(both.responses)[:4])

  def test_bad_arguments(self):
    policy, params, prompts, prompt_mask = _setup()

    def sample(**kw):
      return tree_sampling.sample_tree(
        policy, params, jax.random.key(0), prompts, prompt_mask, eos_id=EOS, pad_id=PAD, **kw
      )

    with pytest.raises(ValueError, match='segment_len'):
      sample(branching=(2, 2), segment_len=(3,))
    with pytest.raises(ValueError, match='branch_at'):
      sample(branching=(2,), segment_len=(3,), branch_at='random')
    with pytest.raises(ValueError, match='sep_id'):
      sample(branching=(2,), segment_len=(3,), branch_at='step')
    with pytest.raises(ValueError, match='max_len'):
      sample(branching=(2,), segment_len=(30,))
