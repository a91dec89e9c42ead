"""A run's records, read back from ML Metadata: the one connection and lineage walk of the tools.

TFX records every run of an --output folder in its metadata.sqlite: one execution per node and
run, the artifacts each read and wrote (events keyed by the component's input or output key),
and the contexts that group them (`pipeline_run`: one run, named by its run id; `node`: one DAG
node, named `<pipeline>.<node id>`). The run summary, `fakedetect inspect`, `fakedetect models`
and the notebooks all read it through here, read-only, so a question such as "which run blessed
this model" has one answer. They find an artifact by node id (pipeline/names.py) and output key,
as pipeline.py wires them, never by folder: URIs are TFX's business.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from fakedetect.components import errors
from fakedetect.pipeline import names

Artifact = metadata_store_pb2.Artifact
_Event = metadata_store_pb2.Event
RUN_CONTEXT = 'pipeline_run'
NODE_CONTEXT = 'node'


class RunRecordsError(errors.UserError):
  """There is no run to read where the user pointed; the message says what to pass instead."""


def int_property(artifact: Optional[Artifact], name: str) -> Optional[int]:
  """An integer custom property TFX sets (`blessed`, `pushed`), or None when absent."""
  if artifact is None or name not in artifact.custom_properties:
    return None
  return artifact.custom_properties[name].int_value


def is_blessed(blessing: Optional[Artifact]) -> Optional[bool]:
  """A ModelBlessing's verdict; None when there is no blessing to read."""
  blessed = int_property(blessing, 'blessed')
  return None if blessed is None else blessed == 1


class RunRecords:
  """A read-only connection to one metadata.sqlite, and the lineage questions the tools ask."""

  def __init__(self, metadata_path: str):
    if not os.path.isfile(metadata_path):
      raise RunRecordsError(
          f'No run in {os.path.dirname(metadata_path)}: it has no {names.METADATA_STORE}. Pass '
          'the --output folder of a run, or run `fakedetect run` first.')
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    self.path = metadata_path
    self.store = metadata_store.MetadataStore(connection)

  @classmethod
  def of_output(cls, output_dir: str) -> 'RunRecords':
    """The records of a run's --output folder."""
    return cls(os.path.join(os.path.abspath(output_dir), names.METADATA_STORE))

  def latest_run(self) -> 'Run':
    runs = self.store.get_contexts_by_type(RUN_CONTEXT)
    if not runs:
      raise RunRecordsError(f'No pipeline run recorded in {self.path}: the run stopped before '
                            f'its first component. See its log in {names.LOGS_DIR}/, or run '
                            'again.')
    return Run(self, max(runs, key=lambda c: (c.create_time_since_epoch, c.id)))

  # -- Lineage ---------------------------------------------------------------------------------

  def _linked(self, execution_id: Optional[int], kind: int, key: str) -> List[Artifact]:
    if execution_id is None:
      return []
    ids = [e.artifact_id for e in self.store.get_events_by_execution_ids([execution_id])
           if e.type == kind and key in [s.key for s in e.path.steps if s.HasField('key')]]
    # get_artifacts_by_id does not keep the order asked: order by id, the order TFX wrote them.
    return sorted(self.store.get_artifacts_by_id(ids), key=lambda a: a.id) if ids else []

  def outputs(self, execution_id: Optional[int], key: str) -> List[Artifact]:
    """The artifacts an execution wrote under an output key ('evaluation', 'blessing', ...)."""
    return self._linked(execution_id, _Event.OUTPUT, key)

  def inputs(self, execution_id: Optional[int], key: str) -> List[Artifact]:
    """The artifacts an execution read under an input key ('model', 'model_blessing', ...)."""
    return self._linked(execution_id, _Event.INPUT, key)

  def output(self, execution_id: Optional[int], key: str) -> Optional[Artifact]:
    found = self.outputs(execution_id, key)
    return found[0] if found else None

  def input(self, execution_id: Optional[int], key: str) -> Optional[Artifact]:
    found = self.inputs(execution_id, key)
    return found[0] if found else None

  def producer(self, artifact: Optional[Artifact]) -> Optional[int]:
    """The id of the execution that wrote the artifact."""
    if artifact is None:
      return None
    events = self.store.get_events_by_artifact_ids([artifact.id])
    return next((e.execution_id for e in events if e.type == _Event.OUTPUT), None)

  def readers(self, artifact: Optional[Artifact]) -> List[int]:
    """The ids of the executions that read the artifact, oldest first."""
    if artifact is None:
      return []
    return sorted(e.execution_id for e in self.store.get_events_by_artifact_ids([artifact.id])
                  if e.type == _Event.INPUT)

  def run_of(self, execution_id: Optional[int]) -> Optional[str]:
    """The run id (the `pipeline_run` context's name) an execution belongs to."""
    if execution_id is None:
      return None
    contexts = self.store.get_contexts_by_execution(execution_id)
    types = self.store.get_context_types_by_id(list({c.type_id for c in contexts}))
    run_types = {t.id for t in types if t.name == RUN_CONTEXT}
    return next((c.name for c in contexts if c.type_id in run_types), None)

  def artifact_at(self, uri: str) -> Optional[Artifact]:
    """The artifact TFX recorded at a folder, e.g. an evaluation a user points at."""
    found = self.store.get_artifacts_by_uri(uri)
    return found[0] if found else None

  def artifacts_of_type(self, type_name: str) -> List[Artifact]:
    """Every artifact of a type, in every run ('PushedModel', ...); none before the type exists."""
    return self.store.get_artifacts_by_type(type_name)

  def pushes(self) -> Dict[str, Artifact]:
    """{version folder (real path): PushedModel artifact} of every model a Pusher of this
    folder's runs really pushed (custom properties `pushed` = 1, `pushed_destination`)."""
    found = {}
    for artifact in self.artifacts_of_type('PushedModel'):
      props = artifact.custom_properties
      if 'pushed_destination' in props and int_property(artifact, 'pushed') == 1:
        found[os.path.realpath(props['pushed_destination'].string_value)] = artifact
    return found

  def source_examples(self, execution_id: Optional[int]) -> Optional[Artifact]:
    """The ExampleGen's examples behind an execution's `examples` input: follows `examples`
    inputs upstream, e.g. Trainer -> Transform's transformed examples -> Transform -> the
    ExampleGen's examples (its producer reads none)."""
    examples = self.input(execution_id, 'examples')
    upstream = self.input(self.producer(examples), 'examples')
    while upstream is not None:
      examples, upstream = upstream, self.input(self.producer(upstream), 'examples')
    return examples

  def first_judge(self, execution_id: Optional[int]) -> Optional[int]:
    """The execution that judged the model first: follows `model_blessing` inputs upstream,
    e.g. Pusher -> the RobustnessGate's blessing -> the gate -> the Evaluator's blessing ->
    Evaluator (which reads none)."""
    upstream = self.producer(self.input(execution_id, 'model_blessing'))
    while upstream is not None:
      execution_id = upstream
      upstream = self.producer(self.input(execution_id, 'model_blessing'))
    return execution_id

  def gate_after(self, evaluation: Optional[Artifact]
                 ) -> Tuple[Optional[Artifact], Optional[Artifact]]:
    """The RobustnessGate's (robustness, blessing) for the model an evaluation judged: the
    evaluation's Evaluator -> its blessing -> the latest gate execution that read it."""
    blessing = self.output(self.producer(evaluation), 'blessing')
    for reader in reversed(self.readers(blessing)):
      robustness = self.output(reader, 'robustness')
      if robustness is not None:
        return robustness, self.output(reader, 'blessing')
    return None, None


class Run:
  """One pipeline run: the latest execution of each node in it, and what each wrote."""

  def __init__(self, records: RunRecords, context: metadata_store_pb2.Context):
    self.records = records
    self.run_id = context.name
    store = records.store
    node_type = store.get_context_type(NODE_CONTEXT).id
    self._by_node: Dict[str, metadata_store_pb2.Execution] = {}
    for execution in store.get_executions_by_context(context.id):
      for node in store.get_contexts_by_execution(execution.id):
        if node.type_id == node_type:
          node_id = node.name.split('.', 1)[-1]
          if node_id not in self._by_node or execution.id > self._by_node[node_id].id:
            self._by_node[node_id] = execution

  @property
  def node_ids(self) -> List[str]:
    """The nodes that ran (or were cached) in this run, in the order they started."""
    return sorted(self._by_node, key=lambda node: self._by_node[node].id)

  def execution_id(self, node_id: str) -> Optional[int]:
    execution = self._by_node.get(node_id)
    return execution.id if execution is not None else None

  def state(self, node_id: str) -> Optional[str]:
    """'complete', 'cached', 'failed', ... or None when the node did not run."""
    execution = self._by_node.get(node_id)
    if execution is None:
      return None
    return metadata_store_pb2.Execution.State.Name(execution.last_known_state).lower()

  def seconds(self, node_id: str) -> Optional[float]:
    """Wall time of the node's execution in this run (near zero when it was cached)."""
    execution = self._by_node.get(node_id)
    if execution is None:
      return None
    return (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000

  def artifacts(self, node_id: str, output_key: str) -> List[Artifact]:
    return self.records.outputs(self.execution_id(node_id), output_key)

  def artifact(self, node_id: str, output_key: str) -> Optional[Artifact]:
    """What a node wrote under an output key in this run, e.g. (names.EVALUATOR, 'evaluation')."""
    return self.records.output(self.execution_id(node_id), output_key)


@dataclasses.dataclass
class TrainingData:
  """What a pushed model was trained on: the run's ExampleGen examples and the Trainer's splits."""
  run_id: Optional[str]
  examples_uri: str  # <uri>/Split-<name>/ hold the split's gzipped TFRecords
  splits: List[str]


def training_data(model_dir: str) -> Optional[TrainingData]:
  """The examples a pushed version (`<output>/serving_model/<name>/<version>`) was trained on,
  from the records of the run folder it was pushed into: PushedModel -> Pusher -> its `model`
  -> Trainer -> `source_examples`. None when the model lies elsewhere (copied, or a folder the
  records do not know)."""
  version = os.path.realpath(model_dir)
  output_dir = os.path.dirname(os.path.dirname(os.path.dirname(version)))
  if not os.path.isfile(os.path.join(output_dir, names.METADATA_STORE)):
    return None
  records = RunRecords.of_output(output_dir)
  pushed = records.pushes().get(version)
  trainer = records.producer(records.input(records.producer(pushed), 'model'))
  examples = records.source_examples(trainer)
  if examples is None:
    return None
  (execution,) = records.store.get_executions_by_id([trainer])
  train_args = execution.custom_properties.get('train_args')
  # TFX's Trainer trains on the `train` split unless its train_args name others.
  splits = json.loads(train_args.string_value or '{}').get('splits') if train_args else None
  return TrainingData(records.run_of(trainer), examples.uri, splits or ['train'])


def latest_run(output_dir: str) -> Run:
  """The latest run recorded in a run's --output folder."""
  return RunRecords.of_output(output_dir).latest_run()
