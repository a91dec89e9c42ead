"""The TF Serving contract of a pushed model, checked without a server (and with one, if present).

Requests are built exactly as a client sends them to the REST API, decoded by TF Serving's JSON
rules (row format `instances`, columnar `inputs`, `{"b64": ...}` for binary strings), run through
the SavedModel's signature, and answered in TF Serving's response format.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from tests import serving_helpers as helpers
from tests.conftest import encode_image, random_image

_, NEW = (version for version, _ in helpers.VERSIONS)
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')


@pytest.fixture(scope='module')
def loaded(pushed):
  import tensorflow as tf
  return tf.saved_model.load(pushed['versions'][NEW])


def _tensor_value(value):
  """One JSON value as TF Serving reads it: {"b64": s} is bytes, lists nest, scalars stay."""
  if isinstance(value, dict):
    assert list(value) == ['b64'], value
    return base64.b64decode(value['b64'])
  if isinstance(value, list):
    return [_tensor_value(v) for v in value]
  return value


def rest_predict(signature, body: str) -> str:
  """What `POST /v1/models/NAME:predict` does with a body, for one signature, as JSON text.

  Row format: {"instances": [v, ...]} (a single named input takes bare values; several take
  {name: v} objects) -> {"predictions": [{output: v}, ...]} (bare values for one output).
  Columnar: {"inputs": {name: [...]}} or {"inputs": [...]} -> {"outputs": {output: [...]}}.
  """
  import tensorflow as tf
  request = json.loads(body)
  names = list(signature.structured_input_signature[1])
  if 'instances' in request:
    rows = request['instances']
    if not rows:  # the server's JSON parser refuses it before any signature runs (HTTP 400)
      raise ValueError("No values in 'instances' array")
    if len(names) == 1 and not (isinstance(rows[0], dict) and names[0] in rows[0]):
      columns = {names[0]: [_tensor_value(r) for r in rows]}
    else:
      columns = {n: [_tensor_value(r[n]) for r in rows] for n in names}
  else:
    inputs = request['inputs']
    columns = ({n: _tensor_value(inputs[n]) for n in names} if isinstance(inputs, dict)
               else {names[0]: _tensor_value(inputs)})
  specs = signature.structured_input_signature[1]
  outputs = signature(**{n: tf.constant(v, dtype=specs[n].dtype) for n, v in columns.items()})
  values = {k: v.numpy().tolist() for k, v in outputs.items()}
  if 'instances' not in request:
    return json.dumps({'outputs': values})
  keys = sorted(values)
  count = len(values[keys[0]])
  if len(keys) == 1:
    return json.dumps({'predictions': values[keys[0]]})
  return json.dumps({'predictions': [{k: values[k][i] for k in keys} for i in range(count)]})


def _b64(data: bytes) -> dict:
  return {'b64': base64.b64encode(data).decode('ascii')}


def test_signatures_take_and_give_what_the_readme_promises(loaded):
  import tensorflow as tf
  expected = {
      'serving_default': ({'image_bytes': (tf.string, [None])},
                          {'fake_probability': (tf.float32, [None]),
                           'is_fake': (tf.int64, [None])}),
      'serving_tf_example': ({'examples': (tf.string, [None])},
                             {'fake_probability': (tf.float32, [None]),
                              'is_fake': (tf.int64, [None])}),
      'metadata': ({}, {'threshold': (tf.float32, []), 'view': (tf.string, []),
                        'image_size': (tf.int64, []), 'crop_size': (tf.int64, []),
                        'native_size': (tf.int64, []), 'backbone': (tf.string, []),
                        'label_names': (tf.string, [2])}),
  }
  assert set(loaded.signatures) == set(expected) | {'transform_features'}
  for name, (inputs, outputs) in expected.items():
    signature = loaded.signatures[name]
    got_in = {k: (s.dtype, s.shape.as_list()) for k, s in
              signature.structured_input_signature[1].items()}
    got_out = {k: (s.dtype, s.shape.as_list()) for k, s in signature.structured_outputs.items()}
    assert (got_in, got_out) == (inputs, outputs), name
  transform = loaded.signatures['transform_features'].structured_outputs
  assert transform['image'].shape.as_list() == [None, helpers.IMAGE_SIZE, helpers.IMAGE_SIZE, 3]


def test_threshold_and_image_size_are_readable_from_the_model(pushed, loaded):
  from fakedetect.components import export
  meta = loaded.signatures['metadata']()
  assert float(meta['threshold']) == pytest.approx(0.63)
  assert int(meta['image_size']) == helpers.IMAGE_SIZE
  assert meta['view'].numpy() == b'global' and meta['backbone'].numpy() == b'cnn'
  assert [v.decode() for v in meta['label_names'].numpy()] == ['real', 'fake']
  on_disk = export.read_metadata(pushed['versions'][NEW])
  assert on_disk['threshold'] == pytest.approx(0.63) and on_disk['image_size'] == 16


def test_rest_row_and_columnar_requests_give_the_models_own_answer(pushed, loaded):
  import tensorflow as tf
  from fakedetect.components import views
  images = helpers.sample_images()
  direct = np.ravel(pushed['classifier'](views.decode_and_resize(tf.constant(images), 16),
                                         training=False))
  signature = loaded.signatures['serving_default']
  # What `curl -d '{"instances": [{"b64": "..."}]}' .../v1/models/fakedetect:predict` sends.
  body = json.dumps({'instances': [_b64(b) for b in images]})
  predictions = json.loads(rest_predict(signature, body))['predictions']
  assert [sorted(p) for p in predictions] == [['fake_probability', 'is_fake']] * len(images)
  np.testing.assert_allclose([p['fake_probability'] for p in predictions], direct, atol=1e-5)
  assert [p['is_fake'] for p in predictions] == [int(p >= 0.63) for p in direct]
  named = json.dumps({'instances': [{'image_bytes': _b64(b)} for b in images]})
  assert json.loads(rest_predict(signature, named))['predictions'] == predictions
  columnar = json.dumps({'inputs': {'image_bytes': [_b64(b) for b in images]}})
  outputs = json.loads(rest_predict(signature, columnar))['outputs']
  assert outputs['fake_probability'] == [p['fake_probability'] for p in predictions]


def test_rest_request_to_the_tf_example_signature(loaded):
  import tensorflow as tf
  from fakedetect.components import features
  images = helpers.sample_images()
  examples = [tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))}))
              .SerializeToString() for b in images]
  # {"signature_name": "serving_tf_example", "instances": [{"b64": <serialized Example>}]}
  body = json.dumps({'signature_name': 'serving_tf_example',
                     'instances': [_b64(e) for e in examples]})
  by_example = json.loads(rest_predict(loaded.signatures[json.loads(body)['signature_name']],
                                       body))['predictions']
  by_bytes = json.loads(rest_predict(loaded.signatures['serving_default'], json.dumps(
      {'instances': [_b64(b) for b in images]})))['predictions']
  np.testing.assert_allclose([p['fake_probability'] for p in by_example],
                             [p['fake_probability'] for p in by_bytes], atol=1e-6)


def test_saved_model_cli_shows_the_serving_contract(pushed):
  shown = subprocess.run([SAVED_MODEL_CLI, 'show', '--dir', pushed['versions'][NEW], '--all'],
                         capture_output=True, text=True, timeout=120, check=True).stdout
  assert "MetaGraphDef with tag-set: 'serve'" in shown
  default = shown.split("signature_def['serving_default']:")[1].split('signature_def[')[0]
  assert "inputs['image_bytes'] tensor_info:" in default
  assert 'dtype: DT_STRING' in default and 'shape: (-1)' in default
  assert "outputs['fake_probability'] tensor_info:" in default and 'DT_FLOAT' in default
  assert "outputs['is_fake'] tensor_info:" in default and 'DT_INT64' in default
  assert 'Method name is: tensorflow/serving/predict' in default
  for name in ('serving_tf_example', 'transform_features', 'metadata'):
    assert f"signature_def['{name}']" in shown


@pytest.mark.parametrize('name, reason', [
    ('truncated_jpeg', 'could not be decoded'), ('truncated_png', 'could not be decoded'),
    ('text', 'is not an image'), ('random_bytes', 'is not an image'), ('empty', 'is empty'),
    ('jpeg_without_size', 'has a JPEG header that does not give its width and height')])
def test_malformed_input_fails_the_request_naming_it_and_the_model_keeps_serving(loaded, name,
                                                                                  reason):
  """TF Serving answers such a request with an error (HTTP 400) that says which image of the
  batch is bad and why; nothing else breaks."""
  import tensorflow as tf
  jpeg = encode_image(random_image(64, 64, 1), 'JPEG')
  png = encode_image(random_image(20, 20, 2), 'PNG')
  bad = {'truncated_jpeg': jpeg[:len(jpeg) // 3], 'truncated_png': png[:50],
         'text': b'hello, not an image', 'random_bytes': np.random.default_rng(1).bytes(1000),
         'empty': b'', 'jpeg_without_size': b'\xff\xd8\xff' + b'\0' * 100}[name]
  from fakedetect.components import export
  signature = loaded.signatures['serving_default']
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf'image_bytes\[2\] {reason}.*no image of this request was scored') as e:
    signature(image_bytes=tf.constant([png, jpeg, bad, png, bad]))
  position, why = export.refused_image(e.value)  # what tools read of it
  assert position == 2 and why.startswith(reason)
  assert export.refused_image(tf.errors.InvalidArgumentError(None, None, 'other')) is None
  assert signature(image_bytes=tf.constant([png]))['fake_probability'].shape == (1,)


def test_an_empty_request_gets_empty_outputs(loaded):
  """0 images in, 0 answers out, of the declared dtypes (not 'slice index 19 ... out of
  bounds'). TF Serving's JSON parser refuses an empty `instances` list itself; the columnar form
  and gRPC reach the signature with a [0] tensor."""
  import tensorflow as tf
  signature = loaded.signatures['serving_default']
  out = signature(image_bytes=tf.constant([], tf.string))
  assert {k: (v.dtype, v.shape.as_list()) for k, v in out.items()} == {
      'fake_probability': (tf.float32, [0]), 'is_fake': (tf.int64, [0])}
  body = json.dumps({'inputs': {'image_bytes': []}})
  assert json.loads(rest_predict(signature, body)) == {
      'outputs': {'fake_probability': [], 'is_fake': []}}
  with pytest.raises(ValueError, match='instances'):
    rest_predict(signature, json.dumps({'instances': []}))


def test_tf_serving_s_session_load_answers_names_the_bad_image_and_takes_an_empty_batch(
    pushed, loaded):
  """TF Serving restores a SavedModel into a session, not through tf.saved_model.load: the same
  answers there (Keras 3's variables must be tracked as tf.Variables, or every request fails with
  'Could not find variable'), the same refusal, and the empty batch."""
  import tensorflow as tf
  images = helpers.sample_images()
  model_dir = pushed['versions'][NEW]
  served = helpers.session_predict(model_dir, images)
  expected = loaded.signatures['serving_default'](image_bytes=tf.constant(images))
  np.testing.assert_allclose(served['fake_probability'], expected['fake_probability'].numpy(),
                             atol=1e-5)
  assert served['is_fake'].tolist() == expected['is_fake'].numpy().tolist()
  empty = helpers.session_predict(model_dir, [])
  assert {k: (v.dtype, v.shape) for k, v in empty.items()} == {
      'fake_probability': (np.float32, (0,)), 'is_fake': (np.int64, (0,))}
  with pytest.raises(tf.errors.InvalidArgumentError, match=r'image_bytes\[1\] is not an image'):
    helpers.session_predict(model_dir, [images[0], b'<html>not an image</html>'])


def test_large_image_is_scored_by_the_signature_itself(loaded):
  """A big but legal image (2000x1500 JPEG) goes through decode and resize in the signature."""
  import tensorflow as tf
  big = encode_image(random_image(1500, 2000, 3), 'JPEG', quality=80)
  out = loaded.signatures['serving_default'](image_bytes=tf.constant([big]))
  assert 0.0 <= float(out['fake_probability'][0]) <= 1.0


def test_signature_refuses_images_over_its_limits_before_decoding_any(loaded):
  """serving_default refuses oversized files and bomb headers (components/export.py's limits),
  naming the image; every limit is checked before any image is decoded, so an undecodable image
  earlier in the batch does not hide a bomb behind it."""
  import tensorflow as tf
  from fakedetect.components import export
  from tests.test_predict import _png_declaring  # pylint: disable=g-import-not-at-top
  signature = loaded.signatures['serving_default']
  good = helpers.sample_images()
  truncated = good[0][:len(good[0]) // 2]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf'image_bytes\[2\] is larger than {export.MAX_IMAGE_BYTES} bytes'):
    signature(image_bytes=tf.constant(
        [truncated, good[1], b'\xff\xd8\xff' + b'\0' * export.MAX_IMAGE_BYTES]))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf'image_bytes\[1\] declares more than {export.MAX_IMAGE_PIXELS} '
                     'pixels'):
    signature(image_bytes=tf.constant([truncated, _png_declaring(60000, 60000), good[2]]))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _server_command(serving_root: str, port: int):
  """How to start a real TF Serving on the root's models.config, or None and the reason."""
  from fakedetect import registry
  binary = shutil.which('tensorflow_model_server')
  if binary:
    config = registry.write_config(serving_root)
    return [binary, f'--rest_api_port={port}', '--port=0', f'--model_config_file={config}'], None
  docker = shutil.which('docker')
  if docker and subprocess.run([docker, 'info'], capture_output=True).returncode == 0:
    config = registry.write_config(serving_root, base_path='/models')
    return [docker, 'run', '--rm', '-p', f'{port}:8501', '-v', f'{serving_root}:/models',
            'tensorflow/serving', f'--model_config_file=/models/{os.path.basename(config)}'], None
  return None, ('no TF Serving here: tensorflow_model_server is not on PATH and no Docker engine '
                'answers `docker info`')


def test_live_tf_serving_answers_the_rest_request(pushed, tmp_path):
  root = str(tmp_path / 'serving_model')
  shutil.copytree(pushed['model_dir'], os.path.join(root, 'fakedetect'))
  port = _free_port()
  command, reason = _server_command(root, port)
  if command is None:
    pytest.skip(reason)
  server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  base = f'http://127.0.0.1:{port}/v1/models/fakedetect'
  try:
    deadline = time.time() + 120
    while True:
      try:
        status = json.loads(urllib.request.urlopen(base, timeout=2).read())
        if status['model_version_status'][0]['state'] == 'AVAILABLE':
          break
      except OSError:
        pass
      assert time.time() < deadline and server.poll() is None, 'TF Serving did not come up'
      time.sleep(1)
    assert status['model_version_status'][0]['version'] == str(NEW)
    images = helpers.sample_images()
    body = json.dumps({'instances': [_b64(b) for b in images]}).encode()
    answer = json.loads(urllib.request.urlopen(
        urllib.request.Request(base + ':predict', data=body), timeout=30).read())
    import tensorflow as tf
    signature = tf.saved_model.load(pushed['versions'][NEW]).signatures['serving_default']
    expected = json.loads(rest_predict(signature, body.decode()))['predictions']
    np.testing.assert_allclose([p['fake_probability'] for p in answer['predictions']],
                               [p['fake_probability'] for p in expected], atol=1e-5)
  finally:
    server.terminate()
    server.wait(timeout=30)
