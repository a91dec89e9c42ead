"""The model card: rendered by the ModelCardGenerator component from a run's artifacts, kept in its
output and, when the model was pushed, beside it in assets.extra/."""

import math
import os

import pytest


def _facts(**changes):
  """A card's facts without a run: one slice, no mistakes recorded, formats unbalanced."""
  from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
  facts = model_card.Facts(
      report={'data_dir': '/data', 'layout': 'plain', 'files_found': 12, 'ingested': 10,
              'quarantined': [{'path': 'x', 'reason': 'empty'}] * 2,
              'quarantine_reasons': {'empty': 2}, 'split_ratios': {'train': 80, 'test': 20},
              'counts': {'test': {'real': 3, 'fake': 2}},
              'sources': {'real': {'cam<b>': 5}, 'fake': {'gen': 5}},
              'profile': {'real': {'format_shares': {'png': 1.0}},
                          'fake': {'format_shares': {'jpeg': 1.0}}}},
      metrics={'overall': {'example_count': 5.0, 'accuracy': 0.8, 'auc': float('nan')},
               'source=gen': {'example_count': 2.0, 'accuracy': 1.0}},
      bars=['Precision >= 0.9'],
      robustness={'split': 'test', 'worst': 'none', 'min_accuracy': 0.0, 'perturbations': {
          'none': {'description': 'the original file', 'accuracy': 0.8, 'accuracy_drop': 0.0}}},
      metadata={'threshold': 0.4567, 'image_size': 32, 'threshold_metric': 'f1'},
      history={'epochs_run': 3, 'device': 'CPU', 'precision': 'mixed_bfloat16',
               'hyperparameters': {'width': 16}},
      blessed=False, refusals=['precision 0.5000 is below the bar 0.9 (short by 0.4000)'],
      model_uri='/root/Trainer/model/7')
  for name, value in changes.items():
    setattr(facts, name, value)
  return facts


def test_a_refused_model_gets_a_card_that_says_why_from_its_facts_alone():
  from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
  card = model_card.render(_facts())
  assert card.startswith('# Model card: candidate model (not pushed)\n')
  assert '- Not pushed: the gate refused it' in card and '- Blessed: no.' in card
  assert f"- Trained model: `{_facts().model_uri}`." in card  # what the card describes
  assert 'It failed:\n\n- precision 0.5000 is below the bar 0.9 (short by 0.4000)\n' in card
  assert 'Gate this model was judged against: Precision >= 0.9.' in card
  assert 'quarantined 2 (empty: 2).' in card and 'train 80%, test 20%' in card
  assert '**0.457**' in card and '(mixed_bfloat16 compute;' in card and 'width=16' in card
  lines = card.splitlines()
  # Tables through tabulate: NaN and missing values print as n/a, floats with 3 decimals.
  assert [line.split('|')[2].strip() for line in lines if line.startswith('| auc ')] == ['n/a']
  row = next(line for line in lines if line.startswith('| source=gen'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  assert cells == ['source=gen', '2', '1.000'] + ['n/a'] * 5
  assert 'Slices with fewer than 30 images (source=gen)' in card
  assert 'File formats are not balanced between classes (gap up to 100%)' in card
  assert '### Most confident mistakes' not in card  # this robustness result records none
  assert 'Robustness was measured' not in card  # no perturbation but `none`: nothing to claim
  assert 'With 5 test images, the 95% interval on accuracy is about 0.376-0.964.' in card
  for section in ('## Intended use', '## Limitations', '## Ethical considerations'):
    assert section in card


def test_the_card_names_the_version_folder_when_pushed():
  from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
  card = model_card.render(_facts(blessed=True, refusals=[],
                                  pushed_dir='/serving/fakedetect/1700000000'))
  assert card.startswith('# Model card: fakedetect version 1700000000\n')
  assert '- Version folder: `/serving/fakedetect/1700000000`' in card
  assert '- Blessed: yes.' in card
  assert 'Gate this model passed: Precision >= 0.9.' in card and 'It failed' not in card


def test_html_comes_from_the_markdown_library_and_shows_raw_html_as_text():
  from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
  page = model_card.to_html(model_card.render(_facts()))
  assert '<title>Model card: candidate model (not pushed)</title>' in page
  assert '<h2>Training data</h2>' in page and '<th>perturbation</th>' in page
  assert '<strong>0.457</strong>' in page and '<code>/root/Trainer/model/7</code>' in page
  # A source folder named `cam<b>` is the user's data: shown, never interpreted.
  assert 'cam&lt;b&gt;' in page and 'cam<b>' not in page


def test_write_replaces_both_files_whole(tmp_path):
  from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
  target = tmp_path / 'assets.extra'
  for text in ('# Model card: old\n', '# Model card: new\n'):
    path = model_card.write(str(target), text)
  assert path == str(target / 'model_card.md')
  assert sorted(os.listdir(target)) == ['model_card.html', 'model_card.md']  # no .tmp left
  assert (target / 'model_card.md').read_text() == '# Model card: new\n'
  assert '<h1>Model card: new</h1>' in (target / 'model_card.html').read_text()
  assert model_card.card_path(str(tmp_path / 'v1')) is None
  assert model_card.wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
  assert all(math.isnan(x) for x in model_card.wilson_interval(0, 0))


# -- On real pipeline runs (tests/demo_runs.py) ----------------------------------------------

def _read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def test_the_pushed_model_carries_the_card_the_pipeline_wrote(runs):
  from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
  good = runs['good']
  output = good['artifacts']['ModelCardGenerator.model_card']
  assets = os.path.dirname(good['model_card'])
  for name in ('model_card.md', 'model_card.html'):
    assert _read(os.path.join(output, name)) == _read(os.path.join(assets, name)), name
  assert model_card.card_path(good['summary']['pushed_model']) == good['model_card']
  assert f"model card: {good['model_card']}" in good['stdout']  # `run` says where it is
  # Later runs pushed nothing and left the good model's card as it was.
  card = _read(good['model_card'])
  assert f"- Trained model: `{good['artifacts']['Trainer.model']}`." in card
  assert '- Blessed: yes.' in card


def test_the_card_is_rendered_from_the_run_artifacts_alone(runs):
  from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
  good, artifacts = runs['good'], runs['good']['artifacts']
  summary = good['summary']
  facts = model_card.read_facts(
      artifacts['ImageExampleGen.report'], artifacts['Evaluator.evaluation'],
      artifacts['RobustnessGate.robustness'], artifacts['Trainer.model'],
      artifacts['Trainer.model_run'], blessed=True, pushed_dir=summary['pushed_model'])
  card = model_card.render(facts)
  # The same card the component wrote: it needs no ML Metadata and no summary.json.
  assert card == _read(good['model_card'])
  assert facts.metadata['threshold'] == pytest.approx(summary['threshold'])
  assert facts.metrics['overall'] == summary['metrics']
  n = int(summary['metrics']['example_count'])
  assert f"Held-out `{summary['eval_split']}` split, {n} images never used" in card
  for split, by_class in summary['counts'].items():
    row = next(line for line in card.splitlines() if line.startswith(f'| {split} '))
    assert [c.strip() for c in row.strip('|').split('|')] == [
        split] + [str(by_class[c]) for c in sorted(by_class)]
  for name in summary['metrics_by_slice']:
    assert f'| {name} ' in card
  for name in summary['robustness']:
    assert f'| {name} ' in card


def test_a_refused_model_gets_a_card_in_the_run_output_only(runs):
  record = runs['below_bars']
  assert record['summary']['pushed_model'] is None
  card = _read(os.path.join(record['artifacts']['ModelCardGenerator.model_card'],
                            'model_card.md'))
  assert card.startswith('# Model card: candidate model (not pushed)\n')
  assert f"- Trained model: `{record['artifacts']['Trainer.model']}`." in card
  assert '- Blessed: no.' in card
  for reason in record['summary']['not_blessed_because']:
    assert f'- {reason}\n' in card
  assert '- accuracy under ' in card and 'below the robustness bar 0.99 (short by' in card
  versions = os.listdir(os.path.dirname(runs['good']['summary']['pushed_model']))
  assert [v for v in versions if v.isdigit()] == [
      os.path.basename(runs['good']['summary']['pushed_model'])]
