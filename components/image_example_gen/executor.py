"""Folders of images -> tf.Examples, with every file either ingested or quarantined with a reason.

TFX's own ExampleGens read records (CSV, TFRecord, Avro, Parquet); an image dataset is a tree of
encoded files whose labels live in folder names. This executor reads that tree but writes exactly
what TFX's BaseExampleGenExecutor writes (gzipped TFRecords under Split-<name>/, split_names,
payload_format, file_format), so StatisticsGen, Transform, Trainer and Evaluator read it as is.

The bytes go into the example untouched: a generator's traces live in compression artefacts and
metadata that a re-encode would erase. A file is kept only if TensorFlow decodes it the way
training will (`views.decode_and_resize`), so a file that passes here cannot fail a training
step later.
"""

import os
from typing import Any, Dict, List, Tuple

from absl import logging
from apache_beam.options import pipeline_options
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from fakedetect.components import features
from fakedetect.components.image_example_gen import beam_graph
from fakedetect.components.image_example_gen import classes
from fakedetect.components.image_example_gen import folders
from fakedetect.components.image_example_gen import layouts
from fakedetect.components.image_example_gen import reading
from fakedetect.components.image_example_gen import report as report_lib
from fakedetect.components.image_example_gen import splits
from fakedetect.components.image_example_gen import tfrecord
from fakedetect.components.image_example_gen import verify

# Exec property and output keys.
DATA_DIR_KEY = 'data_dir'
SPLIT_RATIOS_KEY = 'split_ratios'
MAX_PIXELS_KEY = 'max_pixels'
NUM_SHARDS_KEY = 'num_shards'
DUPLICATES_KEY = 'duplicates'
FAKE_DIRS_KEY = 'fake_dirs'  # JSON list of folder names; [] = the built-in names
REAL_DIRS_KEY = 'real_dirs'
FOLLOW_LINKS_KEY = 'follow_outside_links'  # int 0/1, as TFX's own flags
EXAMPLES_KEY = 'examples'
REPORT_KEY = 'report'

# From this many files on, the ExampleGen starts worker processes when the user chose no
# --direct_running_mode. Starting the multi-processing runner costs ~5 s (each worker imports
# Beam: ~2 s of CPU with a bytecode cache, ~5 s without) and a worker saves ~0.1 ms per small
# file. Measured on 2 busy cores: 20k CIFAKE images took 7 to 9 s in memory and 12.5 s on two
# workers, 2k 512x512 JPEGs 25 s and 32 s; at 100k CIFAKE images the two are about even there,
# and free cores favour the workers.
MULTI_PROCESSING_MIN_FILES = 50_000


def beam_args(args: List[str], num_files: int) -> Tuple[List[str], bool]:
  """(the Beam flags to run with, whether the workers run TensorFlow's decode themselves).

  On the direct runner the workers only inspect files and never import TensorFlow (3 to 8 s of
  CPU, with or without a bytecode cache, and ~400 MB each); the launcher, which has it loaded,
  checks every decode in batched passes.
  A distributed runner's workers check their own files: the launcher may be a small machine.
  Without a --direct_running_mode the direct runner gets one worker process per core for a large
  folder; a mode the user chose (e.g. a runner profile's multi_processing) is kept as it is.
  """
  runner = pipeline_options.PipelineOptions(args).view_as(pipeline_options.StandardOptions).runner
  if (runner or 'DirectRunner').lower() not in ('direct', 'directrunner'):
    return args, True
  chosen = any(arg.startswith('--direct_running_mode') for arg in args)
  if not chosen and num_files >= MULTI_PROCESSING_MIN_FILES and (os.cpu_count() or 1) > 1:
    args = args + ['--direct_running_mode=multi_processing']
    if not any(arg.startswith('--direct_num_workers') for arg in args):
      args.append('--direct_num_workers=0')  # one per core
  return args, False


class Executor(base_beam_executor.BaseBeamExecutor):
  """Lists the files here, reads them in Beam, checks the decodes, writes report.json."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    data_dir = exec_properties[DATA_DIR_KEY]
    ratios = splits.parse_split_ratios(exec_properties.get(SPLIT_RATIOS_KEY))
    max_pixels = int(exec_properties.get(MAX_PIXELS_KEY) or features.MAX_IMAGE_PIXELS)
    num_shards = int(exec_properties.get(NUM_SHARDS_KEY) or 0)  # 0: one file per bundle
    policy = exec_properties.get(DUPLICATES_KEY) or splits.SAME_SPLIT
    if policy not in splits.DUPLICATE_POLICIES:
      raise ValueError(f'duplicates must be one of {splits.DUPLICATE_POLICIES}, got {policy!r}.')
    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])

    follow_links = bool(int(exec_properties.get(FOLLOW_LINKS_KEY) or 0))
    layout = layouts.detect(data_dir, classes.ClassNames(exec_properties.get(FAKE_DIRS_KEY),
                                                         exec_properties.get(REAL_DIRS_KEY)))
    split_names, plan = splits.plan_splits(ratios, layout.splits)
    split_plan = splits.describe_plan(split_names, plan)
    entries = layout.list_files(data_dir, follow_links)
    logging.info('ImageExampleGen: %d files found in %s (layout %s); splits %s.',
                 len(entries), data_dir, layout.name, split_plan)
    examples.split_names = artifact_utils.encode_split_names(split_names)

    self._beam_pipeline_args, check_in_workers = beam_args(self._beam_pipeline_args,
                                                           len(entries))
    # Beside the examples: on a distributed runner the workers write there, the launcher reads.
    tmp = os.path.join(examples.uri, '.ingest-tmp')
    announce_path = None if check_in_workers else os.path.join(tmp, 'written.pickle')
    results_path = os.path.join(tmp, 'results.pickle')
    decode_check = verify.DecodeCheck(announce_path, max_pixels) if announce_path else None
    try:
      with self._make_beam_pipeline() as pipeline:
        beam_graph.build_pipeline(
            pipeline, reading.ImageReader(data_dir, layout, plan, max_pixels), layout.splits,
            entries, policy, num_shards, tmp, check_in_workers, announce_path, results_path)
    except BaseException:
      if decode_check:
        decode_check.stop()
      raise
    results = report_lib.IngestResults.load(results_path)
    if decode_check:
      results.drop(decode_check.result())
    tfrecord.finalize(results.written, split_names, examples.uri, num_shards)
    fileio.rmtree(tmp)
    result = results.write_report(report.uri, {
        'data_dir': data_dir, 'layout': layout.name, 'class_folders': layout.class_folders,
        'files_found': len(entries), 'splits': split_names, 'split_ratios': ratios,
        'split_plan': split_plan, 'duplicate_policy': policy, 'max_pixels': max_pixels,
        'max_bytes': features.MAX_IMAGE_BYTES, 'follow_outside_links': follow_links,
        'links_not_followed': sum(folders.is_link_outside(problem) for _, problem in entries)},
        split_names)

    # What TFX's BaseExampleGenExecutor.Do and ExampleGen driver set on the examples.
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(
        examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))
    if not examples.has_custom_property(example_gen_utils.SPAN_PROPERTY_NAME):
      examples.set_int_custom_property(example_gen_utils.SPAN_PROPERTY_NAME, 0)
    for key in ('files_found', 'ingested'):
      report.set_int_custom_property(key, result[key])
    report.set_int_custom_property('quarantined', len(result['quarantined']))
    report.set_int_custom_property('warnings', len(result['warnings']))
    _check(result, os.path.join(report.uri, report_lib.REPORT_FILE))


def _check(result: Dict[str, Any], report_path: str) -> None:
  """Fails the component, after the report is written, on a miscount or an unusable dataset."""
  found, ingested, quarantined = (result['files_found'], result['ingested'],
                                  len(result['quarantined']))
  logging.info('ImageExampleGen: %d found, %d ingested, %d quarantined %s; per split %s.',
               found, ingested, quarantined, result['quarantine_reasons'], result['counts'])
  for warning in result['warnings']:
    logging.warning('ImageExampleGen: %s', warning)
  if ingested + quarantined != found:
    raise RuntimeError(f'ImageExampleGen lost files: {ingested} ingested + {quarantined} '
                       f'quarantined != {found} found (report: {report_path}).')
  for class_name in features.LABEL_NAMES:
    if not any(split[class_name] for split in result['counts'].values()):
      raise ValueError(
          f'No usable {class_name!r} image in {result["data_dir"]}: {found} files found, '
          f'{quarantined} quarantined (reasons {result["quarantine_reasons"]}); see {report_path}.')
  for name, by_class in result['counts'].items():
    if not sum(by_class.values()):
      raise ValueError(
          f'Split {name!r} has no usable image ({ingested} images ingested in all; splits '
          f'{result["split_plan"]} from the {result["layout"]} layout and split_ratios '
          f'{result["split_ratios"]}); add images or change split_ratios.')
