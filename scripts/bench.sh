#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md, in one run, on the emulators over loopback:
#   1-2. initial sync end to end against Dataverse's service-protection ceiling, at each SIZE,
#        and the Power Automate any-CRM template's request pattern on the same limits
#        (cargo bench -p e2e --bench ceiling);
#   3.   the webhook endpoint of `crm-sync serve` under load from wrk, a separate process;
#   4.   the Lambda binaries: size (and gzipped), start to ready, peak RSS on a realistic event
#        (cargo bench -p e2e --bench lambda_shape).
# Usage: scripts/bench.sh [SIZE ...]   (default 10000 100000 1000000)
# Needs: Python 3 (moto, installed into .venv as the tests do), wrk (apt-get install wrk).
# Environment: WEBHOOK_SECS (default 15), WEBHOOK_CONNECTIONS (default 32),
# BASELINE_SECS (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/moto_server ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "moto[server]>=5,<6"
fi
export CRM_SYNC_MOTO_SERVER="$PWD/.venv/bin/moto_server"
command -v wrk >/dev/null 2>&1 || { echo "error: wrk is needed (apt-get install wrk)" >&2; exit 2; }
target="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== build (release)"
cargo build --release --quiet -p crm-sync -p dataverse-emulator \
  -p dataverse-upsert -p initial-sync -p webhook-fn
cargo bench --quiet -p e2e --bench ceiling --bench lambda_shape --no-run

echo
echo "== 1-2. initial sync against the ceiling, and the template's pattern"
cargo bench --quiet -p e2e --bench ceiling -- "$@" --baseline-secs "${BASELINE_SECS:-60}"

echo
echo "== 3. webhook endpoint: crm-sync serve under wrk"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dv_port="$(free_port)"
"$target/release/dataverse-emulator" --port "$dv_port" >"$work/dv.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "token url" "$work/dv.log" 2>/dev/null && break; sleep 0.05; done
dv_secret="$(sed -n 's/.*client secret \(.*\)$/\1/p' "$work/dv.log")"
dv_client="$(sed -n 's/.*client id \([^,]*\),.*/\1/p' "$work/dv.log")"
dv_token="$(sed -n 's/^token url: *//p' "$work/dv.log")"
secret="bench-webhook-secret"
cat >"$work/crm-sync.toml" <<EOF
[dataverse]
url = "http://127.0.0.1:$dv_port"
token_url = "$dv_token"
client_id = "$dv_client"
client_secret = "$dv_secret"
write_mode = "batch"

[[sources]]
id = "salesforce"
kind = "salesforce"
crm_choice = 1
base_url = "https://acme.my.salesforce.com"
[sources.webhook]
auth = "contract"
secret = "$secret"
EOF
# Distinct signed notifications (the contract's HMAC over "timestamp.body"), one per line, so
# that no request is a repeat the endpoint could answer from its recent-events memory.
python3 - "$work/requests.tsv" "$secret" <<'EOF'
import hashlib, hmac, json, sys, time
path, secret = sys.argv[1], sys.argv[2].encode()
ts = str(int(time.time()))
with open(path, "w") as f:
    for i in range(200_000):
        rid = "001B%014d" % i
        body = json.dumps({"entity": "account", "operation": "update", "id": rid,
            "modified_at": "2026-11-28T12:00:00.000Z",
            "record": {"attributes": {"type": "Account"}, "Id": rid, "Name": "Account %d" % i,
                       "Phone": "+1 555 0100", "BillingCity": "Lyon"}}, separators=(",", ":"))
        sig = "v1=" + hmac.new(secret, (ts + "." + body).encode(), hashlib.sha256).hexdigest()
        f.write(ts + "\t" + sig + "\t" + body + "\n")
EOF
cat >"$work/post.lua" <<'EOF'
-- Each wrk thread sends its own share of the pre-signed notifications, in turn.
local threads, reqs, i = 0, {}, 0
function setup(thread)
  thread:set("n", threads)
  threads = threads + 1
end
function init(args)
  local k = 0
  for line in io.lines(args[1]) do
    if k % 2 == n then
      local ts, sig, body = line:match("^(%d+)\t(%S+)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-CrmSync-Timestamp"] = ts,
        ["X-CrmSync-Signature"] = sig,
      }, body)
    end
    k = k + 1
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local ok = summary.requests - summary.errors.status - summary.errors.connect
    - summary.errors.read - summary.errors.write - summary.errors.timeout
  io.write(string.format("   %d requests in %.1f s: %.0f requests/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d non-2xx, %d socket errors\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  if ok < summary.requests then io.write("   (some requests failed)\n") end
end
EOF
hook_port="$(free_port)"
"$target/release/crm-sync" serve --config "$work/crm-sync.toml" --state "$work/state.sqlite" \
  --listen "127.0.0.1:$hook_port" --log warn >"$work/serve.out" 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 200); do grep -q "http://" "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
echo "   wrk: 2 threads, ${WEBHOOK_CONNECTIONS:-32} connections, ${WEBHOOK_SECS:-15} s, against serve (SQLite queue, 4 upsert workers writing to the Dataverse emulator) on the same 2 cores"
wrk -t2 -c"${WEBHOOK_CONNECTIONS:-32}" -d"${WEBHOOK_SECS:-15}s" -s "$work/post.lua" \
  "http://127.0.0.1:$hook_port/webhooks/salesforce" -- "$work/requests.tsv" | grep -E "^   "
kill "${pids[-1]}" 2>/dev/null || true

echo
echo "== 4. Lambda binaries (x86_64 release builds here; scripts/sam-build.sh builds the arm64 ones)"
printf "   %-18s %10s %10s\n" binary size gzipped
for b in dataverse-upsert initial-sync webhook; do
  f="$target/release/$b"
  printf "   %-18s %7.1f MB %7.1f MB\n" "$b" "$(echo "$(stat -c %s "$f") / 1000000" | bc -l)" \
    "$(echo "$(gzip -9 -c "$f" | wc -c) / 1000000" | bc -l)"
done
cargo bench --quiet -p e2e --bench lambda_shape
