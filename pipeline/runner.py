"""Runs the pipeline locally with BeamDagRunner, saying which component runs as it goes (and the
Trainer's and Tuner's epochs), or compiles it for Kubeflow Pipelines v2 / Vertex AI Pipelines with
KubeflowV2DagRunner."""

import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
import time
from typing import Callable, Optional, TextIO

from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
from tfx.orchestration.beam.beam_dag_runner import PipelineNodeAsDoFn

from fakedetect.components import errors
from fakedetect.components import progress
from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline import pipeline as pipeline_lib
from fakedetect.pipeline.config import PipelineConfig


_STATE_WORDS = {
    metadata_store_pb2.Execution.CACHED: 'cached',
    metadata_store_pb2.Execution.COMPLETE: 'done',
    metadata_store_pb2.Execution.FAILED: 'FAILED',
}


def _say(line: str) -> None:
  console = _ProgressNodeDoFn.console or sys.stderr
  console.write(line + '\n')  # one write: the epoch relay's thread writes here too
  console.flush()


def _stamp() -> str:
  return f'[{time.monotonic() - _ProgressNodeDoFn.started:6.0f}s]'


class _ProgressNodeDoFn(PipelineNodeAsDoFn):
  """Announces each node as it starts and ends, with its time and whether it was cached."""

  started = time.monotonic()
  total = 0
  finished = 0
  console = None  # where progress goes; None: stderr

  def process(self, element, *signals):
    cls = _ProgressNodeDoFn
    _say(f'{_stamp()} {self._node_id} ...')
    begin = time.monotonic()
    super().process(element, *signals)
    cls.finished += 1
    state = self._last_state()
    _say(f'{_stamp()} {self._node_id} {state} in {time.monotonic() - begin:.0f}s '
         f'({cls.finished}/{cls.total})')

  def _last_state(self) -> str:
    try:
      with metadata.Metadata(self._mlmd_connection_config) as m:
        context = m.store.get_context_by_type_and_name(
            'node', f'{self._pipeline_info.id}.{self._node_id}')
        if context is None:
          return 'done'
        executions = m.store.get_executions_by_context(context.id)
        if not executions:
          return 'done'
        latest = max(executions, key=lambda e: e.id)
        return _STATE_WORDS.get(latest.last_known_state, 'done')
    except Exception:  # pylint: disable=broad-except
      return 'done'  # progress reporting must never break a run


class ProgressBeamDagRunner(BeamDagRunner):
  _PIPELINE_NODE_DO_FN_CLS = _ProgressNodeDoFn


def _copy_lines(path: str, stop: threading.Event, poll_seconds: float) -> None:
  """Says each complete line appended to `path` until `stop`, then the rest."""
  with open(path, encoding='utf-8', errors='replace') as f:
    pending = ''
    while True:
      stopping = stop.is_set()  # read once more after the stop, for the last epoch's line
      pending += f.read()
      *lines, pending = pending.split('\n')
      for line in lines:
        _say(f'{_stamp()} {line}')
      if stopping:
        return
      stop.wait(poll_seconds)


@contextlib.contextmanager
def relayed_progress(folder: str, poll_seconds: float = 0.5):
  """Points module code at a progress file in `folder` (components/progress.py) and copies its
  lines to the console while the pipeline runs: the Trainer may run in another process."""
  fd, path = tempfile.mkstemp(prefix='.progress-', suffix='.log', dir=folder)
  os.close(fd)
  previous = os.environ.get(progress.ENV)
  os.environ[progress.ENV] = path
  stop = threading.Event()
  relay = threading.Thread(target=_copy_lines, args=(path, stop, poll_seconds), daemon=True,
                           name='progress-relay')
  relay.start()
  try:
    yield path
  finally:
    stop.set()
    relay.join()
    if previous is None:
      os.environ.pop(progress.ENV, None)
    else:
      os.environ[progress.ENV] = previous
    os.remove(path)


def run(config: PipelineConfig, on_start: Optional[Callable[[int], None]] = None,
        console: Optional[TextIO] = None, progress_dir: Optional[str] = None) -> None:
  """Builds the DAG from the config and runs it to the end (cached steps are reused).

  `progress_dir`: a local folder for the file that brings the Trainer's and Tuner's epoch lines
  to the console; None leaves them in the log.
  """
  tfx_pipeline = pipeline_lib.create_pipeline(config)
  _ProgressNodeDoFn.started = time.monotonic()
  _ProgressNodeDoFn.total = len(tfx_pipeline.components)
  _ProgressNodeDoFn.finished = 0
  _ProgressNodeDoFn.console = console
  if on_start:
    on_start(len(tfx_pipeline.components))
  with relayed_progress(progress_dir) if progress_dir else contextlib.nullcontext():
    ProgressBeamDagRunner().run(tfx_pipeline)


class CompileError(errors.UserError):
  """The pipeline cannot be compiled here; the message says what to install or change."""


def for_image(config: PipelineConfig) -> PipelineConfig:
  """The config as the image sees it: the curated schema at its path in the image."""
  if config.data.schema_dir == config_lib.DataConfig().schema_dir:
    data = dataclasses.replace(config.data, schema_dir=f'{config_lib.IMAGE_ROOT}/schema')
    config = dataclasses.replace(config, data=data)
  return config


def compile_kubeflow_v2(config: PipelineConfig, output: str, image: str) -> str:
  """Writes the KFP v2 PipelineJob JSON (Vertex AI Pipelines, Kubeflow Pipelines 2), offline.

  Every component runs in `image`, which must hold TFX 1.16 and this project (Dockerfile).
  """
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  experimental = tfx.orchestration.experimental
  if not hasattr(experimental, 'KubeflowV2DagRunner'):  # TFX leaves it out without kfp
    raise CompileError('Compiling for Kubeflow / Vertex AI needs kfp: '
                       'pip install "fakedetect[kubeflow]" (kfp 2.5.0).')
  tfx_pipeline = pipeline_lib.create_pipeline(for_image(config), for_kubeflow=True)
  output = os.path.abspath(output)
  runner = experimental.KubeflowV2DagRunner(
      config=experimental.KubeflowV2DagRunnerConfig(default_image=image),
      output_dir=os.path.dirname(output), output_filename=os.path.basename(output))
  runner.run(tfx_pipeline, write_out=True)
  return output
