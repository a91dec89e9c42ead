"""Runs the pipeline locally with BeamDagRunner, saying which component runs as it goes."""

import sys
import time
from typing import Callable, Optional

from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
from tfx.orchestration.beam.beam_dag_runner import PipelineNodeAsDoFn

from pipeline import pipeline as pipeline_lib
from pipeline.config import PipelineConfig

_STATE_WORDS = {
    metadata_store_pb2.Execution.CACHED: 'cached',
    metadata_store_pb2.Execution.COMPLETE: 'done',
    metadata_store_pb2.Execution.FAILED: 'FAILED',
}


def _say(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


class _ProgressNodeDoFn(PipelineNodeAsDoFn):
  """Announces each node as it starts and ends, with its time and whether it was cached."""

  started = time.monotonic()
  total = 0
  finished = 0

  def process(self, element, *signals):
    cls = _ProgressNodeDoFn
    elapsed = time.monotonic() - cls.started
    _say(f'[{elapsed:6.0f}s] {self._node_id} ...')
    begin = time.monotonic()
    super().process(element, *signals)
    cls.finished += 1
    state = self._last_state()
    _say(f'[{time.monotonic() - cls.started:6.0f}s] {self._node_id} {state} in '
         f'{time.monotonic() - begin:.0f}s ({cls.finished}/{cls.total})')

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


def run(config: PipelineConfig, on_start: Optional[Callable[[int], None]] = None) -> None:
  """Builds the DAG from the config and runs it to the end (cached steps are reused)."""
  tfx_pipeline = pipeline_lib.create_pipeline(config)
  _ProgressNodeDoFn.started = time.monotonic()
  _ProgressNodeDoFn.total = len(tfx_pipeline.components)
  _ProgressNodeDoFn.finished = 0
  if on_start:
    on_start(len(tfx_pipeline.components))
  ProgressBeamDagRunner().run(tfx_pipeline)
