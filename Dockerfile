# syntax=docker/dockerfile:1
# llm-stream-worker image: `make image` (docker build, tagged as k8s/base names it)
#   build:   the runtime dependencies and the [otel] extra exactly as pinned, with their
#            hashes, in requirements.lock (`make lock`; never the [dev] extra), then the
#            project's wheel without dependencies, into a virtual environment at /opt/venv
#   runtime: that virtual environment alone on the same slim Python, as a non-root user
# Both stages use the same pinned base, so the venv's interpreter link stays valid. For
# reproducible builds pin the digest too (python:3.11.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY worker ./worker
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llm-stream-worker" \
      org.opencontainers.image.description="Dapr pub/sub worker that streams LLM replies as ordered CloudEvents" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
# Bytecode was compiled at install time; the root filesystem is read-only in Kubernetes.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_PORT=50051
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# 50051: gRPC app callback for daprd (loopback only by default); 9464: Prometheus /metrics.
EXPOSE 50051 9464
# Exec form: the worker is PID 1 and gets SIGTERM itself, to drain within its grace.
ENTRYPOINT ["llm-stream-worker"]
