# rproxy as a sidecar. redis-server is included for the embedded cluster (no --seed given).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rproxy ./rproxy
COPY config ./config
RUN pip install --no-cache-dir . \
 && python -c "import sys, crcmod.crcmod; sys.exit(0 if sys.modules['crcmod.crcmod']._usingExtension else 1)" \
 && apt-get purge -y gcc libc6-dev && apt-get autoremove -y

EXPOSE 7777
# In a container, listen on all interfaces of the container's own network namespace.
ENV RPROXY_LISTEN=0.0.0.0:7777
ENTRYPOINT ["rproxy"]
