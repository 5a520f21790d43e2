#!/usr/bin/env bash
# The test command (README, and .ci/run): installs everything the tests need -- redis-server, the
# Redis tools and Node.js from the OS packages, a virtualenv with rproxy and its test extras, the
# Node.js applications of tests/apps (npm ci) -- then runs
# the whole suite against real Redis servers the suite starts and stops itself.
# Extra arguments go to pytest (e.g. `bash tests/run.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_os=()
command -v redis-server >/dev/null 2>&1 || need_os+=(redis-server)
{ command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; } \
  || need_os+=(redis-tools)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_os+=(python3-venv)
# tests/apps runs Node.js applications (ioredis, node-redis, BullMQ) through the proxy.
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || need_os+=(nodejs npm)
if [ ${#need_os[@]} -gt 0 ]; then
  echo "installing OS packages: ${need_os[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_os[@]}" >/dev/null
fi
redis_major=$(redis-server --version | sed -E 's/.* v=([0-9]+).*/\1/')
if [ "${redis_major}" -lt 7 ]; then
  echo "redis-server 7.x or newer is needed, found: $(redis-server --version)" >&2
  exit 1
fi

venv=${RPROXY_VENV:-.venv}
[ -x "${venv}/bin/python" ] || python3 -m venv "${venv}"
"${venv}/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
# arq (tests/apps) pins redis-py below 6; it runs on the newer one the suite uses: no deps.
"${venv}/bin/python" -m pip install -q --disable-pip-version-check --no-deps arq==0.28.0

# crcmod must use its C extension, or every command pays for pure-Python CRC16.
"${venv}/bin/python" -c 'import sys, crcmod.crcmod; sys.exit(0 if sys.modules["crcmod.crcmod"]._usingExtension else 1)' \
  || { echo "crcmod's C extension is not in use (install gcc and python3-dev, then reinstall crcmod)" >&2; exit 1; }

(cd tests/apps/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# The import contract (pyproject.toml): core below net below the command line, no circles.
"${venv}/bin/lint-imports" --no-cache

exec "${venv}/bin/python" -m pytest -p no:cacheprovider "$@"
