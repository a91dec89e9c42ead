"""A run's claim on its --output folder: outside the data, writable, and held by one run at a
time.

Two runs on one folder would both push, and each would write the other's summary, so `claim`
takes an exclusive flock on LOCK_FILE. The kernel drops it when the process ends, however it
ends (SIGKILL included), so a lock is never stale; the pid, host and start time written into
the file are for the message a second run shows, and a record left by a run that did not
finish cleanly (killed) is reported when the next run takes the folder over.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Callable, Iterator, List, Optional, Tuple

from fakedetect.components import errors
from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline import names

LOCK_FILE = 'run.lock'


class OutputError(errors.UserError):
  """The output folder cannot be used by this run; the message says what to do."""


def _written(config: config_lib.PipelineConfig) -> List[Tuple[str, str]]:
  """(what, local path) of everything a run writes: under --output, and the pipeline root."""
  inside = (names.METADATA_STORE, names.SUMMARY_FILE, names.SERVING_DIR, names.LOGS_DIR,
            names.REPORT_DIR, names.PIPELINE_ROOT_DIR, LOCK_FILE)
  places = [('--output', config.output_dir)]
  places += [('--output', config_lib.location(config.output_dir, name)) for name in inside]
  places.append(('runner.pipeline_root', config.pipeline_root))
  return [(what, path) for what, path in places if not config_lib.is_remote(path)]


def _within(path: str, folder: str) -> bool:
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def refuse_overlap(config: config_lib.PipelineConfig) -> None:
  """Refuses a run that would write into its own data: each run would ingest the last one's
  artifacts and logs, find more files every time and retrain. A data folder inside --output
  that the run never writes (output/my_images) is fine."""
  data = config.data.data_dir
  if config_lib.is_remote(data):
    return
  data_real = os.path.realpath(data)
  output_real = os.path.realpath(config.output_dir)
  for what, path in _written(config):
    if not _within(os.path.realpath(path), data_real):
      continue
    if what == '--output' and _within(output_real, data_real):
      where = 'is' if output_real == data_real else 'is inside'
      sibling = os.path.join(os.path.dirname(data_real), os.path.basename(data_real) + '-outputs')
      raise OutputError(f'--output {config.output_dir} {where} --data {data} ({data_real}): '
                        'every run would read its own artifacts and logs as images. Give an '
                        f'output folder outside the data, e.g. --output {sibling}.')
    raise OutputError(f'--data {data} holds {path}, which the run writes ({what}): every run '
                      'would change its own data. Move the images to a folder of their own, or '
                      f'point {what} elsewhere.')


def unwritable(folder: str, error: OSError) -> OutputError:
  """The message for an output folder the run cannot write into."""
  return OutputError(f'Cannot write into the output folder {os.path.abspath(folder)}: '
                     f'{error.strerror or error}. Give --output a folder you can write (e.g. '
                     'one under your home folder), or make this one writable.')


def _record() -> dict:
  return {'pid': os.getpid(), 'host': socket.gethostname(),
          'started': datetime.datetime.now().astimezone().isoformat(' ', 'seconds'),
          'command': ' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:300]}


def _gone(record: dict) -> bool:
  """The recorded process has ended (as far as this host can tell)."""
  if record.get('host') != socket.gethostname() or not isinstance(record.get('pid'), int):
    return False
  try:
    os.kill(record['pid'], 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # alive, another user's
    pass
  return False


def _describe(record: dict) -> str:
  if not record:
    return 'a run that has not said who it is yet'
  return (f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}"
          f"{' (' + record['command'] + ')' if record.get('command') else ''}")


def _holder(record: dict, lock_path: str) -> str:
  """Who holds the lock. A dead pid with the lock still held: a process it started (a Beam
  worker) lives on and may still write here."""
  if _gone(record):
    return (f'{_describe(record)}; that process has ended but a process it started still holds '
            f'{lock_path} (`fuser {lock_path}` names it: end it first)')
  return _describe(record)


def _read(lock) -> dict:
  lock.seek(0)
  try:
    return json.loads(lock.read() or '{}')
  except ValueError:  # a record cut short by a crash: still the run that left it
    return {'started': 'unknown (unreadable record)'}


@contextlib.contextmanager
def claim(folder: str, wait: bool = False,
          on_wait: Optional[Callable[[str], None]] = None) -> Iterator[Optional[str]]:
  """Holds `folder` for this run (created if missing). Yields a note when a run that was killed
  had held it, else None. Another live run holding it: OutputError naming it, or with `wait`,
  `on_wait(its description)` and blocks until it ends."""
  try:
    os.makedirs(folder, exist_ok=True)
    lock_path = os.path.join(os.path.abspath(folder), LOCK_FILE)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise unwritable(folder, e) from None
  with os.fdopen(fd, 'r+', encoding='utf-8') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(_read(lock), lock_path)
      if not wait:
        raise OutputError(
            f'Another fakedetect run is using the output folder {os.path.abspath(folder)}: '
            f'{holder}. Wait for it to end (or add --wait), or give this run another '
            '--output.') from None
      if on_wait:
        on_wait(holder)
      fcntl.flock(lock, fcntl.LOCK_EX)
    previous = _read(lock)
    note = None
    if previous:
      note = (f'Took over the output folder from a run that did not finish ({_describe(previous)}'
              '; killed?).')
    _write(lock, _record())
    try:
      yield note
    finally:
      _write(lock, None)  # a clean end: the next run has nothing to report
      fcntl.flock(lock, fcntl.LOCK_UN)


def _write(lock, record: Optional[dict]) -> None:
  lock.seek(0)
  lock.truncate()
  if record:
    lock.write(json.dumps(record))
  lock.flush()
  os.fsync(lock.fileno())
