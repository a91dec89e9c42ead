"""Ingestion under misuse (issue #16): relabelled folders are read again, nothing is read from
outside the data folder, one byte limit everywhere, class folders as users name them.

Real folders, real files and links, the real executor (and once a real TFX pipeline with its
cache); nothing of the ExampleGen is mocked.
"""

import json
import os

import pytest

from tests.test_image_example_gen import _image, _read_examples, _run, _write

TRAIN_ONLY = json.dumps({'train': 1})


def _fingerprint(data, **exec_properties):
  """What TFX's cache compares: the Driver's input fingerprint of the folder."""
  from fakedetect.components.image_example_gen import component  # pylint: disable=g-import-not-at-top
  properties = dict({'data_dir': str(data)}, **exec_properties)
  return component.Driver(None).resolve_exec_properties(properties, None, None)[
      'input_fingerprint']


# --- item 1: any change of path, label or content invalidates the ingest cache ------------------

def test_fingerprint_changes_when_a_file_moves_to_the_other_class(tmp_path):
  data = tmp_path / 'data'
  for i in range(3):
    _write(data, f'real/r{i}.png', _image(i, 'PNG'))
    _write(data, f'fake/f{i}.png', _image(10 + i, 'PNG'))
  before = _fingerprint(data)
  assert _fingerprint(data) == before  # an untouched folder: the cache is reused
  os.rename(data / 'real' / 'r0.png', data / 'fake' / 'r0.png')  # mv: same count, bytes, mtime
  moved = _fingerprint(data)
  assert moved != before
  os.rename(data / 'fake' / 'r0.png', data / 'real' / 'r0.png')
  assert _fingerprint(data) == before  # moved back: the same folder again


def test_fingerprint_changes_when_a_manifest_label_is_edited(tmp_path):
  data = tmp_path / 'data'
  _write(data, 'imgs/a.png', _image(1, 'PNG'))
  _write(data, 'imgs/b.png', _image(2, 'PNG'))
  manifest = data / 'labels.csv'
  manifest.write_text('path,label\nimgs/a.png,real\nimgs/b.png,fake\n')
  before = _fingerprint(data)
  assert _fingerprint(data) == before
  stat = os.stat(manifest)
  manifest.write_text('path,label\nimgs/a.png,fake\nimgs/b.png,real\n')  # same size
  os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
  assert _fingerprint(data) != before


def test_a_relabelled_folder_is_ingested_again_and_an_untouched_one_is_cached(tmp_path):
  """A real TFX pipeline with its cache on, three times: as it is, again, after a `mv`."""
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import ImageExampleGen  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  for i in range(4):
    _write(data, f'real/r{i}.png', _image(20 + i, 'PNG', 8, 8))
    _write(data, f'fake/f{i}.png', _image(30 + i, 'PNG', 8, 8))
  connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
      str(tmp_path / 'mlmd.sqlite'))

  def run():
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name='relabel', pipeline_root=str(tmp_path / 'root'), enable_cache=True,
        components=[ImageExampleGen(data_dir=str(data), split_ratios={'train': 1})],
        metadata_connection_config=connection))
    return metadata_store.MetadataStore(connection).get_artifacts_by_type('Examples')

  assert len(run()) == 1
  assert len(run()) == 1  # unchanged: cached, no new examples
  os.rename(data / 'real' / 'r0.png', data / 'fake' / 'r0.png')
  first, latest = sorted(run(), key=lambda artifact: artifact.id)
  labels = {}
  for proto in (first, latest):
    examples = standard_artifacts.Examples()
    examples.set_mlmd_artifact(proto)
    labels[proto.id] = {row[features.PATH_KEY].decode(): int(row[features.LABEL_KEY])
                        for row in _read_examples(examples)['train']}
  assert labels[first.id]['real/r0.png'] == features.REAL
  assert 'real/r0.png' not in labels[latest.id]
  assert labels[latest.id]['fake/r0.png'] == features.FAKE


# --- item 4 and 12c: nothing is read from outside the data folder -------------------------------

def test_manifest_paths_leaving_the_folder_are_quarantined_not_read(tmp_path):
  data, other = tmp_path / 'data', tmp_path / 'other'
  _write(data, 'imgs/a.png', _image(1, 'PNG'))
  _write(data, 'imgs/b.png', _image(2, 'PNG'))
  _write(data, 'imgs/c.png', _image(3, 'PNG'))
  outside = _image(4, 'PNG')
  _write(other, 'o1.png', outside)
  _write(tmp_path, 'up.png', outside)
  (data / 'labels.csv').write_text(
      'path,label\n'
      'imgs/a.png,real\n'
      'imgs/b.png,fake\n'
      f'{data}/imgs/c.png,fake\n'  # absolute, but inside: read
      f'{other}/o1.png,real\n'
      '../up.png,fake\n'
      'imgs/../../other/o1.png,fake\n'
      '/etc/hostname,real\n')
  examples, _, result, error = _run(data, tmp_path / 'out', split_ratios=TRAIN_ONLY)
  assert error is None, error
  quarantined = {q['path']: q for q in result['quarantined']}
  assert {path: q['reason'] for path, q in quarantined.items()} == {
      f'{other}/o1.png': 'outside_data_folder', '../up.png': 'outside_data_folder',
      '../other/o1.png': 'outside_data_folder', '/etc/hostname': 'outside_data_folder'}
  assert 'labels.csv line 6' in quarantined['../up.png']['detail']
  assert 'outside the data folder' in quarantined['/etc/hostname']['detail']
  assert result['ingested'] == 3
  assert result['ingested'] + len(result['quarantined']) == result['files_found'] == 7
  rows = _read_examples(examples)['train']
  assert sorted(row['path'].decode() for row in rows) == ['imgs/a.png', 'imgs/b.png',
                                                          'imgs/c.png']
  assert all(row['image_bytes'] != outside for row in rows)


@pytest.fixture(scope='module')
def linked(tmp_path_factory):
  """Class folders named as users name them, links in and out of the folder, files the other
  readers refuse (too large, TIFF, WebP)."""
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('linked')
  data, elsewhere = root / 'data', root / 'elsewhere'
  for i in range(3):
    _write(data, f'Human/r{i}.png', _image(40 + i, 'PNG'))
    _write(data, f'ai_generated/sdxl/f{i}.png', _image(50 + i, 'PNG'))
  _write(data, 'extra/inside.png', _image(60, 'PNG'))
  _write(elsewhere, 'secret.png', _image(61, 'PNG'))
  _write(elsewhere, 'gen/g.png', _image(62, 'PNG'))
  os.symlink(elsewhere / 'secret.png', data / 'Human' / 'secret.png')
  os.symlink(elsewhere / 'gen', data / 'ai_generated' / 'gen')
  os.symlink('../extra/inside.png', data / 'Human' / 'inside_link.png')  # inside: read
  with open(data / 'Human' / 'big.png', 'wb') as f:  # sparse: no disk, one byte over the limit
    f.truncate(features.MAX_IMAGE_BYTES + 1)
  _write(data, 'Human/scan.tiff', _image(63, 'TIFF'))
  _write(data, 'ai_generated/g.webp', _image(64, 'WEBP'))
  runs = {}
  for follow in (0, 1):
    _, _, result, error = _run(data, root / f'out{follow}', split_ratios=TRAIN_ONLY,
                               follow_outside_links=follow)
    assert error is None, error
    runs[follow] = result
  return {'data': data, 'elsewhere': elsewhere, 'runs': runs}


def test_links_leaving_the_folder_are_not_followed_unless_allowed(linked):
  result = linked['runs'][0]
  reasons = {q['path']: q['reason'] for q in result['quarantined']}
  details = {q['path']: q['detail'] for q in result['quarantined']}
  assert reasons['Human/secret.png'] == reasons['ai_generated/gen'] == 'outside_data_folder'
  assert str(linked['elsewhere'] / 'secret.png') in details['Human/secret.png']
  assert 'data.follow_outside_links=true' in details['ai_generated/gen']
  assert result['links_not_followed'] == 2 and result['follow_outside_links'] is False
  assert 'Human/inside_link.png' not in reasons  # a link inside the folder is read
  assert result['counts']['train'] == {'real': 4, 'fake': 3}
  assert result['ingested'] + len(result['quarantined']) == result['files_found']

  allowed = linked['runs'][1]
  reasons = {q['path']: q['reason'] for q in allowed['quarantined']}
  assert 'Human/secret.png' not in reasons and 'ai_generated/gen/g.png' not in reasons
  assert allowed['links_not_followed'] == 0 and allowed['follow_outside_links'] is True
  assert allowed['counts']['train'] == {'real': 5, 'fake': 4}
  assert allowed['ingested'] + len(allowed['quarantined']) == allowed['files_found']


def test_a_file_over_the_byte_limit_is_quarantined_as_everywhere(linked):
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  from fakedetect.components import image_checks  # pylint: disable=g-import-not-at-top
  quarantined = {q['path']: q for q in linked['runs'][0]['quarantined']}
  assert quarantined['Human/big.png']['reason'] == 'too_large'
  assert quarantined['Human/big.png']['detail'] == (
      f'file too large: {features.MAX_IMAGE_BYTES + 1:,} bytes > limit '
      f'{features.MAX_IMAGE_BYTES:,}')
  assert image_checks.Limits().max_bytes == features.MAX_IMAGE_BYTES
  assert linked['runs'][0]['max_bytes'] == features.MAX_IMAGE_BYTES


def test_the_unsupported_format_message_names_what_is_read(linked):
  from fakedetect.components import image_checks  # pylint: disable=g-import-not-at-top
  quarantined = {q['path']: q for q in linked['runs'][0]['quarantined']}
  read = ', '.join(sorted(set(image_checks.FORMATS.values())))
  assert 'webp' not in read
  assert quarantined['Human/scan.tiff']['reason'] == 'unsupported_format'
  assert quarantined['Human/scan.tiff']['detail'] == f'TIFF image; only {read} are read'
  assert quarantined['ai_generated/g.webp']['reason'] == 'unsupported_format'
  assert quarantined['ai_generated/g.webp']['detail'] == f'WEBP image; only {read} are read'


def test_a_link_to_a_device_is_unreadable_when_outside_links_are_followed(tmp_path):
  """The I/O error case of the plain fixture, whose /proc/self/mem link is now not followed."""
  from fakedetect.components.image_checks import ImageRejected  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import folders, layouts  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import reading, splits  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  _write(data, 'fake/a.png', _image(1, 'PNG'))
  _write(data, 'real/b.png', _image(2, 'PNG'))
  os.symlink('/proc/self/mem', data / 'real' / 'mem.png')
  layout = layouts.detect(str(data))
  _, plan = splits.plan_splits({'train': 1}, layout.splits)
  reader = reading.ImageReader(str(data), layout, plan, 1000)
  entries = dict(folders.list_files(str(data), follow_outside_links=True))
  with pytest.raises(ImageRejected) as info:  # reading /proc/self/mem at offset 0: EIO
    reader.read(('real/mem.png', entries['real/mem.png']))
  assert info.value.reason == 'unreadable'


# --- item 14: which folder became which class, in the report and the summary ---------------------

def test_the_report_and_summary_say_which_folder_became_which_class(linked):
  from fakedetect import summary  # pylint: disable=g-import-not-at-top
  result = linked['runs'][0]
  assert result['layout'] == 'plain'
  assert result['class_folders'] == {'real': ['Human/'], 'fake': ['ai_generated/']}
  rendered = summary.render({
      'data_dir': result['data_dir'], 'layout': result['layout'],
      'class_folders': result['class_folders'], 'files_found': result['files_found'],
      'ingested': result['ingested'], 'quarantined': result['quarantined'],
      'links_not_followed': result['links_not_followed'], 'counts': result['counts'],
      'anomalies': {}, 'metrics': {}, 'blessed': False, 'not_blessed_because': [],
      'pushed_model': None, 'eval_split': 'test'}).splitlines()
  assert 'classes: real <- Human/, fake <- ai_generated/' in rendered
  assert ('2 links leaving the data folder not followed; set data.follow_outside_links=true to '
          'read them') in rendered


def test_fake_dirs_from_the_command_line_reach_the_component(tmp_path):
  from fakedetect.components.image_example_gen import ImageExampleGen  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  from fakedetect.pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.PipelineConfig().with_overrides(
      ['data.fake_dirs=gan_out,diffusion', 'data.follow_outside_links=true'])
  assert config.data.fake_dirs == ['gan_out', 'diffusion'] and config.data.real_dirs == []
  component = ImageExampleGen(data_dir=str(tmp_path), fake_dirs=config.data.fake_dirs,
                              real_dirs=config.data.real_dirs,
                              follow_outside_links=config.data.follow_outside_links)
  properties = component.exec_properties
  assert json.loads(properties['fake_dirs']) == ['gan_out', 'diffusion']
  assert json.loads(properties['real_dirs']) == [] and properties['follow_outside_links'] == 1
  with pytest.raises(layouts.LayoutError, match='both real and fake'):
    ImageExampleGen(data_dir=str(tmp_path), fake_dirs=['shared'], real_dirs=['Shared'])
