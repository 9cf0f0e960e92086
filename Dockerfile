# syntax=docker/dockerfile:1
# chargepilot-gateway image: `docker build -t chargepilot-gateway .`
#
# Two stages so the runtime image holds only the installed virtualenv: no source tree,
# no build metadata, no pip cache.  All dependencies ship manylinux wheels for
# CPython 3.11, so the build stage needs no compiler.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pyproject.toml names README.md as the package's readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# pip byte-compiles here, at build time: the runtime root filesystem may be read-only.
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="chargepilot-gateway" \
      org.opencontainers.image.description="Caching API gateway for ChargePilot's Sites API"
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
# SIGTERM is what the gateway drains on (finish in-flight requests, close Redis, exit 0).
STOPSIGNAL SIGTERM
# slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "gateway"]
