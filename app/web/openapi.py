"""GET /openapi.json and GET /docs, generated from the same pydantic models the routes use.

Each operation is one row of `OPERATIONS`; the schemas come from the models with
`models_json_schema`, so a field added to a model shows in the document at once. A test
checks that every /v1 route is described and schemathesis checks the answers against it.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from app import dialects
from app import proof_schemas as proof
from app import schemas as s
from app import schemas_rules as r

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Param:
    """A query or path parameter."""

    name: str
    where: str  # "query" | "path"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Op:
    """One documented operation."""

    method: str
    path: str
    summary: str
    tag: str
    ok: int = 200
    response: type[BaseModel] | None = None
    request: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = (400, 401, 422)
    auth: bool = True
    form: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    bare_items: bool = False  # the body may also be the bare array of the request model's `items`
    extra_body: dict[str, Any] = field(default_factory=dict)  # a body no model describes: media type -> schema
    csv: bool = False  # the answer may also be text/csv (format=csv)


STRING = {"type": "string"}
LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size")
CURSOR = Param("cursor", "query", STRING, "the `nextCursor` of the previous page")
PHONE_Q = Param("phoneNumber", "query", STRING, "E.164, or digits with a country code, or national")
PROGRAM_Q = Param("program", "query", STRING, "program key")
STATUS_Q = Param("status", "query", {"type": "string", "enum": ["none", "pendingDOI", "subscribed", "unsubscribed"]})
REF = Param("ref", "path", STRING, "a prof_ id or the brand's externalId", required=True)
PHONE_P = Param("phone", "path", STRING, "a phone number", required=True)
EMAIL_P = Param("email", "path", STRING, "an email address", required=True)
TWILIO_FORM = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in (
        "MessageSid", "AccountSid", "MessagingServiceSid", "From", "To", "Body", "NumMedia", "OptOutType",
        "MessageStatus", "ErrorCode")},
    "additionalProperties": {"type": "string"},
}

OPERATIONS: tuple[Op, ...] = (
    Op("post", "/webhooks/twilio", "Inbound SMS from Twilio (signed with X-Twilio-Signature)", "webhooks",
       form=True, auth=False, errors=(400, 403, 413, 415, 503)),
    Op("post", "/webhooks/twilio/status", "Delivery status callback from Twilio", "webhooks", form=True, auth=False,
       errors=(400, 403, 413, 415, 503)),
    Op("post", "/v1/profiles", "Upsert a profile (match on externalId, then phoneNumber, then email)", "profiles",
       ok=200, response=s.ProfileOut, request=s.ProfileIn, errors=(400, 401, 409, 413, 415, 422),
       extra={"201": s.ProfileOut}),
    Op("get", "/v1/profiles", "List profiles", "profiles", response=s.ProfilePage,
       params=(LIMIT, CURSOR, Param("updatedSince", "query", {"type": "string", "format": "date-time"}), PROGRAM_Q,
               STATUS_Q)),
    Op("post", "/v1/profiles/batch", "Upsert up to 1000 profiles; one result per item", "profiles",
       response=s.ProfileBatchOut, request=s.ProfileBatchIn, errors=(400, 401, 413, 415, 422), bare_items=True),
    Op("get", "/v1/profiles/by-phone/{phone}", "Get a profile by phone number", "profiles", response=s.ProfileOut,
       params=(PHONE_P,), errors=(401, 404, 422)),
    Op("get", "/v1/profiles/by-email/{email}", "Get a profile by email", "profiles", response=s.ProfileOut,
       params=(EMAIL_P,), errors=(401, 404, 422)),
    Op("get", "/v1/profiles/{ref}", "Get a profile", "profiles", response=s.ProfileOut, params=(REF,),
       errors=(401, 404)),
    Op("patch", "/v1/profiles/{ref}", "Change some fields of a profile", "profiles", response=s.ProfileOut,
       request=s.ProfileIn, params=(REF,), errors=(400, 401, 404, 409, 413, 415, 422)),
    Op("delete", "/v1/profiles/{ref}", "Delete a profile's personal data (subscriptions stay, detached)", "profiles",
       ok=204, params=(REF,), errors=(401, 404)),
    Op("post", "/v1/subscriptions/opt-in", "Opt a phone in with consent proof", "subscriptions",
       response=s.SubscriptionOut, request=s.OptInIn, errors=(400, 401, 409, 413, 422)),
    Op("post", "/v1/subscriptions/opt-out", "Opt a phone out of one program, or all", "subscriptions",
       response=s.SubscriptionPage, request=s.OptOutIn, errors=(400, 401, 413, 422)),
    Op("get", "/v1/subscriptions", "List subscriptions", "subscriptions", response=s.SubscriptionPage,
       params=(LIMIT, CURSOR, PHONE_Q, PROGRAM_Q, STATUS_Q)),
    Op("get", "/v1/contacts/{phone}", "A phone's statuses, Cordial-shaped", "contacts", response=s.ContactOut,
       params=(PHONE_P,), errors=(401, 422)),
    Op("put", "/v1/contacts/{phone}", "Subscribe (starts DOI) or unsubscribe a phone per program", "contacts",
       response=s.ContactOut, request=s.ContactIn, params=(PHONE_P,), errors=(400, 401, 409, 413, 422)),
    Op("get", "/v1/consent-events", "The consent ledger", "consent", response=s.ConsentEventPage,
       params=(LIMIT, CURSOR, PHONE_Q, PROGRAM_Q, Param("since", "query", {"type": "string", "format": "date-time"}))),
    Op("get", "/v1/programs", "The brand's programs as configured", "programs", response=s.ProgramPage,
       errors=(401,)),
    Op("get", "/v1/messages", "Inbound and outbound texts with their statuses", "messages", response=s.MessagePage,
       params=(LIMIT, CURSOR, PHONE_Q, Param("flagged", "query", {"type": "string", "enum": ["true", "false"]},
                                             "true: only inbound texts flagged as close to an opt-out"))),
    Op("get", "/v1/contacts/{phone}/evidence", "A phone's evidence pack: per program, every consent event with "
       "its texts, receipts and proof, and the chain's verification", "proof", response=proof.EvidenceOut,
       params=(PHONE_P,), errors=(401, 422)),
    Op("post", "/v1/contacts/{phone}/erase", "Erase a phone: its personal data and texts go, its opt-outs stay "
       "(kept under a keyed hash of the number)", "proof", response=proof.ErasureOut, params=(PHONE_P,),
       errors=(401, 422)),
    Op("get", "/v1/ledger/checkpoints", "The consent ledger's checkpoints, newest first: keep their hashes outside "
       "optline", "proof", response=proof.CheckpointPage, params=(
           Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size"),
           Param("before", "query", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}, "the `nextBefore` of the previous page")),
       errors=(400, 401)),
    Op("post", "/v1/send-check", "May these sends go now (or at `at`)? Per item: allowed, reasons, nextAllowedAt",
       "rules", response=r.SendCheckOut, request=r.SendCheckIn, errors=(400, 401, 413, 415, 422)),
    Op("post", "/v1/sends", "Record texts the brand sent itself (they count toward caps)", "rules",
       response=r.SendsOut, request=r.SendsIn, errors=(400, 401, 413, 415, 422)),
    Op("post", "/v1/opt-outs/import", "Import an opt-out list (JSON array or CSV, streamed); bad rows reported by line",
       "rules", response=r.OptOutImportOut, errors=(400, 401, 413, 415, 422),
       extra_body={"application/json": {"type": "array", "maxItems": 1_000_000, "items": {
           "type": "object", "required": ["phoneNumber"], "properties": {
               "phoneNumber": {"type": "string"}, "optedOutAt": {"type": "string", "format": "date-time"},
               "program": {"type": "string"}}}},
           "text/csv": {"type": "string", "description": "a header line naming phoneNumber (and optionally "
                                                         "optedOutAt, program), then one row a line"}}),
    Op("get", "/v1/opt-outs", "The suppression list: phones opted out, by program and time (JSON pages or CSV)",
       "rules", response=r.OptOutPage,
       params=(LIMIT, CURSOR, Param("since", "query", {"type": "string", "format": "date-time"}),
               Param("format", "query", {"type": "string", "enum": ["json", "csv"], "default": "json"},
                     "csv: text/csv, the next page's cursor in the Next-Cursor header")), csv=True),
)


def _problem_response(status: int) -> dict[str, Any]:
    return {"description": _REASONS.get(status, "error"),
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


_REASONS = {400: "bad request", 401: "missing or bad API key", 403: "bad or missing signature", 404: "not found",
            409: "conflict: consent older than an opt-out, an opt-out only the phone can undo (`optOut`), or an "
                 "Idempotency-Key in flight", 413: "body too large", 415: "unsupported media type",
            422: "invalid fields (also: Idempotency-Key reused with another request)",
            503: "database unavailable; retry"}


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    models: list[type[BaseModel]] = [s.Problem]
    for op in OPERATIONS:
        for model in (op.request, op.response, *op.extra.values()):
            if model is not None and model not in models:
                models.append(model)
    keys = [(m, "serialization" if m is not s.ProfileIn and not m.__name__.endswith("In") else "validation")
            for m in models]
    _, defs = models_json_schema(keys, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item: dict[str, Any] = {"summary": op.summary, "tags": [op.tag],
                                "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}"}
        params = [{"name": p.name, "in": p.where, "required": p.required or p.where == "path", "schema": p.schema,
                   **({"description": p.description} if p.description else {})} for p in op.params]
        if op.method in ("post", "put", "patch", "delete") and op.path.startswith("/v1/"):
            params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                           "description": "replay protection for 24 h"})
        if op.form:
            params.append({"name": "X-Twilio-Signature", "in": "header", "required": True, "schema": STRING})
        if params:
            item["parameters"] = params
        if op.request is not None:
            schema: dict[str, Any] = {"$ref": f"#/components/schemas/{op.request.__name__}"}
            if op.bare_items:
                items = defs["$defs"][op.request.__name__]["properties"]["items"]
                schema = {"oneOf": [schema, {key: items[key] for key in ("type", "items", "minItems", "maxItems")
                                             if key in items}]}
            item["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        elif op.extra_body:
            item["requestBody"] = {"required": True, "content": {
                media: {"schema": schema} for media, schema in op.extra_body.items()}}
        elif op.form:
            item["requestBody"] = {"required": True, "content": {
                "application/x-www-form-urlencoded": {"schema": TWILIO_FORM}}}
        responses: dict[str, Any] = {}
        if op.form:
            responses["200"] = {"description": "empty TwiML, after the text is committed",
                                "content": {"text/xml": {"schema": STRING}}}
        elif op.response is None:
            responses[str(op.ok)] = {"description": "done"}
        else:
            responses[str(op.ok)] = {"description": "ok", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.response.__name__}"}}}}
        if op.csv:
            responses[str(op.ok)]["content"]["text/csv"] = {"schema": STRING}
        for status, model in op.extra.items():
            responses[status] = {"description": "created", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
        errors = set(op.errors) | ({401} if op.auth else set())
        if op.method != "get" and op.path.startswith("/v1/"):
            errors |= {409, 422}
        for status in sorted(errors):
            responses[str(status)] = _problem_response(status)
        item["responses"] = responses
        if op.auth:
            item["security"] = [{"apiKey": []}, {"bearer": []}]
        paths.setdefault(op.path, {})[op.method] = item
    for op in dialects.operations():
        paths.setdefault(str(op["path"]), {})[str(op["method"])] = _dialect_item(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "optline", "version": "1.0.0",
                 "description": "Inbound SMS keyword and double-opt-in gateway: Twilio webhooks and the brand API."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                                "bearer": {"type": "http", "scheme": "bearer"},
                                # The vendor dialects' own ways: Cordial's Basic (the key as user), Sonar's header.
                                "basic": {"type": "http", "scheme": "basic"},
                                "xToken": {"type": "apiKey", "in": "header", "name": "X-Token"}},
        },
    }


def _dialect_item(op: dict[str, Any]) -> dict[str, Any]:
    """One vendor dialect route (app.dialects): its vendor's JSON in and out, under the vendor's tag."""
    path = str(op["path"])
    item: dict[str, Any] = {
        "summary": op["summary"], "tags": [op["tag"]],
        "operationId": f"{op['method']}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '').replace('-', '_')}",
    }
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    if names:
        item["parameters"] = [{"name": n, "in": "path", "required": True, "schema": STRING} for n in names]
    if op["body"]:
        item["requestBody"] = {"required": True, "content": {"application/json": {"schema": {}}}}
    ok = int(op["ok"])  # type: ignore[call-overload]
    responses: dict[str, Any] = {}
    if ok == 202:
        responses["202"] = {"description": "accepted, no content"}
    else:
        responses[str(ok)] = {"description": "ok", "content": {"application/json": {"schema": {}}}}
        if op["method"] == "post":
            responses["201"] = {"description": "created", "content": {"application/json": {"schema": {}}}}
    for status in sorted(set(op["errors"]) | {401}):  # type: ignore[call-overload]
        responses[str(status)] = _problem_response(status)
    item["responses"] = responses
    item["security"] = [{op["security"]: []}]
    return item


async def openapi_json(_request: Request) -> JSONResponse:
    """GET /openapi.json."""
    return JSONResponse(document())


async def docs_page(_request: Request) -> HTMLResponse:
    """GET /docs: the document rendered for a person, with no assets from the internet."""
    doc = document()
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>optline API</title><style>",
             "body{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}",
             "h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}code,pre{background:#f6f6f6}",
             "pre{padding:.6em;overflow:auto;font-size:12px}.m{font-weight:bold;text-transform:uppercase;",
             "display:inline-block;width:4.5em}details{margin:.3em 0 1em 4.5em}</style></head><body>",
             f"<h1>{html.escape(doc['info']['title'])} API</h1><p>{html.escape(doc['info']['description'])}</p>",
             "<p>Authenticate with <code>x-api-key: &lt;key&gt;</code> or <code>Authorization: Bearer &lt;key&gt;"
             "</code> (<code>optline keys create --brand BRAND</code>). Errors are "
             "<code>application/problem+json</code>. The machine-readable document is "
             "<a href='/openapi.json'>/openapi.json</a>.</p>"]
    tags: dict[str, list[str]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            block = [f"<div><span class='m'>{method}</span> <code>{html.escape(path)}</code> — "
                     f"{html.escape(op['summary'])}<details><summary>details</summary>"]
            for param in op.get("parameters", []):
                block.append(f"<div><code>{html.escape(param['name'])}</code> ({param['in']}"
                             f"{', required' if param.get('required') else ''}) {html.escape(param.get('description', ''))}</div>")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                block.append(f"<div>request {html.escape(media)}:</div><pre>{html.escape(_expand(content['schema'], doc))}</pre>")
            for status, response in op["responses"].items():
                block.append(f"<div>{status}: {html.escape(response['description'])}</div>")
            block.append("</details></div>")
            tags.setdefault(op["tags"][0], []).append("".join(block))
    for tag, blocks in tags.items():
        parts.append(f"<h2>{html.escape(tag)}</h2>")
        parts.extend(blocks)
    parts.append("</body></html>")
    return HTMLResponse("".join(parts))


def _expand(schema: dict[str, Any], doc: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return json.dumps({name: doc["components"]["schemas"][name]}, indent=2)[:6000]
    return json.dumps(schema, indent=2)
