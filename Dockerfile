# The image every component of a compiled pipeline runs in (`fakedetect compile --image`), and a
# Beam SDK image for Dataflow / Flink / Spark workers (--set runner.sdk_container_image=...):
# TFX's own 1.16 image, the pinned stack from requirements.lock, and this project at /fakedetect
# (pipeline/config.py IMAGE_ROOT: the compiled pipeline reads schema/ and setup.py there).
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/fakedetect:0.1.0 . && docker push ...
FROM gcr.io/tfx-oss-public/tfx:1.16.0
WORKDIR /fakedetect
COPY requirements.lock setup.py ./
RUN pip install --no-cache-dir uv && uv pip install --system --no-cache -r requirements.lock
COPY schema ./schema
COPY components ./components
COPY pipeline ./pipeline
COPY fakedetect ./fakedetect
RUN uv pip install --system --no-cache --no-deps .
# Components start as `python -m ...`, which puts the working directory first on sys.path: from
# /fakedetect, `import fakedetect` would find the source folder fakedetect/ (the tools only)
# instead of the installed package that maps pipeline/ and components/ into it.
WORKDIR /
# oneDNN's fused CPU kernels for the Trainer, as `fakedetect run` sets them (fakedetect/cli.py).
ENV TF_ENABLE_ONEDNN_OPTS=1
