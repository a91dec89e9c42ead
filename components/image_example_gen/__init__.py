"""Custom ExampleGen: folders of real and generated images -> tf.Examples + an ingest report.

The modules, by job:
  folders     every file of a folder (local or gs://), links leaving it, the cache fingerprint
  layouts     how a folder says what each file is (class, source, split)
  classes     which class folder names mean real and which fake (built-in, or the user's own)
  splits      the split plan and the content-hash split of each image
  reading     one file -> bytes and what was read about it, or why it is quarantined
  encoding    images -> serialized tf.Examples (tfx_bsl's C++ coder)
  profile     per-class tallies, duplicate groups, bias and leakage warnings
  tfrecord    the one TFRecord writer (gzipped, without TensorFlow) and the files' TFX names
  beam_graph  the Beam graph the workers run: read, check, encode, write; tallies, duplicates
  verify      TensorFlow's decode of every written image, batched in the launcher
  report      what was found: report.json and quarantine.csv
  executor    the TFX executor (the only module importing TFX besides component)
  component   the TFX component, its spec and driver
The image checks themselves are components/image_checks.py, shared with predict and evaluate.
`ImageExampleGen` and `IngestReport` load on first use (PEP 562): the Beam workers import this
package's modules and must not pay for TFX.
"""


def __getattr__(name):
  if name in ('ImageExampleGen', 'IngestReport'):
    from fakedetect.components.image_example_gen import component  # pylint: disable=g-import-not-at-top
    return getattr(component, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
