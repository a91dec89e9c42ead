"""ImageExampleGen: a TFX ExampleGen for folders of real and generated images."""

import json
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from tfx import types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import base_driver
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from fakedetect.components import features
from fakedetect.components.image_example_gen import classes
from fakedetect.components.image_example_gen import executor
from fakedetect.components.image_example_gen import folders
from fakedetect.components.image_example_gen import splits


class IngestReport(types.Artifact):
  """`report.json`: every file found, ingested or quarantined with a reason; counts, per class
  format, colour mode and size profiles, duplicate groups and bias/leakage `warnings`; and
  `quarantine.csv` (path, reason, detail), the quarantine list on its own.

  Custom properties `files_found`, `ingested`, `quarantined` and `warnings` (ints) make the totals
  queryable in ML Metadata without opening the file.
  """
  # KFP v2 loads a custom type by this name in its containers: fakedetect.<Class> (its schema
  # titles allow one dot).
  TYPE_NAME = 'fakedetect.IngestReport'


class ImageExampleGenSpec(types.ComponentSpec):
  PARAMETERS = {
      executor.DATA_DIR_KEY: ExecutionParameter(type=str),
      executor.SPLIT_RATIOS_KEY: ExecutionParameter(type=str),
      executor.MAX_PIXELS_KEY: ExecutionParameter(type=int),
      executor.NUM_SHARDS_KEY: ExecutionParameter(type=int, optional=True),
      executor.DUPLICATES_KEY: ExecutionParameter(type=str, optional=True),
      executor.FAKE_DIRS_KEY: ExecutionParameter(type=str, optional=True),
      executor.REAL_DIRS_KEY: ExecutionParameter(type=str, optional=True),
      executor.FOLLOW_LINKS_KEY: ExecutionParameter(type=int, optional=True),
  }
  INPUTS = {}
  OUTPUTS = {
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      executor.REPORT_KEY: ChannelParameter(type=IngestReport),
  }


class Driver(example_gen_driver.Driver):
  """Fingerprints data_dir so TFX's cache reruns the component when the images change.

  TFX's cache key is the exec properties: without this an unchanged data_dir string would reuse
  stale examples, or stale labels after a `mv` between class folders (folders.fingerprint
  covers paths, sizes, mtimes and manifests). Like TFX's file ExampleGen driver it also sets
  span 0 and the fingerprint on the examples (version stays unset: folders carry no {VERSION}).
  """

  def resolve_exec_properties(self, exec_properties: Dict[str, Any],
                              pipeline_info: data_types.PipelineInfo,
                              component_info: data_types.ComponentInfo) -> Dict[str, Any]:
    del pipeline_info, component_info
    exec_properties[example_gen_utils.SPAN_PROPERTY_NAME] = 0
    exec_properties[example_gen_utils.VERSION_PROPERTY_NAME] = None
    exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = folders.fingerprint(
        exec_properties[executor.DATA_DIR_KEY],
        bool(int(exec_properties.get(executor.FOLLOW_LINKS_KEY) or 0)))
    return exec_properties

  def _prepare_output_artifacts(self, input_artifacts, output_dict, exec_properties,
                                execution_id, pipeline_info, component_info):
    """Legacy launchers (InteractiveContext): all outputs, as the base driver makes them."""
    result = base_driver.BaseDriver._prepare_output_artifacts(  # pylint: disable=protected-access
        self, input_artifacts, output_dict, exec_properties, execution_id, pipeline_info,
        component_info)
    for artifact in result[executor.EXAMPLES_KEY]:
      example_gen_driver.update_output_artifact(exec_properties, artifact.mlmd_artifact)
    return result


class ImageExampleGen(base_beam_component.BaseBeamComponent):
  """Reads data_dir (layout detected: see layouts.LAYOUTS) to tf.Examples.

  Outputs `examples` (standard Examples, one split per name in split_ratios, or the layout's own
  splits) and `report` (IngestReport). Takes `beam_pipeline_args` to scale out.
  """

  SPEC_CLASS = ImageExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = Driver

  def __init__(self,
               data_dir: str,
               split_ratios: Union[None, str, Mapping[str, int]] = None,
               max_pixels: int = features.MAX_IMAGE_PIXELS,
               num_shards: Optional[int] = None,
               duplicates: str = splits.SAME_SPLIT,
               fake_dirs: Sequence[str] = (),
               real_dirs: Sequence[str] = (),
               follow_outside_links: bool = False):
    """Validates split_ratios here, when the pipeline is built, not hours into a run.

    Args:
      data_dir: folder of images (local path or a gs:// URI).
      split_ratios: {split: weight} or its JSON, default {"train": 70, "eval": 15, "test": 15};
        a layout with its own splits keeps them and carves the missing ones out of its train.
      max_pixels: images declaring more pixels than this are quarantined before decoding.
      num_shards: files per split (Beam then shuffles the examples to them); None: each worker
        bundle writes its own file per split, the fast path.
      duplicates: 'same_split' keeps a group of byte-identical files that the layout's own
        splits scatter in its most held-out split (test, then eval); 'keep_layout' honours the
        layout and only reports the leak. Hash splits always keep a group together.
      fake_dirs: folder names holding fakes (e.g. gan_out, diffusion), in place of the built-in
        ones (classes.BUILTIN: fake, ai, ai_generated, generated, synthetic, ...); real_dirs
        likewise for reals. A name in both is refused here.
      follow_outside_links: read links leaving data_dir; off, they are quarantined as
        outside_data_folder and counted in the report.
    """
    if max_pixels <= 0:
      raise ValueError(f'max_pixels must be positive, got {max_pixels}.')
    if num_shards is not None and num_shards < 0:
      raise ValueError(f'num_shards must be >= 0, got {num_shards}.')
    if duplicates not in splits.DUPLICATE_POLICIES:
      raise ValueError(f'duplicates must be one of {splits.DUPLICATE_POLICIES}, '
                       f'got {duplicates!r}.')
    class_names = classes.ClassNames(fake_dirs, real_dirs)  # a LayoutError if ambiguous
    spec = ImageExampleGenSpec(
        data_dir=data_dir,
        split_ratios=json.dumps(splits.parse_split_ratios(split_ratios)),
        max_pixels=max_pixels,
        num_shards=num_shards,
        duplicates=duplicates,
        fake_dirs=json.dumps(list(class_names.fake_dirs)),
        real_dirs=json.dumps(list(class_names.real_dirs)),
        follow_outside_links=int(bool(follow_outside_links)),
        examples=types.Channel(type=standard_artifacts.Examples),
        report=types.Channel(type=IngestReport))
    super().__init__(spec=spec)

