# cyseg Cytomine software: nucleus segmentation of whole-slide images (see docs/DEPLOY.md).
# The PyPI torch wheel pinned in requirements.txt brings its CUDA libraries, so the job uses the GPU
# when the container runs with the NVIDIA runtime (docker --gpus all, singularity --nv) and the CPU otherwise.
# Stage 1: compile FocusLiteNN's 8-bit convolution (segmenter/_focus_conv.c) with the same setup.py
# that `make` (and so CI) builds in place; only the compiled module goes on to the image.
# BASE: the Python 3.11 base image (a local Debian-based build of it where registries are out of reach:
# scripts/build_image.sh). Where pip needs a CA bundle of the machine's to reach its index, pass it as the
# BuildKit secret `ca` (docker build --secret id=ca,src=FILE): it is mounted for the pip steps only, in no layer.
ARG BASE=python:3.11.13-slim-bookworm
FROM ${BASE} AS build
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md /src/
COPY segmenter/_focus_conv.c /src/segmenter/
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install --no-cache-dir setuptools==84.2.1 && python setup.py build_ext --inplace

FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/cyseg \
    XDG_CACHE_HOME=/home/cyseg/.cache \
    MPLCONFIGDIR=/home/cyseg/.cache/matplotlib

# An unprivileged user with a writable home for the caches (PyTorch, Matplotlib).
RUN groupadd --system --gid 1000 cyseg \
    && useradd --system --uid 1000 --gid cyseg --create-home --home-dir /home/cyseg --shell /usr/sbin/nologin cyseg

WORKDIR /app

# Dependencies first: the same pinned file as CI, in its own layer so code changes rebuild quickly.
COPY requirements.txt /app/requirements.txt
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install --no-cache-dir -r /app/requirements.txt

COPY cyseg /app/cyseg
COPY segmenter /app/segmenter
COPY --from=build /src/segmenter/_focus_conv.*.so /app/segmenter/
COPY transforms /app/transforms
COPY metrics /app/metrics
COPY descriptor.json run.py /app/
# The App Engine task (python -m cyseg.task) reads its descriptor from /app/task.
COPY task /app/task

# The job runs as cyseg (uid 1000); /app stays read-only to it, result files go to a temporary folder.
USER 1000:1000

# Compile the focus classifier's window statistics now, for the pixel layouts a job meets (RGB, RGBA
# slide regions, grey float): numba caches them under $XDG_CACHE_HOME, so no job waits for the compiler.
RUN python -c "import numpy as np; from segmenter.focus import load_focus_classifier as f; c = f(); \
[c.score(np.zeros(s, t)) for s, t in (((256, 256, 3), np.uint8), ((256, 256, 4), np.uint8), ((256, 256), np.float32))]"

# The legacy software runs this entry point; the App Engine task image (scripts/bundle_task.sh) is this
# image with ENTRYPOINT ["python", "-m", "cyseg.task"].
ENTRYPOINT ["python", "/app/run.py"]
