#!/usr/bin/env bash
# `sam build` of template.yaml as a deploy would run it: each function built by cargo-lambda
# (BuildMethod: rust-cargolambda) for provided.al2023 on arm64, then checked: every function has
# an aarch64 `bootstrap` in .aws-sam/build, and its size is printed.
#
# Not part of the test command (scripts/test.sh): it takes about 6 minutes cold (SAM builds the
# shared dependencies once per function) and needs the aarch64 Rust target. Installs SAM CLI and
# cargo-lambda (a prebuilt binary with zig, from PyPI) into .venv on first use.
# Usage: scripts/sam-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SAM_CLI_TELEMETRY=0

[ -x .venv/bin/python ] || python3 -m venv .venv
[ -x .venv/bin/sam ] || .venv/bin/python -m pip install --quiet --disable-pip-version-check aws-sam-cli
[ -x .venv/bin/cargo-lambda ] || .venv/bin/python -m pip install --quiet --disable-pip-version-check cargo-lambda
export PATH="$PWD/.venv/bin:$PATH"
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

start=$(date +%s)
sam build --template-file template.yaml
echo "sam build: $(( $(date +%s) - start )) s"

status=0
for fn in WebhookFunction InitialSyncFunction UpsertFunction; do
  bin=".aws-sam/build/$fn/bootstrap"
  if [ ! -x "$bin" ]; then
    echo "error: $fn has no executable $bin" >&2
    status=1
    continue
  fi
  # ELF header: e_machine (offset 18, little endian) is 0xB7 for AArch64.
  machine=$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n')
  if [ "$machine" != "b700" ]; then
    echo "error: $bin is not an arm64 binary (e_machine $machine)" >&2
    status=1
  fi
  size=$(stat -c %s "$bin")
  zipped=$(gzip -c "$bin" | wc -c)
  printf '%-20s %6.1f MB (%4.1f MB gzipped)\n' "$fn" "$(echo "$size / 1048576" | bc -l)" "$(echo "$zipped / 1048576" | bc -l)"
done
exit $status
