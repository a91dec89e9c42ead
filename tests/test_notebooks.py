"""The notebooks execute headless (nbclient) against a demo run, so they never rot."""

import os

import pytest

from tests import demo_runs

pytestmark = pytest.mark.pipeline  # against a real demo run

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'notebooks')


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  root = demo_runs.workspace(tmp_path_factory)
  return demo_runs.run(root, 'good')['output']  # any run of the folder will do


@pytest.mark.parametrize('name', ['data.ipynb', 'tfma_slices.ipynb'])
def test_notebook_executes(run_dir, name, monkeypatch):
  import nbformat  # pylint: disable=g-import-not-at-top
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('FAKEDETECT_RUN', run_dir)
  notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  NotebookClient(notebook, timeout=300, kernel_name='python3',
                 resources={'metadata': {'path': NOTEBOOKS}}).execute()  # raises on any error
  printed = ''.join(o.get('text', '') for c in notebook.cells for o in c.get('outputs', []))
  assert os.path.abspath(run_dir) in printed
