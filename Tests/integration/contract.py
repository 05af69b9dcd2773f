"""Every REST response the integration tests see is checked against docs/openapi.yaml.

`StackSession` (conftest.py) hands each response whose path starts with /api/ to
`CONTRACT.check(method, path, response)`, which fails the test on the spot when:

- the path and method match no operation and the answer is not the documented
  `404 not_found` / `405 method_not_allowed` (with `Allow`);
- the status is not listed for the operation (no `default` responses in the document:
  every status an operation can give is named);
- a documented JSON body is missing, is not `application/json`, or does not validate
  against the response schema (JSON Schema 2020-12, OpenAPI 3.1 dialect; `$ref`s resolve
  in the document); a response documented without a body has one;
- a header the response declares as required is missing, or a declared header's value
  does not match its schema (`Retry-After` digits, `Allow` a string);
- the body contains text from a layer that must never reach a client: SQL or SQLSTATE
  wording, C-library names (libpq, libmongoc, hiredis, rabbitmq-c, libcurl, OpenSSL),
  Swift source locations or fatal-error text.

The counts per operation are printed at the end of the run (conftest's terminal summary).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SPEC_URI = "urn:swiftchat:openapi"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

# Text that only an internal layer produces. A response body containing any of these
# leaked an implementation detail (the API maps every such failure to a plain envelope).
LEAK_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"SQLSTATE", r"\bsyntax error at\b", r"canceling statement", r"\bPostgreSQL \d{5}\b", r"\bMongoDB \d+/\d+", r"duplicate key value", r"violates \w+ constraint",
    r"relation \"", r"\bpg_\w+\(", r"\blibpq\b",
    r"\bPQ(?:exec|connect|result|status|error|prepare|send|get|finish|escape|consume)\w*", r"\bmongoc_", r"\bbson_",
    r"\blibmongoc\b", r"\bhiredis\b", r"\bredisCommand", r"\bamqp_\w+", r"\brabbitmq-c\b",
    r"\bcurl_easy", r"\bCURLE_", r"\bOpenSSL\b", r"\bEVP_\w+", r"\bargon2_\w+",
    r"Fatal error:", r"\.swift:\d+", r"\bSwift runtime\b", r"Traceback \(most recent",
    r"Segmentation fault",
)]


# Errors info.description documents for any request, whatever the operation lists.
GENERIC: dict[str, tuple[str, ...]] = {
    "400": ("bad_request", "header_too_large"),
    "408": ("request_timeout",),
    "413": ("payload_too_large",),
    "414": ("uri_too_long",),
    "415": ("unsupported_media_type",),
    "500": ("internal_error",),
    "501": ("not_implemented",),
    "502": ("bad_gateway",),
    "503": ("postgresql_unavailable", "mongodb_unavailable", "redis_unavailable", "rabbitmq_unavailable",
            "fcgiapp_unavailable", "service_unavailable"),
    "504": ("gateway_timeout",),
}


# Random tokens (JWTs, OAuth states, PKCE challenges, ids) are long runs of base64url that
# mix digits with upper- and lower-case letters; a short pattern such as "EVP_" can occur
# in them by chance. They are blanked before the scan; C names and SQL text never look so.
TOKEN_RUN = re.compile(r"[A-Za-z0-9_\-]{16,}")


def _without_tokens(text: str) -> str:
    def blank(m: re.Match) -> str:
        run = m.group(0)
        mixed = any(c.isdigit() for c in run) and any(c.isupper() for c in run) and any(c.islower() for c in run)
        return " " if mixed else run
    return TOKEN_RUN.sub(blank, text)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class ContractViolation(AssertionError):
    pass


class Contract:
    def __init__(self, spec_path: Path = SPEC_PATH) -> None:
        self.spec = yaml.safe_load(spec_path.read_text())
        resource = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(SPEC_URI, resource)
        self.routes: list[tuple[re.Pattern, str, int]] = []
        for template in self.spec["paths"]:
            segments = template.strip("/").split("/")
            literal = sum(1 for s in segments if not s.startswith("{"))
            regex = "^/" + "/".join("[^/]+" if s.startswith("{") else re.escape(s) for s in segments) + "$"
            self.routes.append((re.compile(regex), template, literal))
        # Fixed paths win over templated ones (/api/auth/login before /api/auth/{provider}).
        self.routes.sort(key=lambda r: -r[2])
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []  # lines for the end-of-run summary (schemathesis totals)
        self._validators: dict[str, Draft202012Validator] = {}

    # -- lookups -------------------------------------------------------------------
    def _resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and set(node) == {"$ref"}:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target: Any = self.spec
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def _validator(self, pointer: str) -> Draft202012Validator:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Draft202012Validator({"$ref": f"{SPEC_URI}#/{pointer}"}, registry=self.registry,
                                             format_checker=FormatChecker())
            self._validators[pointer] = validator
        return validator

    def operation_for(self, method: str, path: str) -> tuple[Optional[str], Optional[dict]]:
        for regex, template, _ in self.routes:
            if regex.match(path):
                item = self.spec["paths"][template]
                op = item.get(method) or (item.get("get") if method == "head" else None)
                return template, op
        return None, None

    # -- the check -------------------------------------------------------------------
    def check(self, method: str, url: str, response) -> None:
        path = urlsplit(url).path
        if not path.startswith("/api/"):
            return
        method = method.lower()
        template, op = self.operation_for(method, path)
        body = response.content
        status = str(response.status_code)
        where = f"{method.upper()} {path} -> {status}"

        text = body.decode("utf-8", "replace")
        scanned = _without_tokens(text)
        for pattern in LEAK_PATTERNS:
            if pattern.search(scanned):
                raise ContractViolation(f"{where}: the body leaks internal detail ({pattern.pattern}): {text[:300]}")

        generic = GENERIC.get(status)
        if generic is not None and self._generic_error(response, generic):
            self.counts[f"(any path) {status}"] += 1
            return

        if template is None:
            key, responses, pointer_base = "(unknown path)", {"404": {"$ref": "#/components/responses/EndpointNotFound"}}, None
        elif op is None:
            allowed = sorted(m for m in self.spec["paths"][template] if m in METHODS)
            key = f"(method not allowed) {template}"
            responses = {"405": {"$ref": "#/components/responses/MethodNotAllowed"}}
            pointer_base = None
            if status == "405":
                allow = response.headers.get("Allow", "")
                listed = sorted(m.strip().lower() for m in allow.split(","))
                if listed != allowed:
                    raise ContractViolation(f"{where}: Allow {allow!r}, the document lists {allowed}")
        else:
            key = f"{method.upper()} {template}"
            responses = op["responses"]
            op_method = method if method in self.spec["paths"][template] else "get"
            pointer_base = _pointer("paths", template, op_method, "responses")
        # Statuses nginx can give for any path under /api/ (documented in info.description):
        # tolerated only if the operation lists them, except for unknown paths/methods.
        if status not in responses:
            raise ContractViolation(f"{where}: status {status} is not documented for {key} "
                                    f"(documented: {sorted(responses)}); body {text[:300]}")
        spec_response = responses[status]
        # The JSON pointer of the response object, for schema validation with $ref context.
        if "$ref" in spec_response:
            pointer = spec_response["$ref"][2:]
        else:
            pointer = pointer_base + "/" + _pointer(status)
        resolved = self._resolve(spec_response)

        for name, header in (resolved.get("headers") or {}).items():
            header = self._resolve(header)
            value = response.headers.get(name)
            if value is None:
                if header.get("required"):
                    raise ContractViolation(f"{where}: required header {name} is missing")
                continue
            schema = header.get("schema") or {}
            if schema.get("type") == "integer" and not re.fullmatch(r"\d+", value):
                raise ContractViolation(f"{where}: header {name}: {value!r} is not an integer")

        content = resolved.get("content")
        if method == "head":
            pass
        elif not content:
            if body:
                raise ContractViolation(f"{where}: documented without a body, got {text[:200]!r}")
        else:
            media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media not in content:
                raise ContractViolation(f"{where}: Content-Type {media!r}, documented {sorted(content)}")
            if media == "application/json":
                try:
                    document = json.loads(body)
                except ValueError as exc:
                    raise ContractViolation(f"{where}: body is not JSON ({exc}): {text[:200]!r}") from None
                if "schema" in content[media]:
                    schema_pointer = pointer + "/" + _pointer("content", media, "schema")
                    errors = sorted(self._validator(schema_pointer).iter_errors(document),
                                    key=lambda e: list(e.absolute_path))
                    if errors:
                        first = errors[0]
                        location = "/".join(str(p) for p in first.absolute_path) or "(root)"
                        raise ContractViolation(f"{where}: body breaks the schema at {location}: "
                                                f"{first.message[:300]}; body {text[:300]}")
        self.counts[f"{key} {status}"] += 1

    def _generic_error(self, response, codes: tuple[str, ...]) -> bool:
        """True for one of the errors info.description says any request can get (nginx's,
        the FastCGI parser's, a dependency that is down): the Error envelope with one of
        the codes for that status, as application/json."""
        if response.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            return False
        try:
            document = json.loads(response.content)
        except ValueError:
            return False
        if list(self._validator("components/schemas/Error").iter_errors(document)):
            return False
        code = document["error"]["code"]
        if code not in codes:
            return False
        if response.status_code in (429, 503) and code != "service_unavailable" \
                and not re.fullmatch(r"\d+", response.headers.get("Retry-After", "")):
            raise ContractViolation(f"{response.status_code} {code} without Retry-After")
        return True

    def summary(self) -> str:
        operations = {k.rsplit(" ", 1)[0] for k in self.counts if not k.startswith("(")}
        documented = sum(1 for item in self.spec["paths"].values() for m in item if m in METHODS)
        return (f"contract: {sum(self.counts.values())} API responses validated against docs/openapi.yaml; "
                f"{len(operations)} of {documented} operations and "
                f"{len({k for k in self.counts if not k.startswith('(')})} (operation, status) pairs seen")


CONTRACT = Contract()
