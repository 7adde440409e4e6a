# syntax=docker/dockerfile:1
# The image the Helm chart runs: `docker build -t tunegate:0.1.0 .` (BuildKit, the default builder since Docker 23).
#
# Before building, put tiktoken's encoding files in ./tiktoken_cache (tiktoken_cache/README.md says how): the build
# copies them into the image, so token counts are exact with no network at run time. Where the directory lacks one,
# the build's check below fetches it (tiktoken downloads it once, at build time).
#
# Read-only root filesystem: the gateway writes only to
#   /var/lib/tunegate  the working directory: the SQLite database (./tunegate.db) when no PostgreSQL URL is set
#   /tmp               TMPDIR: `serve --workers N` keeps its shared metric files here (PROMETHEUS_MULTIPROC_DIR)
# Mount a volume (or an emptyDir) at each; the Helm chart does.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the project's wheel and the wheels of its dependencies ----------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# tunegate/ holds links to proxy/, registry/ and config/ (the wheel installs them as tunegate.*): all four needed.
COPY pyproject.toml README.md ./
COPY tunegate ./tunegate
COPY proxy ./proxy
COPY registry ./registry
COPY config ./config
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- runtime: the wheels installed, no compilers, no pip cache, a user without a shell -----------------------
FROM ${PYTHON_IMAGE}
# DL3064 reads "TOKEN" in TIKTOKEN_CACHE_DIR as a secret: it is the path of public encoding files.
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken_cache \
    TMPDIR=/tmp
# The wheels come through a bind mount from the build stage, so none of them stays in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/tunegate-*.whl \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tunegate --shell /usr/sbin/nologin tunegate \
    && install -d -o tunegate -g tunegate -m 0750 /var/lib/tunegate
COPY tiktoken_cache /opt/tiktoken_cache
# Loads both encodings as the gateway would: the copied files are used (their hashes checked); a missing one is
# fetched here, at build time. Owned by root: the gateway only reads them.
RUN python -c "import tiktoken; [tiktoken.get_encoding(n) for n in ('cl100k_base', 'o200k_base')]" \
    && chmod -R a+rX /opt/tiktoken_cache

USER 10001:10001
WORKDIR /var/lib/tunegate
VOLUME ["/var/lib/tunegate", "/tmp"]
EXPOSE 8000
# The slim image has no curl: the check is Python's own HTTP client against /readyz (the database reachable).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TUNEGATE_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["tunegate", "serve"]
CMD ["--config", "/etc/tunegate/tunegate.yaml"]
