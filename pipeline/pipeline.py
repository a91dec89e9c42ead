"""Builds the TFX DAG from a PipelineConfig, as TFX's penguin example does.

ImageExampleGen -> [ArtifactSimulator] -> StatisticsGen -> ImportSchemaGen (curated schema/) or
SchemaGen -> ExampleValidator -> Transform -> [Tuner] -> Trainer -> Resolver(latest blessed)
-> Evaluator -> RobustnessGate (perturbations; the final blessing) -> Pusher -> ModelCardGenerator
(the card, beside the pushed model). Runner-agnostic: BeamDagRunner runs it here
(pipeline/runner.py), KubeflowV2DagRunner compiles it for Kubeflow / Vertex AI.
"""

import json
import os
from typing import List

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from fakedetect.components import artifact_simulator
from fakedetect.components import features
from fakedetect.components import model_card
from fakedetect.components import perturb
from fakedetect.components import push
from fakedetect.components import robustness
from fakedetect.components import export
from fakedetect.components.image_example_gen import ImageExampleGen
from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline import auto
from fakedetect.pipeline import names
from fakedetect.pipeline.config import PipelineConfig

_COMPONENTS_DIR = os.path.join(config_lib.REPO_DIR, 'components')
TRANSFORM_MODULE = os.path.join(_COMPONENTS_DIR, 'transform.py')
TRAIN_MODULE = os.path.join(_COMPONENTS_DIR, 'train.py')
# The same code by import path, for a container image that has this project installed.
PREPROCESSING_FN = 'fakedetect.components.transform.preprocessing_fn'
RUN_FN = 'fakedetect.components.train.run_fn'
TUNER_FN = 'fakedetect.components.train.tuner_fn'
SCHEMA_FILE = 'schema.pbtxt'
SIMULATOR_CROP = 32


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
  """Metrics and plots overall and per slice; the gate is value bars plus no-regression bars.

  Slices: overall, then one per value of each of `gate.slice_features` (source, format,
  size_bucket by default; any example feature a user names). Thresholds (all from GateConfig)
  judge the overall slice only: precision and recall lower bounds, and accuracy (and AUC, when
  `gate.max_auc_drop` < 1) may not drop more than the configured amount below the last blessed
  model's. Robustness under perturbations is judged after this, by the RobustnessGate.
  """
  gate = config.gate

  def overall_only(threshold: tfma.MetricThreshold):
    # The gate judges the whole split; slices are reported, not gated (too small to be stable).
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                         threshold=threshold)]

  def lower_bound(value: float):
    if value <= 0:  # no bar; TFMA would still fail an undefined value (NaN precision)
      return []
    return overall_only(tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={'value': value})))

  def no_regression(max_drop: float):
    if max_drop >= 1:  # a drop of the whole range: no bar
      return []
    return overall_only(tfma.MetricThreshold(
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={'value': -max_drop})))

  metrics = [
      # Always one bar (TFMA refuses to bless when a run has none: a first run's change bars are
      # dropped for want of a baseline): the split is not empty.
      tfma.MetricConfig(class_name='ExampleCount', per_slice_thresholds=lower_bound(1)),
      tfma.MetricConfig(class_name='BinaryAccuracy',
                        per_slice_thresholds=no_regression(gate.max_accuracy_drop)),
      tfma.MetricConfig(class_name='Precision',
                        per_slice_thresholds=lower_bound(gate.min_precision)),
      tfma.MetricConfig(class_name='Recall', per_slice_thresholds=lower_bound(gate.min_recall)),
      tfma.MetricConfig(class_name='F1Score'),
      tfma.MetricConfig(class_name='AUC', config=json.dumps({'name': 'auc'}),
                        per_slice_thresholds=no_regression(gate.max_auc_drop)),
      tfma.MetricConfig(class_name='AUC',
                        config=json.dumps({'name': 'pr_auc', 'curve': 'PR'})),
      tfma.MetricConfig(class_name='MeanLabel'),
      tfma.MetricConfig(class_name='MeanPrediction'),
      tfma.MetricConfig(class_name='Calibration'),
      # Plots: TP/FP/TN/FN at 1000 cuts (ROC and PR curves come from it) and calibration.
      tfma.MetricConfig(class_name='ConfusionMatrixPlot'),
      tfma.MetricConfig(class_name='CalibrationPlot'),
  ]
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          signature_name=export.EXAMPLE_SIGNATURE,
          label_key=features.LABEL_KEY,
          prediction_key=export.PROBABILITY_KEY)],
      slicing_specs=[tfma.SlicingSpec()] + [
          tfma.SlicingSpec(feature_keys=[key]) for key in gate.slice_features],
      metrics_specs=[tfma.MetricsSpec(metrics=metrics)])


def _user_code(module_file: str, fn_key: str, fn_path: str, packaged: bool) -> dict:
  """module_file: TFX packages the module's folder as a wheel under the pipeline root and keys
  the cache on its hash (local runs). Otherwise the installed package's function by import
  path: a compiled pipeline's image carries the code, and its tag versions it."""
  return {'module_file': module_file} if packaged else {fn_key: fn_path}


def simulator_for(config: PipelineConfig, examples):
  """The ArtifactSimulator when simulate.enabled (else None). It trains on native crops the size
  the model's view takes (the local crop, or the global view's side), at most SIMULATOR_CROP px:
  up-sampling traces are a few pixels wide, and the GAN's cost grows with the crop's area."""
  simulate = config.simulate
  if not simulate.enabled:
    return None
  view = config.image.resolved()
  return artifact_simulator.ArtifactSimulator(
      examples=examples, mode=simulate.mode, images=simulate.images, decoder=simulate.decoder,
      epochs=simulate.epochs,
      crop=min(view.crop_size if view.uses_local else view.size, SIMULATOR_CROP),
      seed=config.train.seed).with_id(names.ARTIFACT_SIMULATOR)


def create_components(config: PipelineConfig, packaged_modules: bool = True
                      ) -> List[tfx.types.BaseNode]:
  config, _ = auto.resolve(config)  # the CLI has resolved it already, saying what it chose
  example_gen = ImageExampleGen(
      data_dir=config_lib.location(config.data.data_dir),
      split_ratios=json.dumps(config.data.split_ratios()),
      max_pixels=config.data.max_pixels,
      fake_dirs=config.data.fake_dirs,
      real_dirs=config.data.real_dirs,
      follow_outside_links=config.data.follow_outside_links).with_id(names.IMAGE_EXAMPLE_GEN)
  simulator = simulator_for(config, example_gen.outputs['examples'])
  # What training sees: the simulator's copy of the splits when it runs (simulated fakes in the
  # training split only), else the ExampleGen's. Evaluation always reads the ExampleGen's.
  training_examples = (simulator.outputs['simulated_examples'] if simulator
                       else example_gen.outputs['examples'])
  statistics_gen = tfx.components.StatisticsGen(
      examples=training_examples).with_id(names.STATISTICS_GEN)
  curated = os.path.join(config.data.schema_dir, SCHEMA_FILE)
  if config.data.use_curated_schema:
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=curated).with_id(names.IMPORT_SCHEMA_GEN)
  else:
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs['statistics'],
        infer_feature_shape=True).with_id(names.SCHEMA_GEN)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema']).with_id(names.EXAMPLE_VALIDATOR)
  transform = tfx.components.Transform(
      examples=training_examples,
      schema=schema_gen.outputs['schema'],
      custom_config=config.module_config().to_custom_config('image'),
      # Its pre-transform statistics repeat StatisticsGen's; post-transform ones would profile
      # every pixel (or a serialized native square) as a feature: costly and never read.
      disable_statistics=True,
      **_user_code(TRANSFORM_MODULE, 'preprocessing_fn', PREPROCESSING_FN, packaged_modules),
  ).with_id(names.TRANSFORM)
  module_config = config.module_config().to_custom_config()
  tuner = None
  if config.tuner.enabled:
    tuner = tfx.components.Tuner(
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        schema=schema_gen.outputs['schema'],
        custom_config=module_config,
        **_user_code(TRAIN_MODULE, 'tuner_fn', TUNER_FN, packaged_modules),
    ).with_id(names.TUNER)
  # The baseline is the latest model that passed the whole gate (TFMA and robustness): only the
  # RobustnessGate's blessings count, not the Evaluator's, which robustness may still overrule.
  model_resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                     producer_component_id=names.ROBUSTNESS_GATE,
                                     output_key='blessing'),
  ).with_id(names.RESOLVER)
  trainer = tfx.components.Trainer(
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      hyperparameters=tuner.outputs['best_hyperparameters'] if tuner else None,
      # TFX's continuous training: the last blessed model, when model.weights=previous (only
      # then, so a new blessing does not invalidate a from-scratch Trainer's cache).
      base_model=(model_resolver.outputs['model'] if config.model.weights == 'previous'
                  else None),
      custom_config=module_config,
      **_user_code(TRAIN_MODULE, 'run_fn', RUN_FN, packaged_modules),
  ).with_id(names.TRAINER)
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=model_resolver.outputs['model'],
      schema=schema_gen.outputs['schema'],
      example_splits=[config.gate.eval_split],
      eval_config=eval_config(config),
  ).with_id(names.EVALUATOR)
  robustness_gate = robustness.RobustnessGate(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      split=config.gate.eval_split,
      perturbations=json.dumps(perturb.names(config.gate.perturbations)),
      min_accuracy=float(config.gate.min_robust_accuracy),
  ).with_id(names.ROBUSTNESS_GATE)
  # TFX's Pusher, writing each version atomically (components/push.py).
  pusher = push.Pusher(
      model=trainer.outputs['model'],
      model_blessing=robustness_gate.outputs['blessing'],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_dir)),
  ).with_id(names.PUSHER)
  card = model_card.ModelCardGenerator(
      report=example_gen.outputs['report'],
      evaluation=evaluator.outputs['evaluation'],
      robustness=robustness_gate.outputs['robustness'],
      blessing=robustness_gate.outputs['blessing'],
      model=trainer.outputs['model'],
      model_run=trainer.outputs['model_run'],
      pushed_model=pusher.outputs['pushed_model'],
      simulation=simulator.outputs['simulation'] if simulator else None,
  ).with_id(names.MODEL_CARD_GENERATOR)
  nodes = [example_gen, simulator, statistics_gen, schema_gen, example_validator, transform, tuner,
           trainer, model_resolver, evaluator, robustness_gate, pusher, card]
  nodes = [node for node in nodes if node is not None]
  for node in nodes:
    overrides = config_lib.component_beam_args(config.runner, node.id)
    if overrides:
      node.with_beam_pipeline_args(overrides)
  return nodes


def create_pipeline(config: PipelineConfig, for_kubeflow: bool = False) -> tfx.dsl.Pipeline:
  """The DAG with the runner profile's Beam flags; for Kubeflow the module code comes from the
  image and the metadata store is the platform's."""
  metadata = None if for_kubeflow else (
      tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))
  return tfx.dsl.Pipeline(
      pipeline_name=config.name,
      pipeline_root=config.pipeline_root,
      components=create_components(config, packaged_modules=not for_kubeflow),
      enable_cache=config.enable_cache,
      metadata_connection_config=metadata,
      beam_pipeline_args=config_lib.beam_pipeline_args(
          config.runner, f'{config_lib.IMAGE_ROOT}/setup.py' if for_kubeflow else None))
