"""Custom ExampleGen: folders of real and generated images -> tf.Examples + an ingest report.

`ImageExampleGen` and `IngestReport` load on first use (PEP 562): the Beam workers import the
`ingest` module of this package and must not pay for TFX.
"""


def __getattr__(name):
  if name in ('ImageExampleGen', 'IngestReport'):
    from fakedetect.components.image_example_gen import component  # pylint: disable=g-import-not-at-top
    return getattr(component, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
