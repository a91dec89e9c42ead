"""Epoch progress from the Trainer's and Tuner's module code to the user's console.

The module code runs wherever TFX puts it: in the `fakedetect run` process with the in-memory
runner, in another process, or in a pod on Kubeflow. So the channel is a file named by an
environment variable, which any local process can append to: `fakedetect run` sets it and copies
new lines to its console (pipeline/runner.py). Without it (Kubeflow, a notebook) the lines go to
the log. One line per epoch, never per batch, so logs and CI output stay readable.

No TensorFlow or Keras here: the orchestrating process imports this module for ENV only. The
Keras callback that calls `epoch_line` and `emit` is train.py's.
"""

import os
from typing import Mapping, Optional

from absl import logging

ENV = 'FAKEDETECT_PROGRESS'  # the path of the file progress lines are appended to

# Shown in this order when Keras reports them; the early stopping metric is added if missing.
SHOWN = ('loss', 'accuracy', 'val_loss', 'val_accuracy')


def duration(seconds: float) -> str:
  """42s, 3m05s, 1h02m: short enough for a line per epoch."""
  seconds = int(round(max(seconds, 0)))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def epoch_line(what: str, epoch: int, epochs: int, logs: Mapping[str, float],
               elapsed: float, monitor: Optional[str] = None) -> str:
  """`what epoch k/N: metrics, elapsed, time left`; the time left is at most the estimate, as
  early stopping may end sooner."""
  names = list(SHOWN) + ([monitor] if monitor and monitor not in SHOWN else [])
  metrics = ', '.join(f'{name} {float(logs[name]):.4f}' for name in names if name in logs)
  left = elapsed / max(epoch, 1) * max(epochs - epoch, 0)
  return (f'{what} epoch {epoch}/{epochs}: {metrics} ({duration(elapsed)} elapsed, '
          f'up to {duration(left)} left)')


def emit(line: str) -> None:
  """Appends the line to the file ENV names, else logs it. Progress must never break training:
  a file that cannot be written sends the line to the log instead."""
  path = os.environ.get(ENV)
  if path:
    try:
      with open(path, 'a', encoding='utf-8') as f:  # one write per line: O_APPEND keeps it whole
        f.write(line + '\n')
      return
    except OSError as e:
      logging.warning('Cannot write progress to %s (%s).', path, e)
  logging.info('%s', line)
