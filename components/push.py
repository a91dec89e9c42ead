"""The Pusher, whose executor makes a model version appear in the serving folder whole or not at
all.

TFX's Pusher copies the model file by file into <base>/<unix time>/, saved_model.pb last (TF
Serving's "ready" mark). A run killed meanwhile leaves a version folder that never completes (only
fingerprint.pb, say): TF Serving keeps failing to load it and `fakedetect models` lists it forever.
This executor, TFX's own with its copy redirected:
  a local base folder: TFX copies into a temporary folder beside the versions,
      <base>/.tmp-XXXX/<version>/ (not an integer, so TF Serving ignores it), and the finished
      version is renamed into <base>/<version> (one rename on one filesystem: atomic);
  a remote one (gs://...), where a rename is a copy: TFX's copy as it is, saved_model.pb last;
and, before either, it removes what interrupted pushes left (temporary folders, integer version
folders without saved_model.pb), saying so in the log. One push at a time per serving folder is
the run lock's job (one run per output folder). The PushedModel artifact records the final
folder in `pushed_destination` and the version in `pushed_version`, as TFX's does.
"""

import os
import shutil
import tempfile
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from fakedetect.components.image_example_gen.folders import is_remote

TEMP_PREFIX = '.tmp-'  # a temporary folder's name starts so: never an integer, never served
READY_FILE = 'saved_model.pb'  # copied last: a version folder without it is incomplete


def remove_leftovers(base: str) -> List[str]:
  """Removes what interrupted pushes left in `base`; returns the paths removed."""
  if not fileio.isdir(base):
    return []
  removed = []
  for name in sorted(n.rstrip('/') for n in fileio.listdir(base)):
    path = os.path.join(base, name)
    if name.startswith(TEMP_PREFIX):
      why = "an interrupted push's temporary folder"
    elif name.isdigit() and not fileio.exists(os.path.join(path, READY_FILE)):
      why = f'an incomplete version (no {READY_FILE}) an interrupted push left'
    else:
      continue
    logging.warning('Removing %s: %s; TF Serving never served it.', path, why)
    fileio.rmtree(path)
    removed.append(path)
  return removed


class Executor(pusher_executor.Executor):
  """TFX's Pusher executor, pushing each version atomically (see the module docstring)."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    key = standard_component_specs.PUSH_DESTINATION_KEY
    destination = proto_utils.json_to_proto(exec_properties[key], pusher_pb2.PushDestination())
    base = destination.filesystem.base_directory
    if not base:  # not a filesystem push: TFX's own error
      return super().Do(input_dict, output_dict, exec_properties)
    remove_leftovers(base)
    if is_remote(base):
      return super().Do(input_dict, output_dict, exec_properties)
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base)
    try:
      destination.filesystem.base_directory = staging
      super().Do(input_dict, output_dict,
                 dict(exec_properties, **{key: proto_utils.proto_to_json(destination)}))
      model_push = artifact_utils.get_single_instance(
          output_dict[standard_component_specs.PUSHED_MODEL_KEY])
      if model_push.get_int_custom_property('pushed') != 1:
        return None  # not blessed: nothing was copied
      version = model_push.get_string_custom_property('pushed_version')
      serving_path = os.path.join(base, version)
      if os.path.exists(serving_path):  # as TFX: a version is never overwritten
        logging.info('Destination directory %s already exists, skipping current push.',
                     serving_path)
      else:
        os.rename(os.path.join(staging, version), serving_path)
        logging.info('Model version %s moved into place: %s.', version, serving_path)
      self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
    return None


class Pusher(pusher_component.Pusher):
  """TFX's Pusher running this module's Executor: TFX's way to change a component's executor
  (its `custom_executor_spec` argument is deprecated and says so in every run's log)."""
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
