#!/usr/bin/env bash
# Offline checks of template.yaml (no Docker, no AWS account, no network once the tools are in):
#   1. SAM CLI and cfn-lint in the repository's .venv (installed on first use);
#   2. sam validate --lint;
#   3. the SAM template translated to CloudFormation by samtranslator (no AWS calls) and cfn-lint
#      on the result, which sees what linting the SAM template cannot (runtimes, GetAtt targets,
#      event source mapping properties);
#   4. scripts/check-template.py's assertions (queue visibility vs function timeouts, partial
#      batch responses, least-privilege IAM, the IAM-only /sync route, ...) and its self-test:
#      every assertion must catch a template broken for it.
# Usage: scripts/check-template.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
# Major versions pinned; SAM CLI pins its own samtranslator and a compatible cfn-lint range.
REQUIREMENTS=("aws-sam-cli>=1,<2" "cfn-lint>=1,<2")

fail() { echo "check-template: $*" >&2; exit 1; }

if [ ! -x "$VENV/bin/sam" ] || [ ! -x "$VENV/bin/cfn-lint" ]; then
  echo "installing SAM CLI and cfn-lint into $VENV (about a minute, once)"
  command -v python3 >/dev/null || fail "python3 (3.11 or later) is required"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || fail "cannot create $VENV (python3-venv missing?)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" \
    || fail "pip install ${REQUIREMENTS[*]} failed"
fi

"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "$VENV runs Python $("$VENV/bin/python" -V 2>&1); check-template.py needs 3.11 or later (tomllib)"

# No telemetry, no credentials needed; samtranslator only needs a Region to name ARNs.
export SAM_CLI_TELEMETRY=0
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="$AWS_DEFAULT_REGION"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "-- sam validate --lint"
"$VENV/bin/sam" validate --lint --template template.yaml >"$out/validate.log" 2>&1 \
  || { cat "$out/validate.log" >&2; fail "sam validate --lint failed"; }

echo "-- translate (samtranslator) + assertions + self-test"
"$VENV/bin/python" scripts/check-template.py --template template.yaml --out "$out/template.json" --self-test \
  || fail "template assertions failed"

echo "-- cfn-lint on the translated template"
"$VENV/bin/cfn-lint" --regions "$AWS_DEFAULT_REGION" -- "$out/template.json" \
  || fail "cfn-lint found problems in the translated template (warnings count)"

echo "template OK"
