"""fakedetect: train, gate and ship a real-vs-generated image detector with TFX.

One import name for the three folders of this repository (setup.py maps them):
  fakedetect.pipeline    pipeline/    the DAG, its typed config and the runners
  fakedetect.components  components/  custom TFX components and the module code TFX calls
  fakedetect             fakedetect/  the `fakedetect` command and the tools it runs on a run's
                                      outputs and pushed models (predict, evaluate, explain, ...)
"""

# The custom artifact types by the names ML Metadata records and KFP v2 imports them by
# (`fakedetect.<Class>`: KFP's schema titles allow one dot). Runs made before the package had
# one import name recorded them as `components.<Class>`: the tools find artifacts by node and
# output key, so those runs stay readable; their ExampleGen runs once more instead of hitting
# the cache (its output type changed).
ARTIFACT_TYPES = ('IngestReport', 'Simulation', 'Robustness', 'ModelCard')


def __getattr__(name):
  """Loads an artifact type on first use (PEP 562): `import fakedetect` must not pay for TFX."""
  if name == 'IngestReport':
    from fakedetect.components.image_example_gen import component  # pylint: disable=g-import-not-at-top
    return component.IngestReport
  if name == 'Simulation':
    from fakedetect.components import artifact_simulator  # pylint: disable=g-import-not-at-top
    return artifact_simulator.Simulation
  if name == 'Robustness':
    from fakedetect.components import robustness  # pylint: disable=g-import-not-at-top
    return robustness.Robustness
  if name == 'ModelCard':
    from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
    return model_card.ModelCard
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
