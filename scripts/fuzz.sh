#!/usr/bin/env bash
# Fuzzes every parser that reads untrusted bytes (webhook verifiers and parsers per CRM, the
# Salesforce SOAP parser, the Dataverse $batch response parser, the mapping of arbitrary JSON)
# for a bounded time each, and fails when any target crashes, hangs or exceeds its memory limit.
# Needs the nightly toolchain and cargo-fuzz (installed on first use).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]    (default 60 s for each of every target)
#
# Environment: FUZZ_TARGET_DIR (default target/fuzz; kept apart from the stable builds, whose
# flags differ), FUZZ_SANITIZER (default none: the code under test has no `unsafe`, so panics,
# the RSS limit and the timeout are what finds bugs, at twice the speed of ASan; set `address`
# to add it), FUZZ_JOBS (default 1).
# A crash leaves its input in fuzz/artifacts/<target>/; reproduce it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
all=(webhook_salesforce webhook_servicenow webhook_hubspot webhook_zendesk webhook_pipedrive
     webhook_generic soap verify batch_response mapping_json)
[ $# -gt 0 ] && targets=("$@") || targets=("${all[@]}")

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
sanitizer="${FUZZ_SANITIZER:-none}"
fixtures="${CRM_SYNC_FIXTURES:-../shared/fixtures}"

cd fuzz
echo "== build ($sanitizer sanitizer, $CARGO_TARGET_DIR)"
cargo +nightly fuzz build --sanitizer "$sanitizer"

failed=()
summary=()
for t in "${targets[@]}"; do
  corpus="corpus/$t"
  mkdir -p "$corpus"
  seeds=("seeds/$t")
  # The vendors' sample payloads are seeds for the JSON webhook parsers as they are.
  if [[ $t == webhook_* ]]; then
    [ -d "$fixtures" ] && seeds+=("$fixtures")
    seeds+=("../examples/payloads")
  fi
  log="$corpus.log"
  echo "== $t (${seconds}s)"
  # -rss_limit_mb: a parser that balloons on some input fails instead of swapping; -max_len:
  # 64 KiB covers every seed with room to grow and keeps executions fast (the webhook endpoint
  # refuses bodies over 1 MiB before any parser runs); -timeout: one input taking 10 s is a hang.
  if cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "$corpus" "${seeds[@]}" -- \
      -max_total_time="$seconds" -rss_limit_mb=512 -max_len=65536 -timeout=10 \
      -jobs="${FUZZ_JOBS:-1}" -workers="${FUZZ_JOBS:-1}" -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed+=("$t")
    tail -40 "$log" >&2
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  units=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  summary+=("$(printf '%-20s %-6s %10s execs %7s/s  cov %5s  ft %6s  corpus %5s  rss %4s MB' \
    "$t" "$result" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${units:-?}" "${rss:-?}")")
done

echo "== summary (${seconds}s each)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
