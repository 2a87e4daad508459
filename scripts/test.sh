#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite.
# Usage: scripts/test.sh [extra cargo nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r tests/support/requirements.txt 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
    -r tests/support/requirements.txt

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo nextest run --no-fail-fast "$@"
# The benchmark harness, a few iterations, so it cannot rot (timings are not checked).
cargo test --quiet --bench verify
