"""The names a run is found by: the DAG's node ids and what a run writes into its --output folder.

pipeline.py gives the nodes these ids, ML Metadata records them (node context
`<pipeline name>.<node id>`), and the tools find an artifact by node id and output key
(fakedetect/run_records.py). Kept free of imports so the CLI and tests can use them cheaply.

A file INSIDE an artifact is named by the module that writes it, not here: robustness.RESULT_FILE,
train.HISTORY_FILE / CURVES_FILE, image_example_gen/report.py's REPORT_FILE (report.json). The
one exception is the pushed model's metadata: `fakedetect models` reads it without loading the
TensorFlow that components/export.py (its writer) imports.
"""

# Node ids, in the DAG's order.
IMAGE_EXAMPLE_GEN = 'ImageExampleGen'
ARTIFACT_SIMULATOR = 'ArtifactSimulator'  # simulated fakes for training (simulate.enabled)
STATISTICS_GEN = 'StatisticsGen'
SCHEMA_GEN = 'SchemaGen'  # infers a schema (data.use_curated_schema=false)
IMPORT_SCHEMA_GEN = 'ImportSchemaGen'  # imports the curated schema/ (the default)
EXAMPLE_VALIDATOR = 'ExampleValidator'
TRANSFORM = 'Transform'
TUNER = 'Tuner'
TRAINER = 'Trainer'
RESOLVER = 'latest_blessed_model_resolver'  # the latest model the RobustnessGate blessed
EVALUATOR = 'Evaluator'
ROBUSTNESS_GATE = 'RobustnessGate'
PUSHER = 'Pusher'
MODEL_CARD_GENERATOR = 'ModelCardGenerator'  # the card, after the Pusher

# What a run writes under its --output folder (PipelineConfig's paths are built from these).
METADATA_STORE = 'metadata.sqlite'  # ML Metadata, sqlite: every run of the folder
SUMMARY_FILE = 'summary.json'  # the CLI's summary of the latest run
SERVING_DIR = 'serving_model'  # TF Serving's root: <model name>/<version>/ and models.config
PIPELINE_ROOT_DIR = 'tfx'  # TFX's artifacts: <node id>/<output key>/<execution id>/
LOGS_DIR = 'logs'  # run-<time>.log: TFX, Beam and TensorFlow logging of each `fakedetect run`
REPORT_DIR = 'report'  # `fakedetect inspect`'s plots and index.html

# Beside every pushed SavedModel (TF Serving ignores assets.extra/): the export's metadata.
MODEL_METADATA_FILE = 'assets.extra/fakedetect.json'  # threshold, image size, hyperparameters
