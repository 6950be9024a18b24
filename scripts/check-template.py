#!/usr/bin/env python3
"""Offline checks of template.yaml beyond what `sam validate --lint` and cfn-lint see.

1. Translates the SAM template to plain CloudFormation with samtranslator (no AWS call: local
   CodeUri paths become a placeholder S3 URI, as `sam validate` does, and managed policies are
   resolved by a stub loader) and writes it to --out, for cfn-lint to check.
2. Asserts on the SAM template and on its translation what the AWS docs and the design require
   and cfn-lint does not check (each assertion is named; the names are what --self-test breaks):

   build        functions: provided.al2023, arm64, Handler bootstrap, BuildMethod rust-cargolambda,
                BuildProperties.Binary is a [[bin]] of the Cargo package at CodeUri
   limits       Timeout 1..900 s (at most 30 s for a function only the HTTP API invokes),
                MemorySize 128..10240 MB
   env          every variable a function's main.rs requires (`env("X")`) is set, and every
                variable the template sets is read somewhere in the Rust code (or is the
                extension's / RUST_LOG)
   visibility   a queue's VisibilityTimeout >= 6 x the Timeout of each function it triggers
                (+ the batching window)
   batch-items  every event source mapping reports batch item failures
   concurrency  every mapping into dataverse-upsert has ScalingConfig.MaximumConcurrency, and
                every MaximumConcurrency is within 2..1000
   queue-kinds  a DLQ has its source's type (FIFO for FIFO), FIFO names end in .fifo, FIFO
                throughput settings are valid and paired, the upsert and sync queues are FIFO,
                the retry queue is standard, and a FIFO queue the code writes dead letters to has
                ContentBasedDeduplication
   routes       POST /sync is AWS_IAM; /webhooks/{source} is the only route without it
   secrets      no secretsmanager:* / "*" actions, no "*" resources on secrets, only
                GetSecretValue, and each function reads only its own secret parameter
                (upsert: DataverseSecretArn, initial-sync: CrmSecretArns, webhook:
                WebhookSecretArns)
   webhook-creds the webhook function gets no Dataverse or CRM credential in its environment
   sqs-iam      no managed policy but AWSLambdaBasicExecutionRole, no sqs:* or "*" resources;
                a function receives only from queues that trigger it and sends only to queues
                in its environment, and has the permissions its mappings and sends need
   logging      each function logs JSON to its own log group with a retention
   alarms       every DLQ has a visible-messages > 0 alarm, every triggering queue an oldest-age
                alarm, and every other queue has a redrive policy
   ledger-iam   DynamoDB only PutItem/UpdateItem on this stack's table, only for initial-sync
                and dataverse-upsert
   recursion    a function that sends to a queue triggering itself has RecursiveLoop: Allow
   outputs      webhook base URL, sync URL and every queue URL are outputs
   example-params deploy/params.example.yaml names only template parameters, with valid values
   dashboard    a CloudWatch dashboard whose body is JSON once substituted, charts every metric
                the code emits (shared/pipeline/src/metrics.rs) and every queue's depth

Usage: check-template.py [--template T] [--out FILE] [--self-test]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

REPO = Path(__file__).resolve().parent.parent
# samtranslator warns about its own unpublished usage metrics on every translation.
logging.getLogger("samtranslator").setLevel(logging.ERROR)

# Set by the template for the AWS Parameters and Secrets Lambda Extension or the tracing
# subscriber, not read by crm-sync's own code.
NOT_READ_BY_CODE = re.compile(r"^(RUST_LOG|PARAMETERS_SECRETS_EXTENSION_\w+|SECRETS_MANAGER_\w+|SSM_PARAMETER_STORE_\w+)$")
# Which secret parameter each binary may read (and nothing else).
SECRET_PARAM_OF_BINARY = {
    "dataverse-upsert": "DataverseSecretArn",
    "initial-sync": "CrmSecretArns",
    "webhook": "WebhookSecretArns",
}
SECRET_PARAMS = set(SECRET_PARAM_OF_BINARY.values())
# Environment variables naming where the code writes dead letters (no deduplication id).
DLQ_ENV = ("DLQ_URL", "SYNC_DLQ_URL", "WEBHOOK_DLQ_URL")
BASIC_EXECUTION_ROLE = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


class StubPolicyLoader:
    """samtranslator asks IAM for the managed policy list only when a function's Policies names a
    managed policy; this template names none, and nothing here may call AWS."""

    def load(self) -> dict[str, str]:
        return {}


class Failures:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def check(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            self.items.append((name, message))

    def names(self) -> set[str]:
        return {n for n, _ in self.items}


# --- helpers over CloudFormation values -------------------------------------------------------


def ref(v: Any) -> str | None:
    return v.get("Ref") if isinstance(v, dict) and len(v) == 1 and isinstance(v.get("Ref"), str) else None


def getatt(v: Any) -> tuple[str, str] | None:
    if isinstance(v, dict) and len(v) == 1 and "Fn::GetAtt" in v:
        g = v["Fn::GetAtt"]
        if isinstance(g, str):
            g = g.split(".", 1)
        return g[0], g[1]
    return None


def branches(v: Any) -> list[Any]:
    """A value and, for Fn::If, both of its branches (AWS::NoValue dropped): what may deploy."""
    if isinstance(v, dict) and "Fn::If" in v:
        out = []
        for b in v["Fn::If"][1:]:
            if ref(b) != "AWS::NoValue":
                out.extend(branches(b))
        return out
    return [v]


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def param_default(template: dict, name: str) -> Any:
    p = template.get("Parameters", {}).get(name)
    if p is None or "Default" not in p:
        return None
    d = p["Default"]
    if p.get("Type") == "Number":
        return float(d) if "." in str(d) else int(d)
    return d


def number(template: dict, v: Any) -> int | float | None:
    """A literal number, or a Ref to a parameter's default."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return None
    r = ref(v)
    if r:
        d = param_default(template, r)
        return number(template, d) if d is not None else None
    return None


def statements(role: dict) -> list[dict]:
    """Every statement of a role's inline policies, both branches of conditional ones."""
    out = []
    for pol in role.get("Properties", {}).get("Policies", []):
        for p in branches(pol):
            for s in as_list(p.get("PolicyDocument", {}).get("Statement", [])):
                out.extend(branches(s))
    return out


def actions(stmt: dict) -> list[str]:
    return [a for a in as_list(stmt.get("Action", [])) if isinstance(a, str)]


def resources(stmt: dict) -> list[Any]:
    out = []
    for r in as_list(stmt.get("Resource", [])):
        out.extend(branches(r))
    return out


def param_refs(v: Any) -> set[str]:
    """Parameter-like names referenced anywhere in a value (Ref and ${} in Fn::Sub)."""
    found: set[str] = set()
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "Ref" and isinstance(x, str):
                found.add(x)
            elif k == "Fn::Sub":
                s = x[0] if isinstance(x, list) else x
                found.update(re.findall(r"\$\{([A-Za-z0-9]+)\}", s))
                if isinstance(x, list):
                    found |= param_refs(x[1:])
            else:
                found |= param_refs(x)
    elif isinstance(v, list):
        for x in v:
            found |= param_refs(x)
    return found


# --- the checks -------------------------------------------------------------------------------


def cargo_bins(package_dir: Path) -> set[str]:
    manifest = tomllib.loads((package_dir / "Cargo.toml").read_text())
    bins = {b["name"] for b in manifest.get("bin", []) if "name" in b}
    if (package_dir / "src" / "main.rs").exists() and not any(
        b.get("path", "src/main.rs") == "src/main.rs" for b in manifest.get("bin", [])
    ):
        bins.add(manifest["package"]["name"])
    return bins


def rust_sources() -> str:
    text = []
    for top in ("functions", "shared"):
        for p in sorted((REPO / top).rglob("*.rs")):
            if "/target/" not in str(p):
                text.append(p.read_text(errors="replace"))
    return "\n".join(text)


def check_sam(sam: dict, f: Failures) -> dict[str, str]:
    """Checks on the SAM template itself; returns {function logical id: binary name}."""
    glob = sam.get("Globals", {}).get("Function", {})
    binary_of: dict[str, str] = {}
    code = rust_sources()
    for lid, r in sam["Resources"].items():
        if r.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**glob, **r.get("Properties", {})}
        f.check(props.get("Runtime") == "provided.al2023", "build", f"{lid}: Runtime must be provided.al2023")
        f.check(props.get("Architectures") == ["arm64"], "build", f"{lid}: Architectures must be [arm64]")
        f.check(props.get("Handler") == "bootstrap", "build", f"{lid}: Handler must be bootstrap")
        # Lambda's limits (1..900 s, 128..10,240 MB), and API Gateway's 30 s integration timeout
        # for a function behind the HTTP API; the resource schemas do not bound them here.
        timeout, memory = props.get("Timeout", 3), props.get("MemorySize", 128)
        f.check(isinstance(timeout, int) and 1 <= timeout <= 900, "limits", f"{lid}: Timeout {timeout} outside Lambda's 1..900 s")
        f.check(isinstance(memory, int) and 128 <= memory <= 10240, "limits", f"{lid}: MemorySize {memory} outside Lambda's 128..10240 MB")
        http_only = any(e.get("Type") == "HttpApi" for e in r.get("Properties", {}).get("Events", {}).values()) and not any(
            m.get("Type") == "AWS::Lambda::EventSourceMapping" and ref(m.get("Properties", {}).get("FunctionName")) == lid
            for m in sam["Resources"].values()
        )
        if http_only:
            f.check(isinstance(timeout, int) and timeout <= 30, "limits", f"{lid}: Timeout {timeout} s exceeds API Gateway's 30 s integration timeout")
        meta = r.get("Metadata", {})
        f.check(meta.get("BuildMethod") == "rust-cargolambda", "build", f"{lid}: Metadata.BuildMethod must be rust-cargolambda")
        binary = meta.get("BuildProperties", {}).get("Binary")
        code_uri = props.get("CodeUri")
        pkg = REPO / str(code_uri)
        if not isinstance(code_uri, str) or not (pkg / "Cargo.toml").exists():
            f.check(False, "build", f"{lid}: CodeUri {code_uri!r} is not a Cargo package directory of this repository")
            continue
        bins = cargo_bins(pkg)
        f.check(binary in bins, "build", f"{lid}: BuildProperties.Binary {binary!r} is not a binary of {code_uri} (has {sorted(bins)})")
        if binary:
            binary_of[lid] = binary

        # Environment: what main.rs requires is set; what is set is read somewhere.
        env = {**glob.get("Environment", {}).get("Variables", {}), **r.get("Properties", {}).get("Environment", {}).get("Variables", {})}
        main_rs = (pkg / "src" / "main.rs").read_text() if (pkg / "src" / "main.rs").exists() else ""
        required = set(re.findall(r"\benv\(\s*\"([A-Z0-9_]+)\"\s*\)", main_rs))
        if "config_from_env" in main_rs:
            required.add("CRM_SYNC_CONFIG")
        for name in sorted(required - env.keys()):
            f.check(False, "env", f"{lid}: {code_uri}/src/main.rs requires {name}, which the template does not set")
        for name in sorted(env):
            if not NOT_READ_BY_CODE.match(name):
                f.check(f'"{name}"' in code, "env", f"{lid}: sets {name}, which no Rust code under functions/ or shared/ reads")

        # The webhook function holds no Dataverse or CRM credentials.
        if binary == "webhook":
            for name, value in env.items():
                f.check(not name.startswith("DATAVERSE_"), "webhook-creds", f"{lid}: the webhook function must not get {name}")
                leaked = param_refs(value) & {"DataverseSecretArn", "CrmSecretArns", "DataverseClientId", "DataverseTenantId"}
                f.check(not leaked, "webhook-creds", f"{lid}: {name} hands the webhook function {sorted(leaked)}")
    return binary_of


def check_cfn(cfn: dict, binary_of: dict[str, str], f: Failures) -> None:
    res = cfn["Resources"]
    queues = {k: v.get("Properties", {}) for k, v in res.items() if v["Type"] == "AWS::SQS::Queue"}
    functions = {k: v.get("Properties", {}) for k, v in res.items() if v["Type"] == "AWS::Lambda::Function"}
    mappings = {k: v.get("Properties", {}) for k, v in res.items() if v["Type"] == "AWS::Lambda::EventSourceMapping"}
    fifo = {q: p.get("FifoQueue") is True for q, p in queues.items()}
    fn_by_binary = {b: lid for lid, b in binary_of.items()}

    def env_of(fn: str) -> dict[str, Any]:
        return functions[fn].get("Environment", {}).get("Variables", {})

    def env_queues(fn: str) -> dict[str, str]:
        out = {}
        for name, v in env_of(fn).items():
            if ref(v) in queues:
                out[name] = ref(v)
        return out

    # Mappings: who triggers whom.
    triggers: dict[str, set[str]] = {fn: set() for fn in functions}  # function -> queues
    for m, p in mappings.items():
        src = getatt(p.get("EventSourceArn"))
        fn = ref(p.get("FunctionName"))
        if not src or src[0] not in queues or src[1] != "Arn" or fn not in functions:
            f.check(False, "sqs-iam", f"{m}: EventSourceArn must be !GetAtt <queue>.Arn and FunctionName !Ref <function>")
            continue
        q = src[0]
        triggers[fn].add(q)
        timeout = number(cfn, functions[fn].get("Timeout", 3)) or 3
        window = number(cfn, p.get("MaximumBatchingWindowInSeconds", 0)) or 0
        vis = number(cfn, queues[q].get("VisibilityTimeout", 30))
        f.check(
            vis is not None and vis >= 6 * timeout + window,
            "visibility",
            f"{q}: VisibilityTimeout {vis} < 6 x {fn}'s Timeout {timeout} + batching window {window}",
        )
        f.check("ReportBatchItemFailures" in as_list(p.get("FunctionResponseTypes", [])), "batch-items", f"{m}: FunctionResponseTypes must include ReportBatchItemFailures")
        mc = p.get("ScalingConfig", {}).get("MaximumConcurrency")
        if mc is not None:
            n = number(cfn, mc)
            f.check(n is not None and 2 <= n <= 1000, "concurrency", f"{m}: MaximumConcurrency {n} outside 2..1000")
        if binary_of.get(fn) == "dataverse-upsert":
            f.check(mc is not None, "concurrency", f"{m}: the dataverse-upsert mapping needs ScalingConfig.MaximumConcurrency (Dataverse parallelism)")
        if fifo[q]:
            f.check((number(cfn, p.get("BatchSize", 10)) or 10) <= 10, "batch-items", f"{m}: a FIFO source takes BatchSize <= 10")
            f.check("MaximumBatchingWindowInSeconds" not in p, "batch-items", f"{m}: FIFO sources take no batching window")

    # Queue kinds.
    for q, p in queues.items():
        name = p.get("QueueName")
        name_s = name.get("Fn::Sub") if isinstance(name, dict) else name
        if isinstance(name_s, list):
            name_s = name_s[0]
        if fifo[q]:
            f.check(isinstance(name_s, str) and name_s.endswith(".fifo"), "queue-kinds", f"{q}: a FIFO queue's name must end in .fifo (the code tells FIFO queues by their URL)")
            # Case-sensitive values the resource schema does not enumerate; high throughput needs
            # both settings together (high-throughput-fifo.html).
            scope, limit = p.get("DeduplicationScope", "queue"), p.get("FifoThroughputLimit", "perQueue")
            f.check(scope in ("queue", "messageGroup"), "queue-kinds", f"{q}: DeduplicationScope {scope!r} is not queue or messageGroup")
            f.check(limit in ("perQueue", "perMessageGroupId"), "queue-kinds", f"{q}: FifoThroughputLimit {limit!r} is not perQueue or perMessageGroupId")
            f.check((scope == "messageGroup") == (limit == "perMessageGroupId"), "queue-kinds", f"{q}: high-throughput FIFO takes DeduplicationScope messageGroup with FifoThroughputLimit perMessageGroupId")
        else:
            for k in ("ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"):
                f.check(k not in p, "queue-kinds", f"{q}: {k} applies to FIFO queues only")
        rp = p.get("RedrivePolicy")
        if rp:
            dlq = getatt(rp.get("deadLetterTargetArn"))
            if not dlq or dlq[0] not in queues:
                f.check(False, "queue-kinds", f"{q}: RedrivePolicy.deadLetterTargetArn must be !GetAtt <queue>.Arn")
            else:
                f.check(fifo[dlq[0]] == fifo[q], "queue-kinds", f"{q}: its DLQ {dlq[0]} must be {'FIFO' if fifo[q] else 'standard'} like it")
            f.check(number(cfn, rp.get("maxReceiveCount")) is not None, "queue-kinds", f"{q}: RedrivePolicy.maxReceiveCount must be set")
    for fn in functions:
        for var, q in env_queues(fn).items():
            if var in ("UPSERT_QUEUE_URL", "SYNC_QUEUE_URL"):
                f.check(fifo[q], "queue-kinds", f"{fn}: {var} must be a FIFO queue (group ids keep one record's changes in order)")
            if var == "RETRY_QUEUE_URL":
                f.check(not fifo[q], "queue-kinds", f"{fn}: {var} must be a standard queue (FIFO queues refuse per-message delays)")
            if var in DLQ_ENV and fifo[q]:
                f.check(queues[q].get("ContentBasedDeduplication") is True, "queue-kinds", f"{q}: FIFO and written by the code without deduplication ids ({var}): needs ContentBasedDeduplication")

    # Routes.
    apis = [v for v in res.values() if v["Type"] == "AWS::ApiGatewayV2::Api"]
    f.check(len(apis) == 1 and "Body" in apis[0]["Properties"], "routes", "expected one HTTP API with an OpenAPI body")
    if apis and "Body" in apis[0]["Properties"]:
        body = apis[0]["Properties"]["Body"]
        schemes = body.get("components", {}).get("securitySchemes", {})
        iam = {n for n, s in schemes.items() if s.get("x-amazon-apigateway-authtype") == "awsSigv4"}
        seen = set()
        for path, ops in body.get("paths", {}).items():
            for method, op in ops.items():
                route = f"{method.upper()} {path}"
                seen.add(route)
                sec = [k for s in op.get("security", []) for k in s]
                is_iam = bool(sec) and all(k in iam for k in sec)
                if route == "POST /webhooks/{source}":
                    f.check(not is_iam, "routes", f"{route} must be reachable by CRMs (the function verifies them)")
                else:
                    f.check(is_iam, "routes", f"{route} must use AWS_IAM authorization (security {sec})")
        f.check("POST /sync" in seen, "routes", "POST /sync route missing")
        f.check("POST /webhooks/{source}" in seen, "routes", "POST /webhooks/{source} route missing")

    # IAM.
    role_of = {}
    for fn, p in functions.items():
        g = getatt(p.get("Role"))
        if g and g[0] in res:
            role_of[fn] = res[g[0]]
        else:
            f.check(False, "sqs-iam", f"{fn}: Role must be a role of this template")
    for fn, role in role_of.items():
        binary = binary_of.get(fn, "?")
        for arn in role.get("Properties", {}).get("ManagedPolicyArns", []):
            f.check(arn == BASIC_EXECUTION_ROLE, "sqs-iam", f"{fn}: managed policy {arn} (only AWSLambdaBasicExecutionRole; AWSLambdaSQSQueueExecutionRole would allow every queue)")
        received: set[str] = set()
        sent: set[str] = set()
        for s in statements(role):
            acts = actions(s)
            rs = resources(s)
            if s.get("Effect", "Allow") != "Allow":
                continue
            for a in acts:
                f.check(a != "*" and not a.startswith("secretsmanager:*") and a != "sqs:*", "secrets" if "secret" in a or a == "*" else "sqs-iam", f"{fn}: wildcard action {a}")
            sm = [a for a in acts if a.lower().startswith("secretsmanager:")]
            if sm or "*" in acts:
                f.check(set(sm) <= {"secretsmanager:GetSecretValue"}, "secrets", f"{fn}: secrets actions {sm} (only secretsmanager:GetSecretValue)")
                allowed = SECRET_PARAM_OF_BINARY.get(binary)
                for r in rs:
                    f.check(not (isinstance(r, str) and "*" in r), "secrets", f"{fn}: secrets on resource {r!r}")
                    f.check(ref(r) is not None and ref(r) == allowed, "secrets", f"{fn} ({binary}) may read only {allowed}, not {r!r}")
            sq = [a for a in acts if a.lower().startswith("sqs:")]
            if sq:
                for r in rs:
                    g = getatt(r)
                    if not g or g[0] not in queues or g[1] != "Arn":
                        f.check(False, "sqs-iam", f"{fn}: SQS permissions on {r!r} (only !GetAtt <queue>.Arn of this stack)")
                        continue
                    if {"sqs:ReceiveMessage", "sqs:DeleteMessage"} & set(sq):
                        received.add(g[0])
                    if "sqs:SendMessage" in sq or "sqs:SendMessage*" in sq:
                        sent.add(g[0])
                    f.check(set(sq) <= {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility", "sqs:SendMessage"}, "sqs-iam", f"{fn}: unexpected SQS actions {sq}")
            # The run ledger: only PutItem/UpdateItem, only on this stack's table, and only for
            # the functions that record in it (the webhook function does not).
            dd = [a for a in acts if a.lower().startswith("dynamodb:")]
            if dd:
                f.check(set(dd) <= {"dynamodb:PutItem", "dynamodb:UpdateItem"}, "ledger-iam", f"{fn}: DynamoDB actions {dd} (only PutItem, UpdateItem)")
                f.check(binary in {"initial-sync", "dataverse-upsert"}, "ledger-iam", f"{fn} ({binary}) records nothing in the run ledger")
                for r in rs:
                    g = getatt(r)
                    f.check(bool(g) and g[0] in res and res[g[0]]["Type"] == "AWS::DynamoDB::Table" and g[1] == "Arn", "ledger-iam", f"{fn}: DynamoDB permissions on {r!r} (only !GetAtt <table>.Arn of this stack)")
            for r in rs:
                if not sm and not sq and r == "*":
                    f.check(False, "sqs-iam", f"{fn}: statement on Resource '*' ({acts})")
        env_q = set(env_queues(fn).values())
        f.check(received <= triggers[fn], "sqs-iam", f"{fn}: may receive from {sorted(received - triggers[fn])}, which do not trigger it")
        f.check(triggers[fn] <= received, "sqs-iam", f"{fn}: lacks ReceiveMessage/DeleteMessage on {sorted(triggers[fn] - received)}, which trigger it")
        f.check(sent <= env_q, "sqs-iam", f"{fn}: may send to {sorted(sent - env_q)}, which are not in its environment")
        # A queue the function is triggered by may be named only to change its messages'
        # visibility (the upsert function brings throttled messages back after Retry-After).
        f.check(env_q <= sent | received, "sqs-iam", f"{fn}: lacks SendMessage on {sorted(env_q - sent - received)}, which its environment names")
        # Recursion: sending to a queue that invokes the function itself.
        loops = sent & triggers[fn]
        if loops:
            f.check(functions[fn].get("RecursiveLoop") == "Allow", "recursion", f"{fn}: sends to {sorted(loops)}, which invoke it: needs RecursiveLoop: Allow or Lambda stops the loop")

    # The webhook function: no Dataverse/CRM secret whatsoever.
    wh = fn_by_binary.get("webhook")
    if wh in role_of:
        for s in statements(role_of[wh]):
            leaked = param_refs(s.get("Resource")) & {"DataverseSecretArn", "CrmSecretArns"}
            f.check(not leaked, "webhook-creds", f"{wh}: the webhook role may read {sorted(leaked)}")
    for b in SECRET_PARAM_OF_BINARY:
        f.check(b in fn_by_binary, "build", f"no function builds the {b} binary")

    # Logging.
    for fn, p in functions.items():
        lc = p.get("LoggingConfig", {})
        f.check(lc.get("LogFormat") == "JSON", "logging", f"{fn}: LoggingConfig.LogFormat must be JSON")
        lg = ref(lc.get("LogGroup"))
        ok = lg in res and res[lg]["Type"] == "AWS::Logs::LogGroup" and "RetentionInDays" in res[lg].get("Properties", {})
        f.check(ok, "logging", f"{fn}: LoggingConfig.LogGroup must be !Ref to an AWS::Logs::LogGroup of this stack with RetentionInDays")

    # Alarms.
    alarms = [v.get("Properties", {}) for v in res.values() if v["Type"] == "AWS::CloudWatch::Alarm"]

    def alarmed(q: str, metric: str, zero: bool) -> bool:
        for a in alarms:
            dims = a.get("Dimensions", [])
            if a.get("Namespace") == "AWS/SQS" and a.get("MetricName") == metric and any(
                d.get("Name") == "QueueName" and getatt(d.get("Value")) == (q, "QueueName") for d in dims
            ):
                if not zero:
                    return a.get("ComparisonOperator") == "GreaterThanThreshold"
                return number(cfn, a.get("Threshold")) == 0 and a.get("ComparisonOperator") == "GreaterThanThreshold"
        return False

    redrive_targets = {getatt(p["RedrivePolicy"].get("deadLetterTargetArn"))[0] for p in queues.values() if p.get("RedrivePolicy") and getatt(p["RedrivePolicy"].get("deadLetterTargetArn"))}
    code_dlqs = {q for fn in functions for var, q in env_queues(fn).items() if var in DLQ_ENV}
    for q in queues:
        if q in redrive_targets or q in code_dlqs:
            f.check(alarmed(q, "ApproximateNumberOfMessagesVisible", zero=True), "alarms", f"{q}: a DLQ needs an ApproximateNumberOfMessagesVisible > 0 alarm")
        else:
            f.check(bool(queues[q].get("RedrivePolicy")), "alarms", f"{q}: a work queue needs a RedrivePolicy to a DLQ")
    for fn in functions:
        for q in triggers[fn]:
            f.check(alarmed(q, "ApproximateAgeOfOldestMessage", zero=False), "alarms", f"{q}: needs an ApproximateAgeOfOldestMessage alarm")

    # Outputs.
    outs = cfn.get("Outputs", {})
    values = [json.dumps(o.get("Value")) for o in outs.values()]
    f.check(any("/webhooks/" in v and "execute-api" in v for v in values), "outputs", "an output must give the webhook base URL (.../webhooks/)")
    f.check(any(v.endswith('/sync"}') and "execute-api" in v and "https://" in v for v in values), "outputs", "an output must give the sync URL")
    for q in queues:
        f.check(any(ref(o.get("Value")) == q for o in outs.values()), "outputs", f"{q}: its URL must be an output")


def check_example_params(sam: dict, path: Path, f: Failures) -> None:
    if not path.exists():
        f.check(False, "example-params", f"{path.relative_to(REPO)} is missing")
        return
    values = yaml_parse(path.read_text()) or {}
    params = sam.get("Parameters", {})
    for k, v in values.items():
        p = params.get(k)
        if p is None:
            f.check(False, "example-params", f"{path.name}: {k} is not a template parameter")
            continue
        items = v if isinstance(v, list) else [v]
        if p["Type"] == "CommaDelimitedList":
            items = [str(x) for x in items]
        elif isinstance(v, list):
            f.check(False, "example-params", f"{path.name}: {k} takes one value")
            continue
        for x in items:
            s = str(x)
            if "AllowedPattern" in p:
                f.check(re.fullmatch(p["AllowedPattern"], s) is not None, "example-params", f"{path.name}: {k}={s[:60]!r} does not match {p['AllowedPattern']}")
            if "AllowedValues" in p:
                f.check(s in [str(a) for a in p["AllowedValues"]], "example-params", f"{path.name}: {k}={s!r} not allowed")
            if p["Type"] == "Number":
                n = float(s)
                f.check(n >= p.get("MinValue", n) and n <= p.get("MaxValue", n), "example-params", f"{path.name}: {k}={s} out of range")
    for k, p in params.items():
        f.check("Default" in p or k in values, "example-params", f"{path.name}: {k} has no default and must be given")


def translate(sam: dict) -> dict:
    t = copy.deepcopy(sam)
    # As `sam validate` does: local code paths become a placeholder S3 URI for the translator.
    for r in t["Resources"].values():
        if r.get("Type") == "AWS::Serverless::Function":
            r.setdefault("Properties", {})["CodeUri"] = "s3://bucket/value"
    return transform(t, {}, StubPolicyLoader())


def check_dashboard(sam: dict, f: Failures) -> None:
    boards = [r for r in sam["Resources"].values() if r.get("Type") == "AWS::CloudWatch::Dashboard"]
    f.check(len(boards) == 1, "dashboard", f"expected one AWS::CloudWatch::Dashboard, found {len(boards)}")
    if not boards:
        return
    body = boards[0].get("Properties", {}).get("DashboardBody")
    sub = body.get("Fn::Sub") if isinstance(body, dict) else None
    text = sub[0] if isinstance(sub, list) else sub
    if not isinstance(text, str):
        f.check(False, "dashboard", "DashboardBody must be a !Sub of the dashboard JSON")
        return
    try:
        json.loads(re.sub(r"\$\{[^}]+\}", "X", text))
    except ValueError as e:
        f.check(False, "dashboard", f"DashboardBody is not JSON once substituted: {e}")
    metrics_rs = (REPO / "shared/pipeline/src/metrics.rs").read_text()
    names = set(re.findall(r'=> "([A-Za-z]+)"', metrics_rs)) | {"DataverseRequestLatency"}
    charted = {"Created", "Updated", "Upserted", "Deleted", "ChangesReceived", "RecordsRead", "ChangesEnqueued", "SyncPages",
               "Retried", "Throttled", "Parked", "FailedPermanently", "ThrottleRetryAfter", "DataverseRequestLatency"}
    for n in sorted(charted):
        f.check(n in names, "dashboard", f"the dashboard charts {n}, which the code does not emit")
        f.check(f'\\"{n}\\"' in text or f'"{n}"' in text, "dashboard", f"the dashboard does not chart {n}")
    for lid, r in sam["Resources"].items():
        if r.get("Type") == "AWS::SQS::Queue":
            f.check(f"${{{lid}.QueueName}}" in text, "dashboard", f"the dashboard does not chart queue {lid}")


def run(sam: dict, out: Path | None) -> Failures:
    f = Failures()
    check_dashboard(sam, f)
    binary_of = check_sam(sam, f)
    cfn = translate(sam)
    if out:
        out.write_text(json.dumps(cfn, indent=1, sort_keys=True))
    check_cfn(cfn, binary_of, f)
    return f


# --- self-test: every assertion fails on a template broken for it -----------------------------


def _fn(t: dict, lid: str) -> dict:
    return t["Resources"][lid]["Properties"]


def _stmts(t: dict, lid: str) -> list[dict]:
    return [s for p in _fn(t, lid)["Policies"] if "Statement" in p for s in p["Statement"]]


def _secret_stmt(t: dict, lid: str) -> dict:
    for p in _fn(t, lid)["Policies"]:
        if "Fn::If" in p:
            return p["Fn::If"][1]["Statement"][0]
    raise KeyError(lid)


def _sam_sqs_event(t: dict) -> None:
    del t["Resources"]["SyncQueueMapping"]
    _fn(t, "InitialSyncFunction")["Events"]["Queue"] = {
        "Type": "SQS",
        "Properties": {"Queue": {"Fn::GetAtt": ["SyncQueue", "Arn"]}, "BatchSize": 1, "FunctionResponseTypes": ["ReportBatchItemFailures"]},
    }


BREAKAGES = {
    "ledger-iam: the upsert function may write any table": ("ledger-iam", lambda t: [s for s in _stmts(t, "UpsertFunction") if s.get("Sid") == "CountJobWrites"][0].update(Resource="*")),
    "dashboard: a queue left out": ("dashboard", lambda t: t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"].__setitem__(0, t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0].replace("${WebhookDlq.QueueName}", "x"))),
    "build: wrong binary name": ("build", lambda t: t["Resources"]["WebhookFunction"]["Metadata"]["BuildProperties"].update(Binary="webhook-fn")),
    "build: x86_64": ("build", lambda t: _fn(t, "UpsertFunction").update(Architectures=["x86_64"])),
    "limits: memory over Lambda's maximum": ("limits", lambda t: _fn(t, "UpsertFunction").update(MemorySize=20000)),
    "limits: webhook slower than API Gateway waits": ("limits", lambda t: _fn(t, "WebhookFunction").update(Timeout=60)),
    "env: a variable main.rs requires is missing": ("env", lambda t: _fn(t, "InitialSyncFunction")["Environment"]["Variables"].pop("SYNC_DLQ_URL")),
    "env: a variable the code does not read": ("env", lambda t: _fn(t, "UpsertFunction")["Environment"]["Variables"].update(DEAD_LETTER_URL={"Ref": "UpsertDlq"})),
    "visibility: 5 x timeout": ("visibility", lambda t: _fn(t, "UpsertQueue").update(VisibilityTimeout=600)),
    "batch-items: no ReportBatchItemFailures": ("batch-items", lambda t: _fn(t, "SyncQueueMapping").pop("FunctionResponseTypes")),
    "concurrency: upsert mapping unbounded": ("concurrency", lambda t: _fn(t, "UpsertQueueMapping").pop("ScalingConfig")),
    "queue-kinds: standard DLQ for a FIFO queue": ("queue-kinds", lambda t: [_fn(t, "SyncDlq").pop(k) for k in ("FifoQueue", "ContentBasedDeduplication")] and _fn(t, "SyncDlq").update(QueueName={"Fn::Sub": "${AWS::StackName}-sync-dlq"})),
    "queue-kinds: FIFO dead letters without content deduplication": ("queue-kinds", lambda t: _fn(t, "UpsertDlq").update(ContentBasedDeduplication=False)),
    "queue-kinds: DeduplicationScope spelt wrong": ("queue-kinds", lambda t: _fn(t, "UpsertQueue").update(DeduplicationScope="messagegroup")),
    "queue-kinds: FIFO retry queue": ("queue-kinds", lambda t: _fn(t, "UpsertFunction")["Environment"]["Variables"].update(RETRY_QUEUE_URL={"Ref": "UpsertQueue"})),
    "routes: /sync public": ("routes", lambda t: _fn(t, "InitialSyncFunction")["Events"]["StartSync"]["Properties"]["Auth"].update(Authorizer="NONE")),
    "secrets: Resource '*'": ("secrets", lambda t: _secret_stmt(t, "WebhookFunction").update(Resource="*")),
    "secrets: secretsmanager:*": ("secrets", lambda t: _secret_stmt(t, "InitialSyncFunction").update(Action="secretsmanager:*")),
    "secrets: upsert reads the CRM secrets": ("secrets", lambda t: _stmts(t, "UpsertFunction")[2].update(Resource=[{"Ref": "DataverseSecretArn"}, {"Ref": "CrmSecretArns"}])),
    "webhook-creds: webhook reads the Dataverse secret": ("webhook-creds", lambda t: _secret_stmt(t, "WebhookFunction").update(Resource={"Ref": "DataverseSecretArn"})),
    "webhook-creds: webhook gets DATAVERSE_CLIENT_SECRET": ("webhook-creds", lambda t: _fn(t, "WebhookFunction")["Environment"]["Variables"].update(DATAVERSE_CLIENT_SECRET={"Fn::Sub": "aws-secret:${DataverseSecretArn}"})),
    "sqs-iam: SAM SQS event (managed policy on every queue)": ("sqs-iam", _sam_sqs_event),
    "sqs-iam: send to a queue not in the environment": ("sqs-iam", lambda t: _stmts(t, "WebhookFunction")[0]["Resource"].append({"Fn::GetAtt": ["RetryQueue", "Arn"]})),
    "sqs-iam: receive on '*'": ("sqs-iam", lambda t: _stmts(t, "UpsertFunction")[0].update(Resource="*")),
    "logging: text logs": ("logging", lambda t: _fn(t, "WebhookFunction")["LoggingConfig"].update(LogFormat="Text")),
    "alarms: DLQ without alarm": ("alarms", lambda t: t["Resources"].pop("WebhookDlqAlarm")),
    "alarms: work queue without age alarm": ("alarms", lambda t: t["Resources"].pop("RetryQueueAgeAlarm")),
    "recursion: page loop stopped after 16": ("recursion", lambda t: _fn(t, "InitialSyncFunction").pop("RecursiveLoop")),
    "outputs: a queue URL missing": ("outputs", lambda t: t["Outputs"].pop("RetryDlqUrl")),
}


def self_test(sam: dict) -> bool:
    ok = True
    for label, (name, breakage) in BREAKAGES.items():
        t = copy.deepcopy(sam)
        breakage(t)
        try:
            got = run(t, None).names()
        except Exception as e:  # a translation error is not the assertion under test
            print(f"  self-test {label}: translation failed: {e}", file=sys.stderr)
            ok = False
            continue
        if name not in got:
            print(f"  self-test {label}: the `{name}` assertion did not fire (got {sorted(got) or 'nothing'})", file=sys.stderr)
            ok = False
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--template", type=Path, default=REPO / "template.yaml")
    ap.add_argument("--out", type=Path, help="write the translated CloudFormation (JSON) here")
    ap.add_argument("--params", type=Path, default=REPO / "deploy" / "params.example.yaml")
    ap.add_argument("--self-test", action="store_true", help="also check that every assertion fails on a template broken for it")
    args = ap.parse_args()

    sam = yaml_parse(args.template.read_text())
    f = run(sam, args.out)
    check_example_params(sam, args.params, f)
    for name, message in f.items:
        print(f"FAIL [{name}] {message}", file=sys.stderr)
    if f.items:
        return 1
    if "aws-secret:" not in rust_sources():
        print("note: no Rust code handles `aws-secret:` references yet; the template passes them (DATAVERSE_CLIENT_SECRET)", file=sys.stderr)
    if args.self_test:
        if not self_test(sam):
            print("FAIL self-test: an assertion did not catch its breakage", file=sys.stderr)
            return 1
        print(f"self-test: {len(BREAKAGES)} breakages, each caught by its assertion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
