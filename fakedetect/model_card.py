"""The model card of a pushed model: Markdown (and HTML) beside it, where TF Serving ignores it.

Written to `<serving_model>/<name>/<version>/assets.extra/model_card.md` (+ `.html`); TF Serving
loads only saved_model.pb and variables/, so assets.extra/ travels with the model unseen.

Everything in the card is read back from the run, not restated from defaults: ML Metadata and the
ingest report (fakedetect/summary.py), the TFMA evaluation and its thresholds (eval_config.json),
the RobustnessGate's robustness.json and the model's own metadata. Where the data cannot support
a claim, the card says so instead of making it.
"""

import html
import json
import math
import os
from typing import Any, Dict, List, Optional, Union

from fakedetect import summary as summary_lib
from fakedetect.components import evaluation_results
from fakedetect.pipeline.config import PipelineConfig

CARD_FILE = os.path.join('assets.extra', 'model_card.md')
CARD_HTML_FILE = os.path.join('assets.extra', 'model_card.html')
_METRICS = ('accuracy', 'precision', 'recall', 'f1', 'auc', 'pr_auc')


def _fmt(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '-'
  if isinstance(value, float):
    return f'{value:.3f}'
  return str(value)


def _table(header: List[str], rows: List[List[Any]]) -> List[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_fmt(c) for c in row) + ' |' for row in rows]
  return lines + ['']


def wilson_interval(successes: float, n: float, z: float = 1.96):
  """95% Wilson score interval of a proportion: how far a small test set can be trusted."""
  if not n:
    return float('nan'), float('nan')
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


class _Run:
  """The facts of the latest run the card is built from."""

  def __init__(self, config: PipelineConfig, summary: Optional[Dict[str, Any]] = None):
    from fakedetect.components import robustness as robustness_lib  # pylint: disable=g-import-not-at-top
    from fakedetect.components import export  # pylint: disable=g-import-not-at-top
    self.summary = summary if summary is not None else summary_lib.collect(config)
    outputs = summary_lib.RunOutputs(config)
    report = outputs.artifact('ImageExampleGen', 'report')
    self.report: Dict[str, Any] = {}
    if report is not None and os.path.isfile(os.path.join(report.uri, 'report.json')):
      with open(os.path.join(report.uri, 'report.json'), encoding='utf-8') as f:
        self.report = json.load(f)
    artifact = outputs.artifact('RobustnessGate', 'robustness')
    self.robustness = None
    if artifact is not None and os.path.isfile(os.path.join(artifact.uri,
                                                            robustness_lib.RESULT_FILE)):
      self.robustness = robustness_lib.read(artifact.uri)
    self.model_dir = self.summary.get('pushed_model')
    self.metadata = export.read_metadata(self.model_dir) if self.model_dir else {}


def _data_section(run: _Run) -> List[str]:
  s, report = run.summary, run.report
  lines = ['## Training data', '',
           f"- Folder: `{s.get('data_dir')}` (layout `{s.get('layout')}`).",
           f"- Files found {s.get('files_found')}, ingested {s.get('ingested')}, quarantined "
           f"{len(s.get('quarantined') or [])}"
           + (' (' + ', '.join(f'{r}: {n}' for r, n in
                               sorted(report.get('quarantine_reasons', {}).items())) + ')'
              if report.get('quarantine_reasons') else '') + '.',
           '- Split by content hash ' + ', '.join(
               f'{k} {v}%' for k, v in (report.get('split_ratios') or {}).items())
           + '; the model trained on `train`, stopped early and chose its threshold on `eval`, '
           f"and was judged on `{s.get('eval_split')}`.", '']
  counts = s.get('counts') or {}
  if counts:
    classes = sorted({c for by_class in counts.values() for c in by_class})
    lines += ['Images per split and class:', '']
    lines += _table(['split'] + classes,
                    [[split] + [counts[split].get(c, 0) for c in classes]
                     for split in sorted(counts)])
  for title, key in (('Sources (camera or generator) per class', 'sources'),
                     ('File formats per class', 'formats')):
    by_class = report.get(key) or {}
    if by_class:
      lines += [f'{title}:', '']
      lines += _table(['class', key[:-1], 'images'],
                      [[c, name, n] for c, names in sorted(by_class.items())
                       for name, n in sorted(names.items())])
  for cls, profile in sorted((report.get('profile') or {}).items()):
    width, height = profile.get('width', {}), profile.get('height', {})
    lines.append(f"- {cls}: width {width.get('min')}-{width.get('max')} px (median "
                 f"{width.get('median')}), height {height.get('min')}-{height.get('max')} px; "
                 'size buckets ' + ', '.join(f'{b} {v:.0%}' for b, v in
                                            sorted(profile.get('size_bucket_shares', {}).items())))
  warnings = s.get('data_warnings') or []
  if warnings:
    lines += ['', 'Data warnings raised at ingest:', ''] + [f'- {w}' for w in warnings]
  return lines + ['']


def _training_section(run: _Run) -> List[str]:
  s, meta = run.summary, run.metadata
  hparams = s.get('hyperparameters') or meta.get('hyperparameters') or {}
  lines = ['## Training setup', '',
           f"- A small CNN (conv-BN-ReLU blocks, global average pooling, sigmoid), trained from "
           f"scratch with Keras on {s.get('training_device') or 'CPU'}"
           + (f" ({s['training_precision']} compute; the exported model computes in float32)"
              if s.get('training_precision') not in (None, 'float32') else '') + '; '
           f"{s.get('epochs_run') or meta.get('epochs_run')} epochs run (early stopping on "
           'validation loss).',
           '- Hyperparameters: ' + ', '.join(f'{k}={v}' for k, v in sorted(hparams.items())) + '.',
           f"- Input: the encoded file bytes (JPEG, PNG, GIF, BMP), decoded and resized to "
           f"{meta.get('image_size')}x{meta.get('image_size')} RGB in [0, 1] by the Transform "
           'graph inside the model.',
           f"- Output: `fake_probability`; `is_fake` = 1 when it is >= the decision threshold "
           f"**{_fmt(s.get('threshold'))}**, chosen to maximise "
           f"{meta.get('threshold_metric', 'f1')} on the eval split.", '']
  return lines


def _evaluation_section(run: _Run) -> List[str]:
  s = run.summary
  metrics = s.get('metrics') or {}
  n = int(metrics.get('example_count') or 0)
  lines = ['## Evaluation', '',
           f"Held-out `{s.get('eval_split')}` split, {n} images never used in training, "
           'threshold selection or tuning. TFMA metrics below cut the probability at 0.5; the '
           "robustness table uses the model's own threshold.", '']
  lines += _table(['metric', 'value'], [[m, metrics.get(m)] for m in _METRICS if m in metrics])
  if n and 'accuracy' in metrics:
    low, high = wilson_interval(metrics['accuracy'] * n, n)
    lines += [f'With {n} test images, the 95% interval on accuracy is about '
              f'{low:.3f}-{high:.3f}.', '']
  if s.get('evaluation'):
    bars = evaluation_results.gate_bars(s['evaluation'])
    if run.robustness and run.robustness.get('min_accuracy'):
      bars.append(f"accuracy under every perturbation >= {run.robustness['min_accuracy']:g}")
    lines += ['Gate this model passed: ' + ('; '.join(bars) or 'none') + '.', '']
  by_slice = s.get('metrics_by_slice') or {}
  if by_slice:
    lines += ['### Per slice', '']
    lines += _table(['slice', 'images'] + list(_METRICS),
                    [[name, int(m.get('example_count', 0))] + [m.get(k) for k in _METRICS]
                     for name, m in sorted(by_slice.items())])
    lines += ['On a slice holding one class only (one camera, one generator) AUC is undefined '
              '(TFMA reports 0) and precision is undefined (-) when no image is called fake: '
              'read accuracy there.', '']
    small = [name for name, m in by_slice.items() if m.get('example_count', 0) < 30]
    if small:
      lines += [f'Slices with fewer than 30 images ({", ".join(sorted(small))}) are too small '
                'for their numbers to be more than indicative.', '']
  if run.robustness:
    rob = run.robustness
    lines += ['### Under perturbation', '',
              f"The same split, each image perturbed and scored through `serving_default`, at the "
              f"model's threshold {_fmt(rob.get('threshold', s.get('threshold')))}. flip_rate: share of images whose "
              'verdict the perturbation alone changed.', '']
    lines += _table(['perturbation', 'what', 'accuracy', 'precision', 'recall', 'auc',
                     'flip_rate'],
                    [[name, m.get('description'), m.get('accuracy'), m.get('precision'),
                      m.get('recall'), m.get('auc'), m.get('flip_rate')]
                     for name, m in rob.get('perturbations', {}).items()])
    lines += _mistakes(rob)
  return lines


def _mistakes(rob: Dict[str, Any]) -> List[str]:
  """The files to open first when asking where the model fails (robustness.json 'mistakes')."""
  mistakes = rob.get('mistakes')
  if mistakes is None:
    return []
  lines = ['### Most confident mistakes', '',
           f"The wrong verdicts the model was surest of on the `{rob.get('split')}` split "
           '(paths relative to the data folder): look at these images for what the errors '
           'have in common.', '']
  for cls, title in (('real', 'Real images called fake'), ('fake', 'Fake images called real')):
    rows = mistakes.get(cls) or []
    if rows:
      lines += [f'{title}:', '']
      lines += _table(['path', 'source', 'P(fake)'],
                      [[f"`{m['path']}`", m['source'], m['fake_probability']] for m in rows])
    else:
      lines += [f'{title}: none.', '']
  return lines


def _limitations(run: _Run) -> List[str]:
  s, report, rob = run.summary, run.report, run.robustness
  lines = ['## Limitations', '']
  sources = report.get('sources') or {}
  for cls, names in sorted(sources.items()):
    lines.append(f"- The {cls} class comes from {len(names)} source(s): "
                 f"{', '.join(sorted(names))}. Nothing here measures images from other "
                 f"{'generators' if cls == 'fake' else 'cameras or sources'}; expect accuracy "
                 'on them to differ, possibly by a lot.')
  shares = {cls: p.get('format_shares', {}) for cls, p in (report.get('profile') or {}).items()}
  if len(shares) == 2:
    a, b = shares.values()
    gap = max(abs(a.get(f, 0) - b.get(f, 0)) for f in set(a) | set(b)) if a or b else 0
    if gap > 0.1:
      lines.append(f'- File formats are not balanced between classes (gap up to {gap:.0%}): '
                   'the model may partly have learned the format rather than the content.')
  metrics = s.get('metrics') or {}
  if metrics.get('example_count', 0) < 1000:
    lines.append(f"- The test split holds {int(metrics.get('example_count', 0))} images: the "
                 'numbers above carry real sampling error (see the interval).')
  if rob:
    worst = rob.get('worst')
    drop = rob.get('perturbations', {}).get(worst, {}).get('accuracy_drop')
    if worst and drop is not None:
      lines.append(f"- Robustness was measured for {len(rob.get('perturbations', {})) - 1} "
                   f"synthetic perturbations only; the worst, {worst}, costs {drop:.3f} "
                   'accuracy. Other processing (cropping, screenshots, filters, other codecs, '
                   'heavier compression) was not measured.')
  lines += [f"- Images are resized to {run.metadata.get('image_size')} px before the model "
            'sees them: traces finer than that resolution are lost.',
            '- Precision and recall in the gate use a 0.5 cut, the served decision uses the '
            'threshold above; the two can differ.', '']
  return lines


_INTENDED_USE = """## Intended use

- A screening signal that ranks images for human review: which ones look generated.
- Research and monitoring on data resembling the training data described above.

Not intended for: deciding alone whether an image is authentic, legal or journalistic evidence,
judging people, or any use on image kinds the training data does not cover.
"""

_ETHICS = """## Ethical considerations

- **A score is not proof.** `fake_probability` is a model output on an image, not a fact about
  it. A low score does not show an image is authentic, and a high one does not show it was
  generated: every detector has false positives and misses, and new generators evade old
  detectors. Do not present a score as proof of authenticity or fakery.
- **Misuse.** The model can be used to accuse people of faking images, or probed to make
  generated images pass as real. Keep a human in the loop, and do not publish verdicts on
  individuals' images based on it.
- **Bias.** Errors are not spread evenly: they depend on camera, generator, format and size
  (see the slice table), and on content the data may under-represent. Check the slices relevant
  to your use before relying on the model, and re-evaluate on your own data.
- **Privacy.** Scored images may contain people; handle inputs and logs under the applicable
  rules.
"""


def render(run: _Run) -> str:
  s = run.summary
  version = os.path.basename(run.model_dir) if run.model_dir else None
  lines = [f'# Model card: {os.path.basename(os.path.dirname(run.model_dir or ""))} '
           f'version {version}', '',
           'Tells real photographs from AI-generated images: input an encoded image, output the '
           'probability that it is generated (fake).', '',
           '## Model details', '',
           f'- Version folder: `{run.model_dir}` (TF Serving layout; this card is in '
           '`assets.extra/`, which the server ignores).',
           f"- Pipeline run: `{s.get('run_id')}`; blessed: {'yes' if s.get('blessed') else 'no'}.",
           f"- Decision threshold: **{_fmt(s.get('threshold'))}**.", '']
  lines += _INTENDED_USE.splitlines() + ['']
  lines += _data_section(run) + _training_section(run) + _evaluation_section(run)
  lines += _limitations(run) + _ETHICS.splitlines()
  return '\n'.join(lines) + '\n'


def to_html(markdown: str) -> str:
  """A plain HTML rendering (headings, lists, tables, bold, code) with no extra dependency."""
  import re  # pylint: disable=g-import-not-at-top

  def inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r'\*\*(.+?)\*\*', r'<b>\1</b>', text)
    return re.sub(r'`(.+?)`', r'<code>\1</code>', text)

  out, in_list, in_table = [], False, False
  for line in markdown.splitlines():
    if in_list and not line.startswith(('- ', '  ')):
      out.append('</ul>')
      in_list = False
    if in_table and not line.startswith('|'):
      out.append('</table>')
      in_table = False
    if line.startswith('#'):
      level = len(line) - len(line.lstrip('#'))
      out.append(f'<h{level}>{inline(line[level:].strip())}</h{level}>')
    elif line.startswith('- '):
      if not in_list:
        out.append('<ul>')
        in_list = True
      out.append(f'<li>{inline(line[2:])}')
    elif line.startswith('  ') and in_list:
      out.append(inline(line.strip()))
    elif line.startswith('|'):
      if set(line) <= set('|-'):
        continue
      if not in_table:
        out.append('<table>')
        in_table = True
      cells = [c.strip() for c in line.strip('|').split('|')]
      out.append('<tr>' + ''.join(f'<td>{inline(c)}</td>' for c in cells) + '</tr>')
    elif line.strip():
      out.append(f'<p>{inline(line)}</p>')
  out += ['</ul>'] if in_list else []
  out += ['</table>'] if in_table else []
  return ('<!doctype html><html><head><meta charset="utf-8"><title>model card</title><style>'
          'body{font-family:sans-serif;max-width:900px;margin:2em auto}td{border:1px solid #ccc;'
          'padding:2px 6px}table{border-collapse:collapse}</style></head><body>\n'
          + '\n'.join(out) + '\n</body></html>\n')


def write_for_run(config_or_output_dir: Union[PipelineConfig, str],
                  summary: Optional[Dict[str, Any]] = None,
                  write_html: bool = True) -> Optional[str]:
  """Writes the card of the model the latest run pushed; returns the .md path (None: no push).

  `summary`: the run's summary.collect() result when the caller has it (saves reading it again).
  """
  config = (config_or_output_dir if isinstance(config_or_output_dir, PipelineConfig)
            else PipelineConfig(output_dir=config_or_output_dir))
  run = _Run(config, summary)
  if not run.model_dir or not os.path.isdir(run.model_dir):
    return None
  markdown = render(run)
  path = os.path.join(run.model_dir, CARD_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  for target, text in ((path, markdown),
                       (os.path.join(run.model_dir, CARD_HTML_FILE), to_html(markdown))):
    if target == path or write_html:
      with open(target + '.tmp', 'w', encoding='utf-8') as f:
        f.write(text)
      os.replace(target + '.tmp', target)
  return path
