"""Tests for jaxca.metrics: the jsonl/TensorBoard writer, resume truncation, summaries."""

import os
import tempfile

from absl.testing import absltest
import numpy as np

from jaxca import metrics


def _run(workdir, start=0.4, gain=0.1):
  w = metrics.Writer(workdir)
  w.write(10, dict(phase='warmstart', loss=1.0, eval_exact_match=0.2, time=1.0, cpu_time=1.0))
  for i, step in enumerate((0, 10, 20)):
    w.write(
      step,
      dict(
        phase='rl',
        loss=np.float32(0.5),
        eval_exact_match=start + i * gain,
        eval_final_answer=start + i * gain,
        time=2.0 + i,
        cpu_time=2.0 + i,
      ),
    )
  w.close()


class WriterTest(absltest.TestCase):
  def test_records_tensorboard_and_non_finite_values(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    w = metrics.Writer(workdir)
    rec = w.write(3, dict(phase='rl', loss=np.float32('nan'), n=np.int64(2), name='x'))
    w.close()
    self.assertEqual(rec, dict(step=3, phase='rl', loss='nan', n=2, name='x'))
    self.assertEqual(metrics.read(workdir), [rec])
    self.assertNotEmpty(os.listdir(os.path.join(workdir, 'tensorboard', 'rl')))
    # Flat arrays (one value per seed) become lists; anything else is an error.
    self.assertEqual(metrics.Writer(None).write(0, dict(x=np.arange(2.0)))['x'], [0.0, 1.0])
    with self.assertRaisesRegex(ValueError, 'scalar'):
      metrics.Writer(None).write(0, dict(x=np.zeros((2, 2))))

  def test_keep_drops_records_after_the_resume_point(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    _run(workdir)
    w = metrics.Writer(workdir, keep=lambda r: r['phase'] == 'warmstart' or r['step'] <= 10)
    self.assertEqual(
      [(r['phase'], r['step']) for r in w.kept], [('warmstart', 10), ('rl', 0), ('rl', 10)]
    )
    w.close()
    self.assertLen(metrics.read(workdir), 3)
    metrics.Writer(workdir).close()  # no predicate: a fresh file
    self.assertEmpty(metrics.read(workdir))

  def test_summaries_and_finiteness(self):
    self.assertEqual(metrics.summarize(dict(a=np.array([1.0, 3.0]), s='x')), dict(a=2.0))
    self.assertTrue(metrics.all_finite(dict(loss=np.ones(3)), ('loss', 'missing')))
    self.assertFalse(metrics.all_finite(dict(loss=np.array([1.0, np.inf])), ('loss',)))


if __name__ == '__main__':
  absltest.main()
