"""Serving throughput and latency of a pushed model, on this machine.

Side by side, in one process and on the same images:
  raw      `serving_default` on encoded JPEG bytes (decode + resize + the classifier, as TF Serving
           runs it);
  decoded  the same classifier (the pushed weights) on tensors decoded and resized beforehand;
and the p50/p99 latency of `serving_default` for one image. Goals: raw/decoded >= 0.8, and
p50 <= 5 ms for one 32x32 image.

  .venv/bin/python benchmarks/serve.py [--model outputs] [--size 32] [--batch 256]
"""

import argparse
import io
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

RATIO_GOAL = 0.8
P50_GOAL_MS = 5.0


def jpegs(count: int, size: int, seed: int = 0):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format='JPEG', quality=90)
    out.append(buffer.getvalue())
  return out


def throughput(fn, images_per_call: int, seconds: float) -> float:
  """Images per second of fn(), best of three timed windows after a warm-up call."""
  fn()
  best = 0.0
  for _ in range(3):
    calls, start = 0, time.perf_counter()
    while True:
      fn()
      calls += 1
      elapsed = time.perf_counter() - start
      if elapsed >= seconds / 3:
        break
    best = max(best, calls * images_per_call / elapsed)
  return best


def latency_ms(fn, repeats: int):
  for _ in range(20):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1000)
  return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def run(model_dir: str, size: int, batch: int, seconds: float, repeats: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import export, views  # pylint: disable=g-import-not-at-top
  from fakedetect import explain  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(model_dir)
  serving = loaded.signatures[export.SERVING_SIGNATURE]
  metadata = loaded.signatures[export.METADATA_SIGNATURE]()
  view = views.from_metadata(metadata)
  image_size = view.size
  classifier = explain.load_classifier(model_dir)
  encoded = tf.constant(jpegs(batch, size))
  decoded = views.serving_inputs(views.transform(encoded, view), view)
  classify = tf.function(lambda x: classifier(x, training=False))
  # Same model, same numbers: the comparison is of the input path only.
  np.testing.assert_allclose(serving(image_bytes=encoded)[export.PROBABILITY_KEY].numpy(),
                             np.ravel(classify(decoded).numpy()), atol=1e-4)
  raw = throughput(lambda: serving(image_bytes=encoded), batch, seconds)
  pre = throughput(lambda: classify(decoded), batch, seconds)
  one = encoded[:1]
  p50, p99 = latency_ms(lambda: serving(image_bytes=one), repeats)
  return {'model': model_dir, 'image_side': size, 'model_image_size': image_size,
          'batch': batch, 'raw_jpeg_images_per_s': raw, 'decoded_images_per_s': pre,
          'ratio': raw / pre, 'latency_ms_p50': p50, 'latency_ms_p99': p99,
          'ratio_goal_met': raw / pre >= RATIO_GOAL, 'p50_goal_met': p50 <= P50_GOAL_MS}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='outputs',
                      help='Pushed model: version folder, serving root or run output folder.')
  parser.add_argument('--size', type=int, default=32, help='Side of the test JPEGs (px).')
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--seconds', type=float, default=6.0, help='Timing per throughput side.')
  parser.add_argument('--repeats', type=int, default=300, help='Single-image calls timed.')
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args(argv)
  from fakedetect import registry  # pylint: disable=g-import-not-at-top
  try:
    model_dir = registry.find_model(args.model)
  except registry.ModelsError as e:
    print(e, file=sys.stderr)
    return 2
  result = run(model_dir, args.size, args.batch, args.seconds, args.repeats)
  if args.json:
    print(json.dumps(result, indent=2))
    return 0
  print(f"model {result['model']} (input {result['model_image_size']}px), "
        f"{args.size}x{args.size} JPEGs, batch {args.batch}")
  print(f"  serving_default on raw JPEG bytes  {result['raw_jpeg_images_per_s']:10.0f} images/s")
  print(f"  same model on pre-decoded tensors  {result['decoded_images_per_s']:10.0f} images/s")
  print(f"  ratio {result['ratio']:.2f} (goal >= {RATIO_GOAL}: "
        f"{'met' if result['ratio_goal_met'] else 'NOT met'})")
  print(f"  one image: p50 {result['latency_ms_p50']:.2f} ms, p99 {result['latency_ms_p99']:.2f} "
        f"ms (goal p50 <= {P50_GOAL_MS} ms: {'met' if result['p50_goal_met'] else 'NOT met'})")
  return 0


if __name__ == '__main__':
  sys.exit(main())
