"""The scripted PRM: every row of its scoring table on hand-written responses, a NumPy loop on
random responses (with and without jit), the noise variants, and the provider."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import prm as prm_lib
from jaxca.tasks import arith
from tests.reference import prm as ref

C, W, F = 0.6, -0.8, 0.9
TASK = arith.make_task(
  num_steps=3, modulus=10, ops='invertible', filler_rate=0.2, max_response_len=12
)
VOC = TASK.vocab
# x0 = 2, ops: +3, *7, -1  ->  truth 5, 5, 4.
PROMPT = VOC.encode('<bos> 2 + 3 * 7 - 1 =')


def encode(text, n=12):
  r = VOC.encode(text)
  out = np.zeros(n, np.int32)
  out[: len(r)] = r
  return out, np.arange(n) < len(r)


def score(text, **kw):
  r, m = encode(text)
  prm = prm_lib.scripted_prm(TASK, c=C, w=W, f=F, **kw)
  s = prm.score(None, PROMPT[None], r[None], m[None])[0]
  n = int(np.sum(np.asarray(TASK.parse_steps(r[None], m[None]).valid)))
  return np.asarray(s), n


class ScoringTableTest(parameterized.TestCase):
  @parameterized.named_parameters(
    # (response, PRM-B scores, PRM-A scores)
    ('all_correct', '5 ; 5 ; 4 <eos>', [C, C, C], [C, C, C]),
    ('first_wrong_rest_consistent', '6 ; 2 ; 1 <eos>', [C, C, C], [W, C, C]),
    ('middle_inconsistent', '5 ; 3 ; 2 <eos>', [C, W, C], [C, W, C]),
    ('extra_value_step', '5 ; 5 ; 4 ; 4 <eos>', [C, C, C, W], [C, C, C, W]),
    ('filler_anywhere', 'THINK ; 5 ; THINK ; 5 ; 4 <eos>', [F, C, F, C, C], [F, C, F, C, C]),
    ('malformed_empty_and_double', '5 ; ; 5 4 ; 4 <eos>', [C, W, W, W], [C, W, W, W]),
    ('premature_answer', '5 ; 5 <eos>', [C, W], [C, W]),
    ('premature_after_filler', '5 ; THINK <eos>', [C, W], [C, W]),
    ('truncated_no_penalty', '5 ; 5 ; THINK ; THINK ; 4', [C, C, F, F, C], [C, C, F, F, C]),
    ('truncated_partial_filler', '5 ; THINK', [C, F], [C, F]),
  )
  def test_row(self, text, want_b, want_a):
    for blind, want in ((True, want_b), (False, want_a)):
      got, n = score(text, blind_first=blind)
      self.assertEqual(n, len(want))
      np.testing.assert_allclose(got[:n], want, atol=1e-6)
      np.testing.assert_array_equal(got[n:], 0.0)

  def test_knobs(self):
    prm = prm_lib.scripted_prm(TASK, c=0.8, w=-0.3, f=0.5)
    r, m = encode('5 ; THINK ; 3 ; 4 <eos>')
    got = np.asarray(prm.score(None, PROMPT[None], r[None], m[None])[0, :4])
    np.testing.assert_allclose(got, [0.8, 0.5, -0.3, -0.3], atol=1e-6)  # 3 != 5*7%10; 4 != 3-1

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(True, False)
  def test_random_responses_vs_loop(self, blind):
    rng = np.random.default_rng(int(blind))
    b, n = 64, 12
    data = TASK.generate(rng, b)
    voc = dict(step=VOC.step_id, eos=VOC.eos_id, think=VOC.think_id, offset=VOC.num_offset,
               add=VOC.add_id, sub=VOC.sub_id)  # fmt: skip
    pool = np.array([VOC.step_id] * 4 + [VOC.eos_id, VOC.think_id, VOC.pad_id] + list(range(8, 18)))
    resp = rng.choice(pool, size=(b, n)).astype(np.int32)
    resp[: b // 2, :8] = data['targets'][: b // 2, :8]  # some well-formed prefixes
    lens = rng.integers(0, n + 1, size=b)
    mask = np.arange(n)[None] < lens[:, None]
    prm = prm_lib.scripted_prm(TASK, c=C, w=W, f=F, blind_first=blind)
    fn = self.variant(lambda p, r, m: prm.score(None, p, r, m))
    got = np.asarray(fn(data['prompts'], resp, mask))
    for i in range(b):
      want = ref.scripted_scores(data['prompts'][i], resp[i], mask[i], voc, 3, 10, C, W, F, blind)
      np.testing.assert_allclose(got[i, : len(want)], want, atol=1e-6, err_msg=str(i))
      np.testing.assert_array_equal(got[i, len(want) :], 0.0)


class NoiseTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.data = TASK.generate(rng, 32)
    self.resp = self.data['targets'].copy()
    self.mask = self.resp != VOC.pad_id
    self.clean = prm_lib.scripted_prm(TASK).score(None, self.data['prompts'], self.resp, self.mask)

  def test_consistent_noise_is_a_function_of_prompt_step_and_content(self):
    prm = prm_lib.scripted_prm(TASK, noise='consistent', noise_sigma=0.3)
    a = np.asarray(prm.score(None, self.data['prompts'], self.resp, self.mask))
    b = np.asarray(prm.score(None, self.data['prompts'], self.resp, self.mask, jax.random.key(3)))
    np.testing.assert_array_equal(a, b)
    valid = np.asarray(TASK.parse_steps(self.resp, self.mask).valid)
    noise = a - np.asarray(self.clean)
    self.assertGreater(np.std(noise[valid]), 0.1)
    np.testing.assert_array_equal(a[~valid], 0.0)
    self.assertTrue(np.all(np.abs(a) <= 1.0))
    # The same (prompt, step) duplicated in another row gets the same score.
    dup = np.asarray(
      prm.score(None, self.data['prompts'][[0, 0]], self.resp[[0, 0]], self.mask[[0, 0]])
    )
    np.testing.assert_array_equal(dup[0], dup[1])

  def test_fresh_noise_needs_a_key_and_varies(self):
    prm = prm_lib.scripted_prm(TASK, noise='fresh', noise_sigma=0.3)
    with self.assertRaisesRegex(ValueError, 'key'):
      prm.score(None, self.data['prompts'], self.resp, self.mask)
    a = prm.score(None, self.data['prompts'], self.resp, self.mask, jax.random.key(0))
    b = prm.score(None, self.data['prompts'], self.resp, self.mask, jax.random.key(1))
    self.assertFalse(np.allclose(a, b))
    with self.assertRaisesRegex(ValueError, 'noise'):
      prm_lib.scripted_prm(TASK, noise='gaussian')

  def test_provider_fills_step_rewards(self):
    class Ctx:
      batch = dict(prompts=jnp.asarray(self.data['prompts']))
      responses = jnp.asarray(self.resp)
      mask = jnp.asarray(self.mask)
      key = None

    out = prm_lib.provider(prm_lib.scripted_prm(TASK))(Ctx())
    np.testing.assert_array_equal(out['step_rewards'], self.clean)

  def test_step_checks_on_targets(self):
    chk = prm_lib.step_checks(TASK, self.data['prompts'], self.resp, self.mask)
    n_val = np.sum(np.asarray(chk.value_index) >= 0, axis=-1)
    np.testing.assert_array_equal(n_val, 3)
    np.testing.assert_array_equal(np.sum(np.asarray(chk.local_ok), -1), 3)
    np.testing.assert_array_equal(np.sum(np.asarray(chk.global_ok), -1), 3)
    self.assertFalse(np.any(np.asarray(chk.premature)))


if __name__ == '__main__':
  absltest.main()
