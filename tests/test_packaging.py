"""What `pip install .` ships (the Dockerfile's install, a Beam worker's): one `fakedetect`
package over the three folders, templates included, and the custom artifact types by the names
ML Metadata and KFP use."""

import os
import shutil
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_wheel_holds_one_package_with_its_templates(tmp_path):
  source = tmp_path / 'src'
  source.mkdir()
  for folder in ('pipeline', 'components', 'fakedetect'):
    shutil.copytree(os.path.join(REPO, folder), source / folder,
                    ignore=shutil.ignore_patterns('__pycache__'))
  shutil.copy(os.path.join(REPO, 'setup.py'), source)
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(source), '--no-deps',
                  '--no-build-isolation', '-q', '-w', str(tmp_path / 'wheel')],
                 check=True, capture_output=True, timeout=300)
  [wheel] = os.listdir(tmp_path / 'wheel')
  names = set(zipfile.ZipFile(tmp_path / 'wheel' / wheel).namelist())
  top_level = {name.split('/')[0] for name in names}
  assert {name for name in top_level if not name.endswith('.dist-info')} == {'fakedetect'}
  assert {'fakedetect/pipeline/pipeline.py', 'fakedetect/components/transform.py',
          'fakedetect/components/image_example_gen/executor.py', 'fakedetect/cli.py',
          'fakedetect/templates/report.html.j2',
          'fakedetect/components/templates/model_card.md.j2',
          'fakedetect/components/templates/model_card.html.j2'} <= names


def test_artifact_types_import_by_their_recorded_names():
  import fakedetect
  from tfx.utils import import_utils  # pylint: disable=g-import-not-at-top
  for name in fakedetect.ARTIFACT_TYPES:
    artifact_type = getattr(fakedetect, name)
    assert artifact_type.TYPE_NAME == f'fakedetect.{name}'
    assert import_utils.import_class_by_path(artifact_type.TYPE_NAME) is artifact_type
