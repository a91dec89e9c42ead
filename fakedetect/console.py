"""Where a run's output goes: TFX, Beam and TensorFlow logging and the stdout/stderr of every
process into the run's log file; progress lines and results to the console."""

import contextlib
import logging
import os
import sys
import time
import warnings

from fakedetect.pipeline import names


def log_to_file(output_dir: str) -> str:
  """Sends absl/TFX/Beam logging to a file so the console keeps to progress and results."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  log_dir = os.path.join(os.path.abspath(output_dir), names.LOGS_DIR)
  os.makedirs(log_dir, exist_ok=True)
  path = os.path.join(log_dir, time.strftime('run-%Y%m%d-%H%M%S.log'))
  handler = logging.FileHandler(path, encoding='utf-8')
  handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  root = logging.getLogger()
  for existing in list(root.handlers):
    root.removeHandler(existing)
  root.addHandler(handler)
  root.setLevel(logging.INFO)
  # Library warnings (TFMA's divide-by-zero on empty slices, deprecations) go to the log too.
  logging.captureWarnings(True)
  warnings.simplefilter('default')
  tf_logger = logging.getLogger('tensorflow')
  for existing in list(tf_logger.handlers):
    tf_logger.removeHandler(existing)
  tf_logger.propagate = True
  absl_logging.use_absl_handler = lambda: None
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.get_absl_handler().setLevel(logging.CRITICAL + 1)
  return path


@contextlib.contextmanager
def output_to(path: str):
  """Sends stdout and stderr, this process's and its children's (TFX's wheel builds, Keras' epoch
  lines, Beam's worker processes), to the log file; yields the console for progress lines."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = {fd: os.dup(fd) for fd in (1, 2)}
  console = os.fdopen(os.dup(saved[2]), 'w', buffering=1, encoding='utf-8')
  with open(path, 'a', encoding='utf-8') as log:
    for fd in saved:
      os.dup2(log.fileno(), fd)
    try:
      yield console
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      for fd, copy in saved.items():
        os.dup2(copy, fd)
        os.close(copy)
      console.close()
