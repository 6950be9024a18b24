#!/usr/bin/env bash
# The test command: on a fresh machine, installs what the tests need and runs every test.
# Usage: scripts/test.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

# Vendor fixtures live beside the repository (../shared/fixtures); tests read them from there.
if [ ! -d ../shared/fixtures ] && [ -z "${CRM_SYNC_FIXTURES:-}" ]; then
  echo "error: ../shared/fixtures not found (set CRM_SYNC_FIXTURES to its path)" >&2
  exit 2
fi

echo "== template"
# SAM template: sam validate --lint, cfn-lint on its CloudFormation translation, the assertions of
# scripts/check-template.py (installs SAM CLI and cfn-lint into .venv on first use).
scripts/check-template.sh

echo "== moto (SQS for the end-to-end tests)"
# moto server in the same .venv (installed on first use, major version pinned); the tests over
# SQS start it from this path and fail, rather than skip, without it.
if [ ! -x .venv/bin/moto_server ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "moto[server]>=5,<6"
fi
export CRM_SYNC_MOTO_SERVER="$PWD/.venv/bin/moto_server"

echo "== node (runs the ServiceNow business rules in integrations/)"
if ! command -v node >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq nodejs >/dev/null || { apt-get update -qq >/dev/null && apt-get install -y -qq nodejs >/dev/null; }
  fi
  command -v node >/dev/null 2>&1 || { echo "error: Node.js is needed (install nodejs)" >&2; exit 2; }
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
if command -v cargo-nextest >/dev/null 2>&1; then
  # nextest does not run doc tests; run them first so nextest's summary closes the output.
  cargo test --workspace --doc --quiet
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
