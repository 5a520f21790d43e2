# rproxy as a sidecar: multi-stage (no compiler in the final image), non-root, a health check on
# the metrics port. Configuration: RPROXY_* environment variables (README, "Configuration") and
# an optional TOML file mounted at /etc/rproxy/rproxy.toml (RPROXY_CONFIG). redis-server is
# included only for the embedded cluster that rproxy starts when no seed is given (a demo);
# in front of a real cluster set RPROXY_SEEDS.

# -- build: a virtual environment with rproxy and its C extensions (hiredis, crcmod) ----------
FROM python:3.11-slim-bookworm AS build
# Debian's security updates replace package versions, so pinned versions would break rebuilds:
# the base image's tag pins the distribution instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rproxy ./rproxy
RUN python -m venv /opt/rproxy \
 && /opt/rproxy/bin/pip install --no-cache-dir . \
 && /opt/rproxy/bin/python -c "import sys, crcmod.crcmod; sys.exit(0 if sys.modules['crcmod.crcmod']._usingExtension else 1)"

# -- run: the virtual environment, no compiler, a user of its own ---------------------------------
FROM python:3.11-slim-bookworm
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin rproxy
COPY --from=build /opt/rproxy /opt/rproxy
COPY config/rproxy.toml /etc/rproxy/rproxy.example.toml
# Listening on every interface of the container: protected mode then wants a password
# (RPROXY_AUTH_REQUIREPASS, or auth.requirepass_file) or RPROXY_PROXY_PROTECTED_MODE=false;
# a sidecar sets RPROXY_LISTEN=127.0.0.1:7777 (config/k8s-sidecar.yaml).
ENV PATH=/opt/rproxy/bin:$PATH \
    RPROXY_LISTEN=0.0.0.0:7777 \
    RPROXY_METRICS_LISTEN=0.0.0.0:9121 \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 7777 9121
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9121/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["rproxy"]
