"""A small, deterministic real-vs-fake image set that is an actual detection task.

Both classes come from one procedural scene generator and share the exact same multiset of image
sizes, file formats and JPEG qualities, so content, colour, brightness, size and container carry no
label information. Only how the pixels were made differs, as in the real problem:

* ``real/camera_*``: rendered at full resolution, then a camera model (Bayer mosaic,
  signal-dependent sensor noise, bilinear demosaic).
* ``fake/nearest_upsampler``: rendered at 1/2-1/4 of the size, nearest-neighbour up-sampled.
* ``fake/transposed_conv``: rendered at a quarter of the size, then two stride-2 zero-insertion +
  fixed-kernel layers whose even and odd phases have unequal gain: the checkerboard of stacked
  transposed convolutions.

Fakes carry no sensor noise. Files are 96-384 px on the longer side (log-uniform: as many of
96-192 px as of 192-384 px) in four aspect ratios, either orientation, as a user's folder is. The
pipeline may look at native-resolution crops (the `local` view) or at the whole image resized (the
`global` view), so trace strengths are tuned on native pixels: a small CNN separates the classes on
random native 64x64 crops within a few epochs, and the whole image resized to 64 px keeps a weaker
trace (the sensor noise, averaged; the up-samplers' patterns only in the smaller files).
Pure numpy + Pillow: generating must not pay TensorFlow's import time (about 13 ms of one core a
file, 8 s for 300 per class).
"""

import io
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from fakedetect.components import errors

REAL_SOURCES = ('camera_a', 'camera_b')
FAKE_SOURCES = ('nearest_upsampler', 'transposed_conv')
LONGER_SIDE = (96, 384)  # inclusive
ASPECT_RATIOS = (1.0, 5 / 4, 4 / 3, 3 / 2)  # longer / shorter side
MIN_SIDE, MAX_SIDE = round(LONGER_SIDE[0] / max(ASPECT_RATIOS)), LONGER_SIDE[1]  # any side
PNG_FRACTION = 0.4
JPEG_QUALITY_RANGE = (85, 95)  # inclusive
MARKER_NAME = '.fakedetect_demo.json'
_MARKER_KIND = 'fakedetect-demo-data'
_MARKER_VERSION = 1

# Camera noise model: variance = gain * (shot * signal + read), signal in [0, 1]; about 0.05-0.08
# std at mid-grey, a small-sensor camera at a high ISO: strong enough that a 384 px file resized to
# 64 px (a 6x6 average) still keeps a trace of it.
_CAMERAS = {
    'camera_a': {'shot': 0.0064, 'read': 0.00032, 'cfa_offset': (0, 0)},
    'camera_b': {'shot': 0.0088, 'read': 0.00048, 'cfa_offset': (1, 0)},
}
# Phase-gain imbalance of the transposed-conv kernel (0 would be a clean bilinear up-sampler); kept
# small so the checkerboard is a trace to find, not a pattern visible at a glance.
_TCONV_IMBALANCE = 0.06
_TCONV_LAYERS = 2
# Up-sampling factor of the nearest-neighbour generator (non-integer, so blocks are irregular).
_NEAREST_FACTOR = (2.0, 4.0)

# Scene texture: 1/f^beta exponent and amplitude. Smooth enough that fine detail does not drown
# the sensor noise, the one trace every real image has.
_TEX_BETA = (1.5, 2.5)
_TEX_AMP = (0.02, 0.08)

Spec = Tuple[int, int, str, int]  # height, width, 'jpeg' | 'png', JPEG quality (0 for PNG)


# ----------------------------------------------------------------------------- scenes


def _scene(rng: np.random.Generator) -> dict:
  """Scene parameters in resolution-free coordinates, so either class can render the same kind of
  scene at any size."""
  shapes = []
  for _ in range(int(rng.integers(2, 8))):
    shapes.append({
        'kind': str(rng.choice(['ellipse', 'rect', 'blob'])),
        'centre': rng.uniform(0.0, 1.0, 2),
        'radii': rng.uniform(0.06, 0.4, 2),
        'angle': float(rng.uniform(0.0, np.pi)),
        'colour': rng.uniform(0.0, 1.0, 3),
        'alpha': float(rng.uniform(0.5, 1.0)),
    })
  return {
      'c0': rng.uniform(0.05, 0.95, 3),
      'c1': rng.uniform(0.05, 0.95, 3),
      'angle': float(rng.uniform(0.0, 2 * np.pi)),
      'shapes': shapes,
      'tex_seed': int(rng.integers(2**62)),
      'tex_beta': float(rng.uniform(*_TEX_BETA)),
      'tex_amp': float(rng.uniform(*_TEX_AMP)),
      'tex_tint': rng.uniform(0.3, 1.0, 3),
  }


def _pink_noise(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
  """1/f^beta noise, unit std; frequencies in cycles per image keep the look size-independent."""
  fy = np.fft.fftfreq(h)[:, None] * h
  fx = np.fft.rfftfreq(w)[None, :] * w
  f = np.sqrt(fy * fy + fx * fx)
  f[0, 0] = 1.0
  spectrum = np.fft.rfft2(rng.standard_normal((h, w))) / f**beta
  spectrum[0, 0] = 0.0
  noise = np.fft.irfft2(spectrum, s=(h, w))
  return noise / (noise.std() + 1e-12)


def _render(scene: dict, h: int, w: int) -> np.ndarray:
  """float32 [h, w, 3] in [0, 1]; edges anti-aliased over about one pixel of the render size.
  float32 and in-place blending because rendering is most of the generation time at real sizes."""
  ys = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
  xs = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
  c, s = np.cos(scene['angle']), np.sin(scene['angle'])
  t = np.clip(((xs - 0.5) * c + (ys - 0.5) * s) / (abs(c) + abs(s)) + 0.5, 0.0, 1.0)[..., None]
  img = scene['c0'].astype(np.float32) + (scene['c1'] - scene['c0']).astype(np.float32) * t

  for shape in scene['shapes']:
    dx, dy = xs - shape['centre'][0], ys - shape['centre'][1]
    ca, sa = np.cos(shape['angle']), np.sin(shape['angle'])
    u = (dx * ca + dy * sa) / shape['radii'][0]
    v = (-dx * sa + dy * ca) / shape['radii'][1]
    if shape['kind'] == 'blob':
      cover = np.exp(-2.0 * (u * u + v * v))
    else:
      d = np.sqrt(u * u + v * v) if shape['kind'] == 'ellipse' else np.maximum(abs(u), abs(v))
      pixels_per_radius = min(shape['radii'][0] * w, shape['radii'][1] * h)
      cover = np.clip((1.0 - d) * pixels_per_radius + 0.5, 0.0, 1.0)
    img += (shape['alpha'] * cover)[..., None] * (shape['colour'].astype(np.float32) - img)

  tex = _pink_noise(np.random.default_rng(scene['tex_seed']), h, w, scene['tex_beta'])
  img += (scene['tex_amp'] * tex[..., None] * scene['tex_tint']).astype(np.float32)
  return np.clip(img, 0.0, 1.0)


# ----------------------------------------------------------------------------- the two origins


def _box3(x: np.ndarray) -> np.ndarray:
  """3x3 [1 2 1]^T[1 2 1] filter with edge replication (the bilinear demosaic kernel)."""
  p = np.pad(x, 1, mode='edge')
  r = p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]
  return r[:-2] + 2.0 * r[1:-1] + r[2:]


def _camera(img: np.ndarray, rng: np.random.Generator, camera: str) -> np.ndarray:
  """Noise is added on the single-channel mosaic before demosaicing, as in a sensor, which makes it
  signal-dependent and spatially/channel-correlated rather than i.i.d. per RGB value."""
  params = _CAMERAS[camera]
  h, w, _ = img.shape
  oy, ox = params['cfa_offset']
  yy = (np.arange(h)[:, None] + oy) % 2
  xx = (np.arange(w)[None, :] + ox) % 2
  cfa = np.where(yy == 0, np.where(xx == 0, 0, 1), np.where(xx == 0, 1, 2))  # RGGB
  raw = np.take_along_axis(img, cfa[..., None], axis=2)[..., 0]
  gain = rng.uniform(0.7, 1.4)  # per-shot ISO
  sigma = np.sqrt(gain * (params['shot'] * raw + params['read']))
  raw = raw + sigma * rng.standard_normal(raw.shape)
  out = np.empty_like(img)
  for ch in range(3):
    mask = (cfa == ch).astype(np.float64)
    interpolated = _box3(raw * mask) / _box3(mask)
    out[..., ch] = np.where(mask > 0, raw, interpolated)
  return np.clip(out, 0.0, 1.0)


def _nearest_upsampler(scene: dict, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """Renders at 1/2-1/4 of the file's size and repeats pixels up to it, as a generator whose output
  was enlarged for display: blocks of 2-4 pixels in native crops, a pixel or more after the resize
  of the smaller files to 64."""
  scale = 1.0 / rng.uniform(*_NEAREST_FACTOR)
  lh, lw = max(4, int(round(h * scale))), max(4, int(round(w * scale)))
  low = _render(scene, lh, lw)
  iy = np.minimum((np.arange(h) * lh) // h, lh - 1)
  ix = np.minimum((np.arange(w) * lw) // w, lw - 1)
  return low[iy][:, ix]


def _tconv_up(x: np.ndarray, axis: int) -> np.ndarray:
  """Stride-2 zero insertion + the 3-tap kernel [odd/2, even, odd/2] along one axis."""
  even, odd = 1.0 - _TCONV_IMBALANCE / 2, 1.0 + _TCONV_IMBALANCE / 2
  shape = list(x.shape)
  shape[axis] *= 2
  z = np.zeros(shape)
  idx = [slice(None)] * x.ndim
  idx[axis] = slice(0, None, 2)
  z[tuple(idx)] = x
  n = shape[axis]
  p = np.pad(z, [(1, 1) if a == axis else (0, 0) for a in range(x.ndim)], mode='edge')
  tap = lambda k: np.take(p, np.arange(k, k + n), axis=axis)
  return odd / 2 * tap(0) + even * tap(1) + odd / 2 * tap(2)


def _transposed_conv(scene: dict, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """Stacked stride-2 layers with unequal even/odd gain (mean kept) leave checkerboards of period
  2 and 4, both in native crops; the resize of a whole image to 64 px averages the period-2 one
  away and keeps part of the period-4 one only in the smaller files."""
  factor = 2**_TCONV_LAYERS
  margin = 2  # low-res pixels, so the padded borders are cropped away
  big = _render(scene, -(-h // factor) + 2 * margin, -(-w // factor) + 2 * margin)
  for _ in range(_TCONV_LAYERS):
    big = _tconv_up(_tconv_up(big, 0), 1)
  oy, ox = (margin * factor + int(v) for v in rng.integers(0, factor, 2))
  return np.clip(big[oy:oy + h, ox:ox + w], 0.0, 1.0)


def _make_pixels(label: str, source: str, spec: Spec, rng: np.random.Generator) -> np.ndarray:
  h, w = spec[0], spec[1]
  scene = _scene(rng)
  if label == 'real':
    img = _camera(_render(scene, h, w), rng, source)
  elif source == 'nearest_upsampler':
    img = _nearest_upsampler(scene, h, w, rng)
  else:
    img = _transposed_conv(scene, h, w, rng)
  return np.round(img * 255.0).astype(np.uint8)


def _encode(pixels: np.ndarray, fmt: str, quality: int) -> bytes:
  """Every encoder option is pinned, so output bytes depend only on the pixels."""
  buf = io.BytesIO()
  image = Image.fromarray(pixels, 'RGB')
  if fmt == 'jpeg':
    image.save(buf, 'JPEG', quality=quality, subsampling=2, optimize=False, progressive=False)
  else:
    image.save(buf, 'PNG', compress_level=6, optimize=False)
  return buf.getvalue()


# ----------------------------------------------------------------------------- plan and files


def _specs(per_class: int, rng: np.random.Generator) -> List[Spec]:
  """One spec list shared by both classes: identical size, format and quality distributions."""
  n_png = int(round(per_class * PNG_FRACTION))
  formats = np.array(['png'] * n_png + ['jpeg'] * (per_class - n_png))
  rng.shuffle(formats)
  specs = []
  for fmt in formats:
    log_side = rng.uniform(np.log(LONGER_SIDE[0]), np.log(LONGER_SIDE[1] + 1))
    longer = min(int(np.exp(log_side)), LONGER_SIDE[1])
    shorter = round(longer / ASPECT_RATIOS[int(rng.integers(len(ASPECT_RATIOS)))])
    h, w = (longer, shorter) if rng.integers(2) else (shorter, longer)
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    specs.append((h, w, str(fmt), quality if fmt == 'jpeg' else 0))
  return specs


def _plan(per_class: int, seed: int) -> List[Tuple[str, str, str, Spec, int]]:
  """(relative path, label, source, spec, image index) for every image; a pure function of its
  arguments, so the file list is known before anything is written."""
  specs = _specs(per_class, np.random.default_rng([seed, 1]))
  plan = []
  for label_id, (label, sources) in enumerate((('real', REAL_SOURCES), ('fake', FAKE_SOURCES))):
    order = np.random.default_rng([seed, 2, label_id]).permutation(per_class)
    for i in range(per_class):
      spec = specs[order[i]]
      source = sources[i % len(sources)]
      ext = 'jpg' if spec[2] == 'jpeg' else 'png'
      plan.append((f'{label}/{source}/img_{i:04d}.{ext}', label, source, spec, i))
  return plan


def _broken_files(seed: int) -> Dict[str, bytes]:
  """The failure modes a scraped folder really has: empty, mislabelled, cut-off downloads."""
  rng = np.random.default_rng([seed, 3])
  spec: Spec = (96, 128, 'jpeg', 90)
  jpeg = _encode(_make_pixels('real', 'camera_b', spec, rng), 'jpeg', 90)
  png = _encode(_make_pixels('fake', 'transposed_conv', spec, rng), 'png', 0)
  start_of_scan = jpeg.find(b'\xff\xda')
  return {
      'real/camera_a/broken_empty.jpg': b'',
      'fake/nearest_upsampler/broken_not_an_image.png':
          b'This is a text file with an image extension, as left by a failed download.\n',
      'real/camera_b/broken_truncated.jpg': jpeg[:start_of_scan + (len(jpeg) - start_of_scan) // 3],
      'fake/transposed_conv/broken_truncated.png': png[:len(png) // 2],
  }


def _write_atomic(path: str, data: bytes) -> None:
  """A killed run leaves at most a hidden '.name.tmp', never a half file under a real name."""
  tmp = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.tmp')
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def _read_marker(out_dir: str) -> Optional[dict]:
  try:
    with open(os.path.join(out_dir, MARKER_NAME), encoding='utf-8') as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(marker, dict) or marker.get('kind') != _MARKER_KIND:
    return None
  return marker


class DemoDataError(errors.UserError):
  """The demo set cannot be written where asked; the message says why."""


def _inside(out_dir: str, rel: str) -> bool:
  root = os.path.realpath(out_dir)
  path = os.path.realpath(os.path.join(out_dir, rel))
  return path.startswith(root + os.sep)


def _prepare(out_dir: str) -> None:
  """Only ever deletes files a previous demo run recorded (plus its temp files): a user's folder
  is never touched."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise DemoDataError(f'demo data: {out_dir!r} exists and is not a directory.')
  if not os.path.isdir(out_dir) or not os.listdir(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    return
  marker = _read_marker(out_dir)
  if marker is None:
    raise DemoDataError(
        f'demo data: refusing to write into {out_dir!r}: it is not empty and was not made by '
        f'this generator (no valid {MARKER_NAME}). Choose a new or empty directory.')
  for rel in marker.get('files', []):
    if isinstance(rel, str) and _inside(out_dir, rel):
      path = os.path.join(out_dir, rel)
      if os.path.isfile(path):
        os.remove(path)
  for label in ('real', 'fake'):
    for root, dirs, files in os.walk(os.path.join(out_dir, label), topdown=False):
      for name in files:
        if name.startswith('.') and name.endswith('.tmp'):
          os.remove(os.path.join(root, name))
      for name in dirs:
        sub = os.path.join(root, name)
        if not os.listdir(sub):
          os.rmdir(sub)


def _write_marker(out_dir: str, seed: int, per_class: int, files: List[str], complete: bool):
  marker = {'kind': _MARKER_KIND, 'version': _MARKER_VERSION, 'seed': seed,
            'per_class': per_class, 'complete': complete, 'files': files}
  _write_atomic(os.path.join(out_dir, MARKER_NAME),
                (json.dumps(marker, indent=1, sort_keys=True) + '\n').encode('utf-8'))


def generate(out_dir: str, per_class: int = 200, seed: int = 0, broken: bool = True,
             progress: bool = False) -> dict:
  """Writes the demo set to out_dir/{real,fake}/<source>/ and returns a summary.

  Same arguments give byte-identical files. A directory is only reused if it is empty or holds a
  previous demo set (recognised by its marker file, which also lists what to delete first);
  anything else raises DemoDataError rather than mixing demo images into a user's data.
  Counts in the summary exclude the broken files, which are listed separately.
  """
  if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
    raise DemoDataError(f'demo data: per_class must be a positive integer, got {per_class!r}.')
  seed = int(seed)
  per_class = int(per_class)
  _prepare(out_dir)

  plan = _plan(per_class, seed)
  broken_files = _broken_files(seed) if broken else {}
  all_files = sorted([p[0] for p in plan] + list(broken_files))
  _write_marker(out_dir, seed, per_class, all_files, complete=False)
  for rel in sorted({os.path.dirname(f) for f in all_files}):
    os.makedirs(os.path.join(out_dir, rel), exist_ok=True)

  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=len(all_files), desc='demo data', unit='file')
  counts = {'real': 0, 'fake': 0}
  sources: Dict[str, int] = {}
  try:
    for rel, label, source, spec, index in plan:
      rng = np.random.default_rng([seed, 0, 0 if label == 'real' else 1, index])
      data = _encode(_make_pixels(label, source, spec, rng), spec[2], spec[3])
      _write_atomic(os.path.join(out_dir, rel), data)
      counts[label] += 1
      key = f'{label}/{source}'
      sources[key] = sources.get(key, 0) + 1
      if bar is not None:
        bar.update(1)
    for rel, data in sorted(broken_files.items()):
      _write_atomic(os.path.join(out_dir, rel), data)
      if bar is not None:
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
  _write_marker(out_dir, seed, per_class, all_files, complete=True)

  return {
      'out_dir': os.path.abspath(out_dir),
      'real': counts['real'],
      'fake': counts['fake'],
      'sources': dict(sorted(sources.items())),
      'broken': sorted(broken_files),
      'seed': seed,
      'per_class': per_class,
  }
