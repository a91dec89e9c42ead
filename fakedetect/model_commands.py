"""The `fakedetect` commands that work on what a run left behind: the pushed models (`models`),
scoring new images (`predict`), a labelled folder (`evaluate`), one image (`explain`), and a
run's evaluation (`inspect`). cli.py adds them to the command group, which turns every
errors.UserError into its message.
"""

import json
import logging
import os

import click

from fakedetect import output_files
from fakedetect.components import errors
from fakedetect.components import image_checks
from fakedetect.components import perturb as perturb_lib
from fakedetect.components.image_example_gen import folders
from fakedetect.pipeline import names

_MODEL_HELP = ('A pushed model: a version folder, a model folder, a serving root or a run\'s '
               '--output folder (then the version TF Serving serves). Default: ./outputs.')


def _find_model(model) -> str:
  from fakedetect import registry  # pylint: disable=g-import-not-at-top
  return registry.find_model(model)


def _serving_root(output: str) -> str:
  root = os.path.join(output, names.SERVING_DIR)
  return root if os.path.isdir(root) else output


@click.group()
def models() -> None:
  """The pushed models: list versions, pin one for TF Serving (rollback), unpin."""


@models.command('list')
@click.option('--output', default='outputs', show_default=True, type=click.Path(file_okay=False),
              help='The run\'s output folder (or its serving_model/ folder).')
@click.option('--name', default=None, help='Model name, when the folder holds several.')
@click.option('--json', 'as_json', is_flag=True, help='Machine-readable rows.')
def models_list(output, name, as_json) -> None:
  """Pushed versions, newest first: when, threshold, metrics, the run that blessed it."""
  from fakedetect import registry as models_lib  # pylint: disable=g-import-not-at-top
  rows = models_lib.describe(_serving_root(output), name)
  click.echo(json.dumps(rows, indent=2) if as_json else models_lib.render_rows(rows))


@models.command('rollback')
@click.argument('version', type=int)
@click.option('--output', default='outputs', show_default=True, type=click.Path(file_okay=False))
@click.option('--name', default=None, help='Model name, when the folder holds several.')
def models_rollback(version, output, name) -> None:
  """Pin VERSION in models.config: TF Serving serves it instead of the latest."""
  from fakedetect import registry as models_lib  # pylint: disable=g-import-not-at-top
  path = models_lib.rollback(_serving_root(output), version, name)
  click.echo(f'Pinned version {version} in {path}; a server started with --model_config_file '
             '(and --model_config_file_poll_wait_seconds) switches to it. '
             '`fakedetect models unpin` serves the latest again.')


@models.command('unpin')
@click.option('--output', default='outputs', show_default=True, type=click.Path(file_okay=False))
@click.option('--name', default=None, help='Model name, when the folder holds several.')
def models_unpin(output, name) -> None:
  """Remove the pin: TF Serving serves the latest version again."""
  from fakedetect import registry as models_lib  # pylint: disable=g-import-not-at-top
  path = models_lib.unpin(_serving_root(output), name)
  click.echo(f'Unpinned in {path}: the latest version is served.')


@models.command('config')
@click.option('--output', default='outputs', show_default=True, type=click.Path(file_okay=False))
@click.option('--base-path', default=None,
              help='Where the server sees the serving root, e.g. /models in the '
              'tensorflow/serving container. Default: as the file says, else the absolute path.')
def models_config(output, base_path) -> None:
  """Regenerate models.config from the versions on disk (pins are kept)."""
  from fakedetect import registry as models_lib  # pylint: disable=g-import-not-at-top
  root = _serving_root(output)
  if not models_lib.model_names(root):  # never a config for nothing, nor a folder made for it
    missing = '' if os.path.isdir(output) else f' (the folder {output} does not exist)'
    raise models_lib.ModelsError(f'No pushed model under {root}{missing}: pass --output the '
                                 'output folder of a run that pushed one. Nothing was written.')
  path = models_lib.write_config(root, base_path=base_path)
  click.echo(path)


@click.command()
@click.argument('paths', nargs=-1, required=True)
@click.option('--model', default=None, help=_MODEL_HELP)
@click.option('--output', '-o', default='-', show_default=True, type=click.Path(dir_okay=False),
              help='Where the rows go; - is stdout.')
@click.option('--format', 'fmt', type=click.Choice(['csv', 'jsonl']), default='csv',
              show_default=True)
@click.option('--batch-size', default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option('--uncertain-band', default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help='uncertain = |fake_probability - threshold| < band.')
@click.option('--max-bytes', default=None, type=click.IntRange(1),
              help='Refuse files larger than this (default 32 MiB).')
@click.option('--max-pixels', default=None, type=click.IntRange(1),
              help='Refuse images with more pixels than this (default as data.max_pixels).')
@click.option('--no-progress', is_flag=True, help='No progress bar on stderr.')
def predict(paths, model, output, fmt, batch_size, uncertain_band, max_bytes, max_pixels,
            no_progress) -> None:
  """Score images (files, folders, globs) with a pushed model: path, fake_probability, label,
  uncertain, error (one row per file; files that cannot be scored say why)."""
  from fakedetect import predict as predict_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.components import scoring  # pylint: disable=g-import-not-at-top
  model_dir = _find_model(model)
  defaults = image_checks.Limits()
  limits = image_checks.Limits(max_bytes or defaults.max_bytes, max_pixels or defaults.max_pixels)
  targets = predict_lib.expand_paths(paths)
  inputs = [path for path, _ in targets]
  output_files.check(output, inputs)  # before the model loads and anything is scored
  scorer = scoring.Scorer(model_dir)
  click.echo(f'Model {model_dir} (threshold {scorer.threshold:.4f}); {len(targets)} files.',
             err=True)
  rows = predict_lib.predict(scorer, targets, batch_size, uncertain_band, limits,
                             progress=not no_progress)
  with output_files.atomic_write(output, inputs=inputs) as out:
    counts = predict_lib.write_rows(rows, out, fmt)
  click.echo(f"Scored {counts['scored']} ({counts['fake']} fake, {counts['uncertain']} "
             f"uncertain); {counts['errors']} could not be scored (see the error column).",
             err=True)


@click.command('evaluate')
@click.argument('data', type=click.Path(exists=True, file_okay=False))
@click.option('--model', default=None, help=_MODEL_HELP)
@click.option('--split', type=click.Choice(['train', 'eval', 'test']), default=None,
              help='Only this split of the folder\'s layout (eval = val/valid folders); '
              'default: every file.')
@click.option('--perturb', 'perturbations', multiple=True,
              type=click.Choice([name for name in perturb_lib.PERTURBATIONS
                                 if name != perturb_lib.NONE]),
              help='Also score every image after this perturbation (repeatable).')
@click.option('--json', 'json_path', default=None, type=click.Path(dir_okay=False),
              help='Also write the result, skipped files included, as JSON here.')
@click.option('--predictions', 'predictions_path', default=None,
              type=click.Path(dir_okay=False),
              help='Also write one CSV row per file (P(fake), decision, correct, and P(fake) '
              'after each --perturb) here: the files the model gets wrong.')
@click.option('--batch-size', default=64, show_default=True, type=click.IntRange(1, 4096))
def evaluate(data, model, split, perturbations, json_path, predictions_path, batch_size) -> None:
  """Score a pushed model on a labelled folder it never saw (any layout `run` reads), through
  serving_default on the raw files: accuracy, precision, recall, F1 and AUC, per source too."""
  from fakedetect import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.components import scoring  # pylint: disable=g-import-not-at-top
  model_dir = _find_model(model)
  labelled = evaluate_lib.read_labelled(data, split)
  inputs = [os.path.join(data, path) for path in
            [row['path'] for row in labelled.rows] + [path for path, _ in labelled.skipped]]
  for path in filter(None, (json_path, predictions_path)):
    output_files.check(path, inputs)  # before anything is scored
  scorer = scoring.Scorer(model_dir)
  click.echo(f'Model {model_dir} (threshold {scorer.threshold:.4f}); {len(labelled.rows)} '
             f'images of {data}{f" (split {split})" if split else ""}.', err=True)
  result = evaluate_lib.evaluate(scorer, labelled, perturbations, batch_size, progress=True,
                                 keep_per_file=bool(predictions_path))
  click.echo(evaluate_lib.format_result(result))
  if predictions_path:
    evaluate_lib.write_predictions(predictions_path, labelled, result)
    click.echo(f'Per-file predictions: {predictions_path}', err=True)
  if json_path:
    evaluate_lib.write_json(json_path, result)


@click.command()
@click.argument('image', type=click.Path(exists=True, dir_okay=False))
@click.option('--model', default=None, help=_MODEL_HELP)
@click.option('--output', '-o', default=None, type=click.Path(dir_okay=False),
              help='PNG to write. Default: ./<image name>.gradcam.png')
@click.option('--target', type=click.Choice(['predicted', 'fake', 'real']), default='predicted',
              show_default=True, help='The class whose evidence the heatmap shows.')
@click.option('--alpha', default=0.45, show_default=True, type=click.FloatRange(0, 1),
              help='Heatmap opacity.')
def explain(image, model, output, target, alpha) -> None:
  """Heatmap of the evidence in IMAGE, written as a PNG: Grad-CAM (last convolution) when the
  model sees the whole image, each native crop's own score for a local-view model."""
  from fakedetect import explain as explain_lib  # pylint: disable=g-import-not-at-top
  model_dir = _find_model(model)
  output = output or explain_lib.default_output(image)
  output_files.check(output, [image], explain_lib.is_heatmap)  # before the model loads
  try:  # refused before it is read if it is too large or not a file; explain() checks the rest
    data = image_checks.read_file(image, image_checks.Limits().max_bytes)
  except image_checks.ImageRejected as rejected:
    raise errors.UserError(f'Cannot explain this file: {rejected}.') from None
  result = explain_lib.explain(model_dir, data, target)
  path = explain_lib.write_overlay(data, result, output, alpha)
  printable = [folders.utf8(name, None)[0] for name in (image, path)]
  click.echo(f'{printable[0]}: fake_probability {result.fake_probability:.4f} -> '
             f'{result.label}; heatmap for {result.target!r} from {result.layer}: {printable[1]}')


@click.command('inspect')
@click.argument('run', default='outputs', type=click.Path(exists=True, file_okay=False))
@click.option('--report-dir', default=None, type=click.Path(file_okay=False),
              help='Where the PNGs and index.html go. Default: <run output>/report/.')
def inspect_command(run, report_dir) -> None:
  """The TFMA slice table and blessing verdict of RUN's latest evaluation, plus plots and an HTML
  report. RUN is a run's --output folder (default ./outputs) or an Evaluator evaluation folder."""
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'  # TFMA's loaders are chatty; the table is the output
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  from fakedetect import report as report_lib  # pylint: disable=g-import-not-at-top
  _, text, report = report_lib.inspect(run, report_dir)
  click.echo(text)
  click.echo(f'report: {report}')


COMMANDS = (models, predict, evaluate, explain, inspect_command)
