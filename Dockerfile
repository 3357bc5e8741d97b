# Build: a wheel of the worker. Run: that wheel alone on a slim Python, as a non-root user.
# Not built here (no Docker engine on our machines): see issue "Ship it".
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
RUN useradd --create-home --uid 10001 worker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV PYTHONUNBUFFERED=1 APP_PORT=50051
EXPOSE 50051
# Exec form: the worker is PID 1 and gets SIGTERM itself, to drain within its grace.
ENTRYPOINT ["llm-stream-worker"]
