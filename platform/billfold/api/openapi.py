"""What the OpenAPI document says: errors, authentication, idempotency keys and request bodies.

Every error status a route can answer is documented with the real envelope (``ErrorEnvelope``);
``responses(...)`` adds a route's own statuses to the ones every authenticated route has. Request
bodies are documented from the schema msgspec derives from the very types the decoder enforces
(:class:`BodySchemaPlugin`), plus what the services check beyond the types (:data:`Refinements`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Litestar

# Litestar's schema plugin for msgspec Structs (a private module; test_openapi checks the document).
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIResponse, Operation, Reference, RequestBody, Schema
from litestar.params import HeaderParameter
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from billfold.fields import NO_NUL
from billfold.ledger.idempotency import MAX_KEY_LENGTH

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator


class ErrorDetail(msgspec.Struct, rename="camel", omit_defaults=True):
    code: str
    message: str
    fix: str | None = None
    field: str | None = None
    provider: str | None = None
    provider_code: str | None = None


class ErrorEnvelope(msgspec.Struct, rename="camel"):
    """Every error: a tracking id (also in ``X-Tracking-Id`` and the log line), a machine code, a
    message, and ``error`` with the fix and the field where one helps. Some errors add fields
    (``next_action`` and ``client_secret`` on 3-D Secure, the balance on 402)."""

    tracking_id: str
    code: str
    message: str
    error: ErrorDetail


class Error002(msgspec.Struct, omit_defaults=True):
    """Document 002's tagged error (``issues`` when the request did not decode: HttpApiDecodeError)."""

    _tag: str = msgspec.field(name="_tag")
    message: str
    trackingId: str
    issues: list[dict[str, Any]] | None = None


class Error004(msgspec.Struct, omit_defaults=True):
    """Document 004's error; a 402 for money carries the balance, the amount required (major
    units) and where to top up instead of ``details``."""

    error: str
    message: str
    trackingId: str
    details: list[dict[str, Any]] | None = None
    balance: float | None = None
    required_amount: float | None = None
    topup_url: str | None = None


_ENVELOPES: dict[str | None, Any] = {
    None: ErrorEnvelope,
    "002": Error002,
    "004": Error004,
    "shaped": ErrorEnvelope | Error004,
}
"""Error bodies by family; "shaped": Billfold's usage routes, which answer 004's errors when the
request sends ``Billfold-Shape: 004``."""

_DESCRIPTIONS = {
    400: "Invalid request: the field is named in `error.field`",
    401: "Missing, malformed or revoked API key",
    402: "Payment required: the balance (or a cap) does not allow it, or the card was declined",
    403: "The path names another organization than the key's",
    404: "Not found (another organization's resources are not found either)",
    409: "Conflict: already done, or an Idempotency-Key reused with another request",
    413: "The body is larger than 1 MiB",
    415: "The body is not JSON",
    422: "Understood but not possible now (e.g. no payment method on file)",
    429: "Rate limited: retry after `Retry-After` seconds",
    502: "The payment provider failed or refused (nothing was charged)",
}

_TRACKING = "trk_5c1e0d9a4b7f2e8c3a61"
_ERROR_EXAMPLES: dict[int, tuple[str, str, str | None, str | None]] = {
    400: ("validation_error", "amount_cents: Expected `int`, got `str`", None, "amount_cents"),
    401: (
        "invalid_api_key",
        "the API key is unknown or revoked",
        "Send a live key as `Authorization: Bearer <key>`.",
        None,
    ),
    402: (
        "insufficient_funds",
        "insufficient funds: 10000 needed, 4880 available",
        "Top up the balance or enable auto-reload, then retry.",
        None,
    ),
    403: ("organization_mismatch", "this API key belongs to another organization", None, "org_id"),
    404: ("hold_not_found", "hold not found", None, "hold_id"),
    409: ("idempotency_key_reused", "this Idempotency-Key was used with another request", None, None),
    413: ("payload_too_large", "the body is larger than 1 MiB", None, None),
    415: (
        "unsupported_media_type",
        "the request body must be JSON (Content-Type: application/json)",
        None,
        None,
    ),
    422: ("no_payment_method", "no payment method on file", "Save a card first.", None),
    429: ("rate_limited", "Too Many Requests", "Slow down and retry after the Retry-After seconds.", None),
    502: ("provider_unavailable", "the payment provider did not answer; nothing was charged", None, None),
}
"""One representative error per status, in each family's shape (the examples of ``responses``)."""


def _error_example(family: str | None, status: int) -> Example:
    code, message, fix, field = _ERROR_EXAMPLES[status]
    value: dict[str, Any]
    if family == "002":
        tag = {
            401: "Unauthorized",
            402: "PaymentRequired",
            403: "Forbidden",
            404: "NotFound",
            409: "Conflict",
        }
        value = {"_tag": tag.get(status, "TooManyRequests" if status == 429 else "BadRequest")}
        value.update({"message": message, "trackingId": _TRACKING})
        if status == 400 and field:
            value["_tag"] = "HttpApiDecodeError"
            value["issues"] = [{"_tag": "Type", "path": [field], "message": message}]
    elif family == "004":
        value = {"error": code, "message": message, "trackingId": _TRACKING}
        if status == 402:
            value.update(
                {"balance": 12.5, "required_amount": 100.0, "topup_url": "https://example.com/top-up"}
            )
        elif field:
            value["details"] = [{"field": field, "message": message}]
    else:
        error = {"code": code, "message": message}
        if fix:
            error["fix"] = fix
        if field:
            error["field"] = field
        value = {"trackingId": _TRACKING, "code": code, "message": message, "error": error}
        if status == 402:
            value.update({"balance_cents": 4880, "required_cents": 10000, "currency": "usd"})
    return Example(summary=f"{status} {code}", value=value)


def example(summary: str, value: Any, description: str | None = None) -> Example:
    """A named example of a request or response body."""
    return Example(summary=summary, description=description, value=value)


def documented(
    *,
    request: list[Example] | None = None,
    response: Mapping[int, list[Example]] | None = None,
    optional_body: bool = False,
) -> type[Operation]:
    """An ``operation_class`` that adds examples to the request body (``request``) and to the
    success responses (``response``, by status) Litestar generates from the types, keeping their
    schemas and headers; ``optional_body`` as :class:`OptionalBody`."""
    request_examples = {_slug(item.summary, index): item for index, item in enumerate(request or [], 1)}
    response_examples = {
        str(status): {_slug(item.summary, index): item for index, item in enumerate(items, 1)}
        for status, items in (response or {}).items()
    }

    @dataclasses.dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            body = self.request_body
            if isinstance(body, RequestBody):
                if optional_body:
                    body.required = False
                if request_examples:
                    for media in body.content.values():
                        media.examples = dict(request_examples)
            for status, named in response_examples.items():
                answer = (self.responses or {}).get(status)
                if isinstance(answer, OpenAPIResponse) and answer.content:
                    for media in answer.content.values():
                        media.examples = dict(named)

    return Documented


def _slug(summary: str | None, index: int) -> str:
    words = "".join(c if c.isalnum() else "-" for c in (summary or "").lower()).strip("-")
    return "-".join(part for part in words.split("-") if part) or f"example-{index}"


ALWAYS = (400, 401, 429)
"""What every authenticated route can answer: a bad parameter, a bad key, the rate limit."""
BODY = (413, 415)
"""What every route that reads a JSON body can answer besides: too large, not JSON."""


def responses(
    *codes: int, public: bool = False, body: bool = False, family: str | None = None
) -> dict[int, ResponseSpec]:
    """ResponseSpecs of the error envelope for ``codes`` plus the ones every route can answer
    (``public``: no key is asked for, so no 401; ``body``: the route reads a JSON body; ``family``:
    the API document whose error shape the route answers, "002" or "004", or "shaped" for a route
    that answers 004's when asked with ``Billfold-Shape: 004``)."""
    wanted = set(codes) | ({400, 429} if public else set(ALWAYS)) | (set(BODY) if body else set())
    envelope = _ENVELOPES[family]
    return {
        code: ResponseSpec(
            data_container=envelope,
            description=_DESCRIPTIONS[code],
            generate_examples=False,
            examples=[_error_example(None if family == "shaped" else family, code)],
        )
        for code in sorted(wanted)
    }


@dataclasses.dataclass
class OptionalBody(Operation):
    """The operation of a route whose JSON body may be left out (its ``data`` has a default);
    Litestar documents every body as required. (``operation_class=OptionalBody`` on the route.)"""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


IDEMPOTENCY_KEY = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Makes the write safe to retry: a replay answers the first response "
        "(`Idempotent-Replayed: true`); the same key with another request is 409.",
    ),
]


def fix_auto_options_allow(app: Litestar) -> None:
    """``OPTIONS`` answers every method of its path in ``Allow``.

    Litestar 2.x (litestar-org/litestar#4169) builds the automatic OPTIONS handler of a path from
    the first handler registered on it; when another handler (another controller, say ``PATCH``
    next to ``GET``) joins the path, the route is rebuilt but its OPTIONS handler still lists the
    first handler's methods only. Point each automatic handler at the route it finally serves."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            fn = getattr(handler.fn, "__func__", handler.fn)
            closure = getattr(fn, "__closure__", None)
            if fn.__name__ != "options_handler" or not closure or "self" not in fn.__code__.co_freevars:
                continue
            cell = closure[fn.__code__.co_freevars.index("self")]
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents = route


Refinements = Mapping[type, Mapping[str, Mapping[str, Any]]]
"""Per request-body Struct, per field (``""``: the object itself): JSON Schema keywords to merge
into the field's schema (``None`` removes one), for rules the services enforce beyond the types —
configured bounds, a non-blank name, fields that go together."""

_SCHEMA_FIELDS = {field.metadata.get("alias", field.name): field.name for field in dataclasses.fields(Schema)}
_ONE = {"items", "not", "if", "then", "else", "contains", "propertyNames", "additionalProperties"}
_MANY = {"allOf", "anyOf", "oneOf", "prefixItems"}
_NAMED = {"properties", "patternProperties", "dependentSchemas"}

JSON_VALUE = "#JsonValue"
"""Stands for the ``JsonValue`` component in a JSON Schema handed to :func:`schema_from_json`."""


class JsonValue:
    """Any JSON value with no NUL character in any string or key (the request decoder refuses one
    anywhere in a body, 400 ``nul_character``), nested at most 32 levels: free-form fields such
    as ``metadata``. (A marker type: the component is registered under this name.)"""


def schema_from_json(raw: Mapping[str, Any], json_value: Reference | None = None) -> Schema:
    """Litestar's Schema object for a JSON Schema; ``{"$ref": JSON_VALUE}`` is ``json_value``."""
    kwargs: dict[str, Any] = {}

    def convert(item: Mapping[str, Any]) -> Schema | Reference:
        if item.get("$ref") == JSON_VALUE and json_value is not None:
            return json_value
        return schema_from_json(item, json_value)

    for key, value in raw.items():
        if key not in _SCHEMA_FIELDS:
            raise ValueError(f"no OpenAPI schema field for JSON Schema keyword {key!r}")
        if key in _ONE and isinstance(value, Mapping):
            value = convert(value)
        elif key in _MANY:
            value = [convert(item) for item in value]
        elif key in _NAMED:
            value = {name: convert(item) for name, item in value.items()}
        kwargs[_SCHEMA_FIELDS[key]] = value
    return Schema(**kwargs)


PYTHON_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""The characters of Python's ``\\s`` (and of ``str.isspace``), as the body of a character class
that means the same in ECMA-262, whose own ``\\s`` differs (no ``\\x1c``-``\\x1f`` nor ``\\x85``,
but ``\\ufeff``)."""
_UNPORTABLE = {"\\d", "\\D", "\\w", "\\W", "\\b", "\\B"}


def ecma_pattern(pattern: str) -> str:
    """A Python regular expression (as msgspec checks it) in ECMA-262, the dialect of JSON Schema:
    ``\\s`` spelled out. Escapes whose meaning differs otherwise are refused: write the class."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escape = pattern[index : index + 2]
            if escape == "\\s":
                out.append(PYTHON_SPACE if in_class else f"[{PYTHON_SPACE}]")
            elif escape == "\\S" and not in_class:
                out.append(f"[^{PYTHON_SPACE}]")
            elif escape in _UNPORTABLE or escape == "\\S":
                raise ValueError(f"pattern {pattern!r}: write {escape} as an explicit character class")
            else:
                out.append(escape)
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            index += 1
            if pattern[index : index + 1] == "^":
                out.append("^")
                index += 1
            if pattern[index : index + 1] == "]":  # ECMA-262 reads [] as an empty class
                raise ValueError(f"pattern {pattern!r}: escape a ] that opens a character class")
            continue
        if char == "]" and in_class:
            in_class = False
        out.append(char)
        index += 1
    return "".join(out)


def as_decoded(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` (msgspec's schema of a request body) as the decoder enforces it: patterns in
    ECMA-262, and free-form parts (a value of any type, the values and keys of an open mapping)
    NUL-free JSON values."""
    if set(raw) <= {"description", "default", "title", "examples"}:  # any value at all
        return {"$ref": JSON_VALUE}
    out = dict(raw)
    if isinstance(out.get("pattern"), str):
        out["pattern"] = ecma_pattern(out["pattern"])
    for key in _ONE & set(out):
        if isinstance(out[key], Mapping):
            out[key] = as_decoded(out[key])
    for key in _MANY & set(out):
        out[key] = [as_decoded(item) for item in out[key]]
    for key in _NAMED & set(out):
        out[key] = {name: as_decoded(item) for name, item in out[key].items()}
    if out.get("type") == "object" and "additionalProperties" not in out:
        out["additionalProperties"] = {"$ref": JSON_VALUE}
        names = dict(out.get("propertyNames", {}))
        names.setdefault("pattern", NO_NUL)
        out["propertyNames"] = names
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {"$ref": JSON_VALUE}
    return out


_JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": inspect.cleandoc(JsonValue.__doc__ or "").split(" (A marker", 1)[0],
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number"},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": JSON_VALUE}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": JSON_VALUE},
        },
    ],
}


def refine(schema: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with ``changes`` merged in; on an optional field, into its non-null branches."""
    if "anyOf" in schema:
        branches = [
            branch if branch.get("type") == "null" else refine(branch, changes) for branch in schema["anyOf"]
        ]
        return {**schema, "anyOf": branches}
    merged = {**schema, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def inline_refs(schema: Any, components: Mapping[str, Any]) -> Any:
    """A body's schema with the Structs it nests (msgspec's ``$ref``s) written in place: a body is
    documented whole, as the decoder checks it (a batch's events, say)."""
    if isinstance(schema, Mapping):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return inline_refs(components[ref.rsplit("/", 1)[-1]], components)
        return {key: inline_refs(value, components) for key, value in schema.items()}
    if isinstance(schema, list):
        return [inline_refs(item, components) for item in schema]
    return schema


class BodySchemaPlugin(StructSchemaPlugin):
    """Request bodies (the Structs decoded with ``forbid_unknown_fields``) as msgspec sees them.

    The decoder is msgspec's, strict: the schema msgspec derives from the same type is the one it
    enforces (every bound, pattern and length, on optional fields and list items too, and
    ``additionalProperties: false``), where Litestar's own conversion drops some (a ``ge=0`` bound,
    constraints inside a list). ``refinements`` add what the services check beyond the types.
    Responses keep Litestar's schemas."""

    def __init__(self, refinements: Refinements | None = None) -> None:
        self.refinements: Refinements = refinements or {}

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        struct = field_definition.type_
        info = msgspec.inspect.type_info(struct)
        if not (isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields):
            return super().to_openapi_schema(field_definition, schema_creator)
        (ref,), components = msgspec.json.schema_components([struct])
        raw = dict(inline_refs(components[ref["$ref"].rsplit("/", 1)[-1]], components))
        changes = self.refinements.get(struct, {})
        raw["properties"] = {
            name: refine(prop, changes[name]) if name in changes else prop
            for name, prop in raw["properties"].items()
        }
        raw = as_decoded(refine(raw, changes.get("", {})))
        built = schema_from_json(raw, self._json_value(schema_creator))
        # Fill the registered (referenced) component rather than returning a new object.
        schema = schema_creator.schema_registry.get_schema_for_field_definition(field_definition)
        for field in dataclasses.fields(Schema):
            setattr(schema, field.name, getattr(built, field.name))
        if field_definition.has_default:
            # An optional body's default (what leaving it out means), as JSON: Litestar would put
            # the Struct itself there.
            schema.default = msgspec.to_builtins(field_definition.default)
        return schema

    @staticmethod
    def _json_value(schema_creator: SchemaCreator) -> Reference:
        """A reference to the ``JsonValue`` component (registered, and filled, on first use)."""
        registry = schema_creator.schema_registry
        marker = FieldDefinition.from_annotation(JsonValue)
        if registry.get_reference_for_field_definition(marker) is None:
            schema = registry.get_schema_for_field_definition(marker)
            reference = registry.get_reference_for_field_definition(marker)
            assert reference is not None
            built = schema_from_json(_JSON_VALUE_SCHEMA, reference)
            for field in dataclasses.fields(Schema):
                setattr(schema, field.name, getattr(built, field.name))
        reference = registry.get_reference_for_field_definition(marker)
        assert reference is not None
        return reference
