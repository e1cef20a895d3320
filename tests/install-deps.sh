#!/usr/bin/env bash
# Installs what the end-to-end tests need: kcat (Debian package) and the Python clients (PyPI).
# Idempotent: skips what is already present.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v kcat >/dev/null 2>&1; then
  echo "installing kcat (Debian package)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js (Debian packages) for the kafkajs tests"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
(cd "$here/js" && npm ci --silent --no-audit --no-fund)

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$here/requirements.txt"
kafkajs_version=$(cd "$here/js" && node -p 'require("kafkajs/package.json").version')
echo "test dependencies ready: $(kcat -V | head -1 | cut -c1-40)..., $(python3 -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.version(), "kafka-python", kafka.__version__)'), kafkajs $kafkajs_version"
