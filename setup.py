"""fakedetect: a TFX pipeline that trains, gates and ships a real-vs-generated image detector.

Install with `make` (it pins the whole stack from requirements.lock); `pip install -e .` alone
leaves the stack's versions to the resolver, which TFX 1.16 does not survive unpinned.
"""

from setuptools import find_packages, setup

setup(
    name='fakedetect',
    version='0.1.0',
    description='TFX pipeline: real vs AI-generated image detection, gated and served.',
    python_requires='>=3.10,<3.11',
    # One import name, `fakedetect`, over the repository's three folders: `pipeline` and
    # `components` are too generic to install as top-level packages.
    package_dir={'fakedetect': 'fakedetect', 'fakedetect.pipeline': 'pipeline',
                 'fakedetect.components': 'components'},
    packages=['fakedetect', 'fakedetect.pipeline', 'fakedetect.components'] + [
        'fakedetect.components.' + name for name in find_packages('components')],
    # Not Python, so named here for a non-editable install (the Dockerfile's) to ship them.
    package_data={'fakedetect': ['templates/*.j2'], 'fakedetect.components': ['templates/*.j2']},
    install_requires=[
        'tfx==1.16.0',
        'apache-beam[gcp]==2.59.0',
        'keras==3.6.0',
        'keras-tuner==1.4.7',
        'pillow',
        'matplotlib',
        'scikit-learn',  # metrics (components/metrics.py); pinned via TFMA in the lock
        'tfx-bsl',  # the C++ tf.Example coder of the image ExampleGen (pinned via TFX)
        'google-crc32c',  # TFRecord framing of the ExampleGen's shards (pinned via Beam[gcp])
        'tqdm',
        'click',
        'tabulate', 'markdown', 'jinja2',  # tables, the model card's HTML, templates
    ],
    extras_require={'kubeflow': ['kfp==2.5.0', 'kfp-pipeline-spec==0.2.2']},
    entry_points={'console_scripts': ['fakedetect=fakedetect.cli:main']},
)
