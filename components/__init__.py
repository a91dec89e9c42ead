"""Custom TFX components and the module code TFX components call."""


def __getattr__(name):
  """The custom artifact types, by the `components.<Class>` names KFP v2 imports them by.

  Loaded on first use (PEP 562): `from components import features` must not pay for TFX.
  """
  if name == 'IngestReport':
    from components.image_example_gen import component  # pylint: disable=g-import-not-at-top
    return component.IngestReport
  if name == 'Robustness':
    from components import robustness  # pylint: disable=g-import-not-at-top
    return robustness.Robustness
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
