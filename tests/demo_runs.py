"""Real pipeline runs shared by test_e2e, test_gate, test_inspect, test_model_card and
test_notebooks (one pytest session).

One small demo set and one output folder, as a user's would be; each named run happens at most
once per session (marker file), so the modules reuse what another already ran, in any order:
  good                a real CNN under the default bars: blessed, pushed, the baseline;
  worse_than_baseline shuffled labels, value bars at 0: refused by the change threshold only;
  below_bars          the same shuffled model, precision, recall and robustness bars 0.99.
"""

import json
import os
import subprocess
import sys

from fakedetect.pipeline import names

FAKEDETECT = [sys.executable, '-m', 'fakedetect']
PER_CLASS = 200
NO_BARS = ['--set', 'gate.min_precision=0', '--set', 'gate.min_recall=0']
# The good model must clear the default bars (precision and recall 0.8) on any CPU's arithmetic
# (float32 here, bfloat16 where the CPU has it), with a margin a 69-image test split cannot eat:
# the small CNN on native 64 px crops (the local view) finds the demo's pixel-level traces in a
# few epochs (test accuracy 1.0 after 10 here). The `auto` preset for photos (the whole image at
# 128 px into the residual net) learns them slowly: 0.83 after 20 epochs, a coin flip at 0.8.
GOOD_EPOCHS = 10
GOOD_MODEL = ['--set', 'image.view=local', '--set', 'model.backbone=cnn']
GOOD = ['--set', f'train.epochs={GOOD_EPOCHS}'] + GOOD_MODEL
# The cheapest model that trains at all: the small CNN on the whole image at 32 px (no auto preset).
CHEAPEST_MODEL = ['--set', 'image.view=global', '--set', 'image.size=32',
                  '--set', 'model.backbone=cnn']
# The shuffled model is the cheapest. Its one epoch leaves scores near 0.5, on either side from
# one run to the next: it calls some images fake, all or none. So below_bars sets both the
# precision and the recall bar at 0.99: whichever way it falls, one of them is defined and says
# by how much the model falls short (none fake: recall 0; some or all: precision about 0.5).
SHUFFLED = ['--set', 'train.epochs=1', '--set', 'train.shuffle_labels=true'] + CHEAPEST_MODEL
RUNS = {
    'good': GOOD,
    'worse_than_baseline': SHUFFLED + NO_BARS,
    'below_bars': SHUFFLED + ['--set', 'gate.min_precision=0.99', '--set', 'gate.min_recall=0.99',
                              '--set', 'gate.min_robust_accuracy=0.99'],
}
ORDER = list(RUNS)
# The artifacts a record names (node, output key): the model card's inputs and the card itself.
ARTIFACTS = (('ImageExampleGen', 'report'), ('Evaluator', 'evaluation'),
             ('RobustnessGate', 'robustness'), ('RobustnessGate', 'blessing'),
             ('Trainer', 'model'), ('Trainer', 'model_run'), ('ModelCardGenerator', 'model_card'))


def write_demo_data(data, per_class: int) -> None:
  """The demo set, through the CLI as a user would make it."""
  subprocess.run(FAKEDETECT + ['demo-data', str(data), '--per-class', str(per_class)],
                 check=True, capture_output=True, timeout=300)


def workspace(tmp_path_factory):
  root = tmp_path_factory.getbasetemp() / 'fakedetect_demo_runs'
  root.mkdir(exist_ok=True)
  data = root / 'data'
  if not (data / 'real').is_dir():
    write_demo_data(data, PER_CLASS)
  return root


def latest_artifact(output, node, key):
  """The newest artifact folder of a node's output (TFX's <root>/<node>/<key>/<execution id>):
  the run just made's. A node it took from the cache reused the newest output of its kind, as no
  run in ORDER returns to an earlier one's settings."""
  folder = os.path.join(str(output), names.PIPELINE_ROOT_DIR, node, key)
  return max((os.path.join(folder, d) for d in os.listdir(folder)),
             key=lambda p: int(os.path.basename(p)))


def run(root, name):
  """Runs `name` (and the runs before it, which it depends on) once; returns its record."""
  for earlier in ORDER[:ORDER.index(name)]:
    if not (root / f'{earlier}.json').exists():
      run(root, earlier)
  marker = root / f'{name}.json'
  if marker.exists():
    return json.loads(marker.read_text())
  output = root / 'out'
  result = subprocess.run(
      FAKEDETECT + ['run', '--data', str(root / 'data'), '--output', str(output)] + RUNS[name],
      capture_output=True, text=True, timeout=900)
  if result.returncode != 0:
    raise AssertionError(f'run {name} failed ({result.returncode}):\n{result.stdout}\n'
                         f'{result.stderr}')
  summary = json.loads((output / names.SUMMARY_FILE).read_text())
  record = {'name': name, 'data': str(root / 'data'), 'output': str(output),
            'stdout': result.stdout, 'stderr': result.stderr, 'summary': summary,
            'robustness': latest_artifact(output, 'RobustnessGate', 'robustness'),
            'artifacts': {f'{node}.{key}': latest_artifact(output, node, key)
                          for node, key in ARTIFACTS}}
  if name == 'good':  # the ModelCardGenerator writes the card of the model pushed beside it
    record['model_card'] = os.path.join(summary['pushed_model'], 'assets.extra', 'model_card.md')
    assert os.path.isfile(record['model_card']), result.stdout
  marker.write_text(json.dumps(record))
  return record
