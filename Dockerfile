# syntax=docker/dockerfile:1
# chargepilot-gateway image: `docker build -t chargepilot-gateway .`
#
# Two stages so the runtime image holds only the installed virtualenv: no source tree,
# no build metadata, no pip cache.  Every dependency comes from requirements.lock (pinned,
# hash-checked, wheels only: no compiler and no sdist build in the image); regenerate it
# with scripts/lock after changing dependencies in pyproject.toml.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies first, from the lock alone: this layer is rebuilt when the lock changes,
# not on every edit of the source.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps --only-binary=:all: -r requirements.lock
# Then the project itself: no dependencies (all in place) and no build isolation, so it
# builds with the locked setuptools and nothing unpinned is downloaded.  pyproject.toml
# names README.md and LICENSE, so the build needs them.  pip byte-compiles here, at build
# time: the runtime root filesystem may be read-only.  The build backend is not needed at
# run time; `pip check` fails the build if the lock misses a dependency.
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
RUN pip install --no-deps --no-build-isolation . \
 && pip uninstall --yes setuptools \
 && pip check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="chargepilot-gateway" \
      org.opencontainers.image.description="Caching API gateway for ChargePilot's Sites API" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/chargepilot/chargepilot-gateway"
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# The HTTP port; /metrics moves to GATEWAY_METRICS_PORT (9100 in deploy/k8s) when set.
EXPOSE 8080
# SIGTERM: /readyz turns 503, the gateway keeps serving for GATEWAY_SHUTDOWN_DELAY, then
# finishes in-flight requests, closes Redis and exits 0.
STOPSIGNAL SIGTERM
# slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "gateway"]
