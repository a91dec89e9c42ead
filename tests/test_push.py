"""The Pusher's executor (components/push.py) on a real exported model: TFX's own Pusher executor
run as the pipeline runs it, a version appearing in the serving folder whole or not at all."""

import logging
import os
import shutil

import pytest

from tests import serving_helpers as helpers

_, NEW = (version for version, _ in helpers.VERSIONS)


@pytest.fixture
def push_request(pushed, tmp_path):
  """(input_dict, output_dict, exec_properties) as TFX hands them to the Pusher's executor: the
  Trainer's model (a real SavedModel under Format-Serving/), a blessing, the output artifact."""
  from tfx.proto import pusher_pb2  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'Trainer' / 'model')
  shutil.copytree(pushed['versions'][NEW], os.path.join(model.uri, 'Format-Serving'))
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'RobustnessGate' / 'blessing')
  blessing.set_int_custom_property('blessed', 1)
  pushed_model = standard_artifacts.PushedModel()
  pushed_model.uri = str(tmp_path / 'Pusher' / 'pushed_model')
  base = str(tmp_path / 'output' / 'serving_model' / 'fakedetect')
  destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=base))
  return ({'model': [model], 'model_blessing': [blessing]}, {'pushed_model': [pushed_model]},
          {'push_destination': proto_utils.proto_to_json(destination)})


def _push(request):
  from fakedetect.components import push  # pylint: disable=g-import-not-at-top
  push.Executor().Do(*request)
  return request[1]['pushed_model'][0]


def _base(request) -> str:
  import json  # pylint: disable=g-import-not-at-top
  return json.loads(request[2]['push_destination'])['filesystem']['base_directory']


def _files(folder: str):
  return sorted(os.path.relpath(os.path.join(d, f), folder)
                for d, _, names in os.walk(folder) for f in names)


def test_a_push_after_a_killed_one_removes_its_leftovers_and_moves_the_version_in_whole(
    push_request, caplog):
  from fakedetect import registry  # pylint: disable=g-import-not-at-top
  model_dir = os.path.join(push_request[0]['model'][0].uri, 'Format-Serving')
  base = _base(push_request)
  # A run killed as TFX's Pusher started its version folder: fingerprint.pb and nothing else.
  os.makedirs(os.path.join(base, '1700000000'))
  shutil.copy(os.path.join(model_dir, 'fingerprint.pb'), os.path.join(base, '1700000000'))
  # One killed halfway through a temporary copy, and a complete older version that must stay.
  shutil.copytree(os.path.join(model_dir, 'variables'),
                  os.path.join(base, '.tmp-k1ll3d', '1700000050', 'variables'))
  helpers.push(model_dir, base, 1600000000)
  with caplog.at_level(logging.WARNING):
    pushed_model = _push(push_request)
  version = pushed_model.get_string_custom_property('pushed_version')
  destination = pushed_model.get_string_custom_property('pushed_destination')
  assert pushed_model.get_int_custom_property('pushed') == 1
  assert destination == os.path.join(base, version) and version.isdigit()
  assert sorted(os.listdir(base)) == sorted(['1600000000', version])  # no .tmp-*, no 1700000000
  assert _files(destination) == _files(model_dir)
  assert [(v.version, v.complete) for v in registry.versions(base)] == [
      (1600000000, True), (int(version), True)]
  removed = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Removing')]
  assert len(removed) == 2 and any('1700000000: an incomplete version' in m for m in removed)
  assert any(".tmp-k1ll3d: an interrupted push's temporary folder" in m for m in removed)
  # TFX's archive copy is still made: the artifact's own folder holds the model too.
  assert _files(pushed_model.uri) == _files(model_dir)


def test_a_copy_interrupted_midway_leaves_no_version_folder(push_request, monkeypatch):
  from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
  base = _base(push_request)
  copied, seen_meanwhile = [], []
  real_copy = fileio.copy

  def copy_then_fail(src, dst, *args, **kwargs):
    if copied:  # what TF Serving polling the folder, or a SIGKILL, would find at this point
      seen_meanwhile.extend(os.listdir(base))
      raise OSError(f'disk gone while copying {src}')
    copied.append(os.path.relpath(dst, base))
    return real_copy(src, dst, *args, **kwargs)

  monkeypatch.setattr(fileio, 'copy', copy_then_fail)
  with pytest.raises(OSError, match='disk gone'):
    _push(push_request)
  # The first file went into a temporary folder; no integer-named folder existed meanwhile.
  assert len(copied) == 1 and copied[0].startswith('.tmp-')
  assert len(seen_meanwhile) == 1 and seen_meanwhile[0].startswith('.tmp-')
  assert os.listdir(base) == []  # and the failed push removed its temporary folder
  monkeypatch.setattr(fileio, 'copy', real_copy)
  pushed_model = _push(push_request)  # the next push goes through
  assert os.listdir(base) == [pushed_model.get_string_custom_property('pushed_version')]


def test_an_unblessed_model_is_not_pushed_and_leaves_nothing(push_request):
  push_request[0]['model_blessing'][0].set_int_custom_property('blessed', 0)
  pushed_model = _push(push_request)
  assert pushed_model.get_int_custom_property('pushed') == 0
  assert os.listdir(_base(push_request)) == []


def test_the_pipeline_pushes_with_this_executor():
  from fakedetect.components import push  # pylint: disable=g-import-not-at-top
  from fakedetect.pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.pipeline import names  # pylint: disable=g-import-not-at-top
  from fakedetect.pipeline import pipeline  # pylint: disable=g-import-not-at-top
  config = config_lib.PipelineConfig()
  pusher, = [n for n in pipeline.create_components(config) if n.id == names.PUSHER]
  assert pusher.executor_spec.executor_class is push.Executor
