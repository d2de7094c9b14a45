# syntax=docker/dockerfile:1
# DriftPilot's one image: `driftpilot serve` (API + scheduler), `driftpilot worker`,
# `driftpilot ui` and `mlflow server` all run from it (docker-compose.yml), so the MLflow
# server and its clients always have the same MLflow version.
#
#   builder  a venv with the pinned version set (torch's CPU build first, as `make setup`)
#   runtime  slim Python 3.11 + that venv + the app, as a non-root user

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# The CPU wheel of the torch pin: PyPI's Linux wheel of torch pulls a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && pip install "pip==25.3" \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"
# The app lives at /app in both stages: it is installed editable (-e) because agents read
# their prompts from prompts/ and the chat its files from ui/ next to the code, and an
# editable install keeps them where the code is. Dependencies first, in their own layer:
# with only pyproject.toml the install finds no package yet, so a change of the code does not
# reinstall the ~2.8 GB of dependencies.
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
RUN pip install -c requirements.lock -e .
COPY . .
RUN pip install --no-deps -c requirements.lock -e . \
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
