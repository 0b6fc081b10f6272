"""The OpenAPI document tells the truth, and Schemathesis holds the app to it.

The document: a bearer security scheme; the Idempotency-Key header on every money write; a typed
success response on every operation (with the status it really answers); the error envelope on
every error status; request bodies closed and bounded as the decoder reads them.

Schemathesis (``-m schemathesis``): the app in process, over ASGI, with its lifespan running, with
all of Schemathesis's checks, up to 50 examples per operation (examples, coverage and fuzzing
phases) and a stateful phase: once with a tenant's key over the tenant operations, once with the
operator key over /v1/admin. 0 server errors and 0 responses that do not match the document. The
requests the app received are counted and printed.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NotSet
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation

# Imported here, at a shallow stack: CPython 3.11.7 fails compiling (pytest rewriting) these modules
# when Schemathesis first imports them deep inside Hypothesis's stack ("AST constructor recursion
# depth mismatch").
from schemathesis.specs.openapi import object_authorization  # noqa: F401
from schemathesis.wfc import escalation  # noqa: F401

from alerts_support import migrate_alerts
from billfold.api.app import Billfold, create_app
from conftest import ADMIN


def _describe_lambdas_despite_cpython_106905() -> None:
    """Hypothesis describes the lambdas of Schemathesis's strategies with ``ast.parse``; on CPython
    3.11 that parse, deep in the stack, now and then raises ``SystemError: AST constructor recursion
    depth mismatch`` (python/cpython#106905), which fails a generation that
    has nothing wrong. A description is only text for reports: without one the lambda is unnamed."""
    from hypothesis.internal import lambda_sources

    describe = lambda_sources._lambda_description

    def described(f: Any, *args: Any, **kwargs: Any) -> str:
        try:
            return describe(f, *args, **kwargs)
        except SystemError:
            return "lambda: <unknown>"

    lambda_sources._lambda_description = described


_describe_lambdas_despite_cpython_106905()

QUIET = ("httpx", "billfold.api")
"""Loggers that write a line per request (httpx) or per 4xx (billfold.api) at INFO: thousands."""

OPERATOR_PATHS = "^/v1/admin"
NOT_OPERATOR_PATHS = "^(?!/v1/admin)"
"""exclude(), not include(OPERATOR_PATHS): with an `operations` section in the config,
schemathesis 4.32's include() keeps every operation."""

MONEY_WRITES = {
    ("post", "/v1/billing/charges"),
    ("post", "/v1/billing/holds"),
    ("post", "/v1/billing/holds/{hold_id}/capture"),
    ("post", "/v1/billing/holds/{hold_id}/release"),
    ("post", "/v1/billing/top-up"),
    ("post", "/v1/billing/topup"),
    ("post", "/v1/orgs/{org_id}/billing/top-up"),
    ("post", "/v1/admin/organizations/{org_id}/adjustments"),
    ("post", "/v1/admin/organizations/{org_id}/refunds"),
}


# -- the document ---------------------------------------------------------------------------------


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield method, path, operation


def test_bearer_security_scheme(document):
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearer": []}]
    # the public routes say so
    assert document["paths"]["/health"]["get"]["security"] == [{}]
    assert document["paths"]["/v1/stripe/webhook"]["post"]["security"] == [{}]


def test_every_money_write_takes_an_idempotency_key(document):
    found = {(method, path) for method, path, _ in operations(document)}
    assert found >= MONEY_WRITES, MONEY_WRITES - found
    for method, path in MONEY_WRITES:
        parameters = document["paths"][path][method].get("parameters", [])
        (key,) = [p for p in parameters if p["name"] == "Idempotency-Key"]
        assert key["in"] == "header"
        assert key["required"] is False
        assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255), key


REPLAYED_WITH_200 = {("post", "/v1/usage")}
"""Operations whose repeat (the same event_id) answers 200 beside the first answer's 201."""
PDF_DOWNLOADS = {
    ("get", "/v1/billing/invoices/{invoice_id}/pdf"),
    ("get", "/v1/billing/invoices/{invoice_id}/pdf/signed"),
}
"""Operations whose success is a PDF document, not JSON."""


def test_every_success_response_is_typed(document):
    for method, path, operation in operations(document):
        successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        expected = {"200", "201"} if (method, path) in REPLAYED_WITH_200 else None
        if expected:
            assert set(successes) == expected, (method, path, successes)
        else:
            assert len(successes) == 1, (method, path, successes)
        for code, response in successes.items():
            if (method, path) in PDF_DOWNLOADS:
                assert set(response["content"]) == {"application/pdf"}, (method, path, code)
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema != {"type": "string"}, (method, path, code)
            # oneOf: an answer that may be null (document 002's requires-action), or the usage
            # routes' two shapes (Billfold's, and document 004's with `Billfold-Shape: 004`)
            for branch in schema.get("oneOf", [schema]):
                assert branch == {"type": "null"} or "$ref" in branch or branch.get("type") == "array", (
                    method,
                    path,
                    code,
                    schema,
                )
            assert schema.get("oneOf", [None])[0] != {"type": "null"}, (method, path, code)


def test_capture_and_release_answer_200_and_creations_201(document):
    paths = document["paths"]
    for path in ("/v1/billing/holds/{hold_id}/capture", "/v1/billing/holds/{hold_id}/release"):
        assert set(paths[path]["post"]["responses"]) & {"200", "201"} == {"200"}, path
    for path in ("/v1/billing/charges", "/v1/billing/holds", "/v1/admin/organizations"):
        assert set(paths[path]["post"]["responses"]) & {"200", "201"} == {"201"}, path


def test_every_error_response_is_the_envelope(document):
    for method, path, operation in operations(document):
        tags = " ".join(operation.get("tags", []))
        family = "Error002" if "(002)" in tags else "Error004" if "(004)" in tags else "ErrorEnvelope"
        envelope: dict[str, Any] = {"$ref": f"#/components/schemas/{family}"}
        if any(p["name"] == "Billfold-Shape" for p in operation.get("parameters", [])):
            # the usage routes: Billfold's envelope, or 004's when the request asks for its shapes
            envelope = {"oneOf": [envelope, {"$ref": "#/components/schemas/Error004"}]}
        errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
        if operation.get("parameters") or "requestBody" in operation:
            assert "400" in errors, (method, path)
        secured = operation.get("security") != [{}]
        assert ("401" in errors) is secured, (method, path)
        if "{" in path:
            assert "404" in errors, (method, path)
        if "requestBody" in operation:
            assert {"413", "415"} <= set(errors), (method, path)
        for code, response in errors.items():
            assert response["content"]["application/json"]["schema"] == envelope, (method, path, code)


def test_request_bodies_are_closed_and_bounded(document):
    schemas = document["components"]["schemas"]
    bodies = set()
    for _, _, operation in operations(document):
        if "requestBody" in operation:
            body = operation["requestBody"]
            schema = body["content"]["application/json"]["schema"]
            if "oneOf" in schema:  # an optional body: null, or left out
                assert body["required"] is False
                schema, null = schema["oneOf"]
                assert null == {"type": "null"}
            bodies.add(schema["$ref"].rsplit("/", 1)[-1])
    assert {"ChargeIn", "HoldIn", "TopUpIn", "AdjustmentIn", "OrganizationCreate"} <= bodies
    for name in bodies:
        assert schemas[name]["additionalProperties"] is False, name
    charge = schemas["ChargeIn"]["properties"]
    assert charge["amount_cents"]["minimum"] == 1
    assert charge["amount_cents"]["maximum"] == 2**53 - 1
    assert charge["description"]["maxLength"] == 500
    # bounds on optional fields and in lists (Litestar's own conversion loses these)
    assert charge["call_id"]["anyOf"][0]["minimum"] == 0
    # document 002's amounts: whole cents in decimillicents, within the top-up bounds
    top_up_002 = schemas["HostedTopUpRequest"]["properties"]["amountDecimillicents"]
    assert top_up_002["multipleOf"] == 100_000
    assert top_up_002["minimum"] == 500 * 100_000
    # what the services check beyond the types: configured bounds, non-zero, non-blank
    assert schemas["TopUpIn"]["properties"]["amount_cents"]["minimum"] == 500
    assert schemas["AdjustmentIn"]["properties"]["amount_cents"]["not"] == {"const": 0}
    assert schemas["HoldIn"]["properties"]["expires_in_seconds"]["anyOf"][0]["maximum"] == 604800
    # free-form metadata: JSON without NUL characters
    assert charge["metadata"]["additionalProperties"] == {"$ref": "#/components/schemas/JsonValue"}


async def test_options_lists_every_method_of_the_path(client, tenant):
    """Litestar 2.x's automatic OPTIONS listed only the first handler's methods of a shared path."""
    for path, methods, headers in (
        ("/v1/admin/clock", {"GET", "POST"}, ADMIN),
        ("/v1/billing/payment-methods", {"GET", "POST"}, tenant.headers),
        ("/v1/billing", {"GET", "PATCH"}, tenant.headers),
        ("/v1/billing/auto-reload", {"GET", "PUT"}, tenant.headers),
    ):
        response = await client.options(path, headers=headers)
        assert response.status_code == 204
        assert {m.strip() for m in response.headers["allow"].split(",")} == {*methods, "OPTIONS"}, path


async def test_405_names_the_allowed_methods(client, tenant):
    response = await client.delete("/v1/billing/payment-methods", headers=tenant.headers)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}


# -- Schemathesis -----------------------------------------------------------------------------------


class CountingApp:
    """The app, counting the HTTP requests it receives (those of Schemathesis's checks included)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # the lifespan
            await self.app(scope, receive, send)
            return
        self.requests[scope["method"]] += 1

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.statuses[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


ANSWERS = ["2xx", "401", "402", "403", "404", "409", "422", "429"]
"""What a request the document calls valid may be answered: success, or a refusal that depends on
state (a revoked key, the balance, another organization, a missing resource, a conflict, a
missing payment method, the rate limit) — never 400."""

CONFIG: dict[str, Any] = {
    "checks": {"positive_data_acceptance": {"expected-statuses": ANSWERS}},
    "operations": [
        {
            # 400 on a valid-looking request, from state the document cannot know: an unsigned
            # webhook (the signature is the provider's), a payment method the provider does not
            # have, a currency other than the organization's, a capture above the hold, and
            # document 002's merged settings (a stored threshold of 0, or no payment method on file:
            # its product answers BadRequest where the others answer 422); a settle above the
            # reserved quantity; report windows (end before start, longer than the limit, a
            # category that is not a channel of billing.yaml); a usage event's `occurred_at`,
            # whose `format: date-time` Schemathesis's coverage phase fills with any string.
            "include-operation-id": [
                "StripeWebhook",
                "WebhooksStripe",
                "AddPaymentMethod",
                "SetDefaultPaymentMethod",
                "TopUpMajorUnits",
                "CaptureHold",
                "UpdateOrganizationBilling",
                "SettleUsage",
                "ReportUsage",
                "ReportUsageBatch",
                "GetOrganizationUsage",
                "GetDetailedUsage",
                # the alerts plugin: low_balance_threshold or thresholds, one of them (400 for
                # both or neither), low_balance_threshold with at most the currency's decimals
                "PutBalanceAlerts",
                # an amount in major units whose minor units exceed the largest amount
                "PutAutoReload",
                # the tiers plugin: a channel that has no ladder in billing.yaml, a step the
                # channel's ladder does not have, a pin's `until` in the past
                "GetTier",
                "AdminPinTier",
                "AdminUnpinTier",
            ],
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ANSWERS, "400"]}},
        }
    ],
}


def integers_as_integers(value: Any) -> Any:
    """JSON Schema calls 2.0 an integer; the API reads integers as JSON integers only (an amount of
    money sent as 2.0 is refused, 400): send whole numbers without the decimal point."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integers_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integers_as_integers(item) for item in value]
    return value


def prepare(case: Any) -> None:
    """The two rules the document can state only in words (see the descriptions), and a case
    Schemathesis marks invalid for its body after leaving an optional body out (valid: restored
    to an invalid body)."""
    case.body = integers_as_integers(case.body)
    mode = case.meta.generation.mode if case.meta else GenerationMode.POSITIVE
    query = case.query
    if mode == GenerationMode.POSITIVE and query and query.get("offset") is not None and query.get("cursor"):
        del query["offset"]  # "use either offset or cursor, not both" (400)
    body = case.meta.components.get(ParameterLocation.BODY) if case.meta else None
    if body is not None and body.mode == GenerationMode.NEGATIVE and isinstance(case.body, NotSet):
        case.body = []  # schemathesis 4.32 dropped it: a false failure like schemathesis#4332


def load(app: CountingApp, headers: dict[str, str], parameters: dict[str, Any]) -> Any:
    schema = schemathesis.openapi.from_asgi(
        "/schema/openapi.json", app, config=SchemathesisConfig.from_dict(CONFIG)
    )
    # The key is fixed (generation never drops or mangles it as if it were a parameter), and sent
    # with each call too: Schemathesis then knows it is the caller's own credential.
    schema.config.update(headers=headers, parameters=parameters)
    return schema


class Tenant:
    """An organization with money and a saved card, made through the API, and its key."""

    def __init__(self, operator: Any) -> None:
        created = (
            operator["/v1/admin/organizations"]["POST"]
            .Case(body={"name": "Schemathesis", "currency": "usd"})
            .call(headers=ADMIN)
        )
        assert created.status_code == 201, created.text
        body = created.json()
        self.org_id: str = body["id"]
        self.headers = {"Authorization": f"Bearer {body['api_key']}"}
        funded = (
            operator["/v1/admin/organizations/{org_id}/adjustments"]["POST"]
            .Case(path_parameters={"org_id": self.org_id}, body={"amount_cents": 10**9, "description": "st"})
            .call(headers=ADMIN)
        )
        assert funded.status_code == 201, funded.text
        card = (
            operator["/v1/billing/default-payment-method"]["POST"]
            .Case(body={"payment_method_id": "pm_card_visa"})
            .call(headers=self.headers)
        )
        assert card.status_code == 200, card.text


class Api:
    """The app over ASGI (its lifespan run by Schemathesis), a tenant, and the document as
    Schemathesis reads it with the operator key and with the tenant's."""

    def __init__(self, state: Billfold) -> None:
        self.run: tuple[str, int] | None = None
        """What ran (which key, how many operations), for the report."""
        self.app = CountingApp(create_app(state))
        self.operator = load(self.app, ADMIN, {})
        self.first = Tenant(self.operator)
        self.tenant_headers = self.first.headers
        # the organization in the path is the tenant's own (another one is 403 before anything)
        self.tenant = load(
            self.app,
            self.tenant_headers,
            {"org_id": self.first.org_id, "organization_id": self.first.org_id},
        )

    def report(self) -> str:
        assert self.run is not None
        run, operations = self.run
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.app.statuses.items()))
        total = sum(self.app.requests.values())
        # not vacuous: every operation was called, many times
        assert total >= 10 * operations, (run, total, operations)
        return f"schemathesis {run}: {total} requests over {operations} operations ({statuses})"


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis.pytest.from_fixture reads and renames `item._nodeid`, which pytest 9.2 no
    # longer has (schemathesis 4.32): give it one.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


PLUGINS: dict[str, Any] = {"plugins": {"alerts": {"enabled": True}}}
"""First-party plugins that are off by default, switched on so that their routes are in the document."""


@pytest.fixture
def config_overrides(database_url: str) -> dict[str, Any]:
    migrate_alerts(database_url)  # its own branch: the shared fixtures migrate the core's
    return PLUGINS


@pytest.fixture
def api(
    make_state: Callable[..., Billfold], config_overrides: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> Iterator[Api]:
    levels = {name: logging.getLogger(name).level for name in QUIET}
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        api = Api(make_state(config_overrides))
        yield api
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    if api.run is not None:
        report = api.report()
        with capsys.disabled():
            print(f"\n{report}")


@pytest.fixture
def tenant_schema(api: Api) -> Any:
    api.run = (
        "with a tenant key",
        len(list(api.tenant.exclude(path_regex=OPERATOR_PATHS).get_all_operations())),
    )
    return api.tenant


@pytest.fixture
def operator_schema(api: Api) -> Any:
    operations = api.operator.exclude(path_regex=NOT_OPERATOR_PATHS).get_all_operations()
    api.run = ("with the operator key", len(list(operations)))
    return api.operator


RANDOM = os.environ.get("BILLFOLD_SCHEMATHESIS_RANDOM") == "1"
"""Unset: the same examples every run (CI). 1: other examples each run, to explore (pytest's
``--hypothesis-seed=N`` replays one)."""
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=not RANDOM,
)

tenant_api = schemathesis.pytest.from_fixture("tenant_schema").exclude(path_regex=OPERATOR_PATHS)
operator_api = schemathesis.pytest.from_fixture("operator_schema").exclude(path_regex=NOT_OPERATOR_PATHS)


@pytest.mark.schemathesis
@tenant_api.parametrize()
@SETTINGS
def test_tenant_operations(case: Any, api: Api) -> None:
    prepare(case)
    case.call_and_validate(headers=api.tenant_headers)


@pytest.mark.schemathesis
@operator_api.parametrize()
@SETTINGS
def test_operator_operations(case: Any, api: Api) -> None:
    prepare(case)
    case.call_and_validate(headers=ADMIN)


STATEFUL = settings(
    max_examples=50,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=not RANDOM,
)


def run_workflows(
    schema: Any, headers: dict[str, str], fresh_tenant: Callable[[], Tenant] | None = None
) -> None:
    """Schemathesis's stateful phase: sequences of calls that feed one response into the next
    request (a hold made, then captured; an organization created, then adjusted).

    With ``fresh_tenant``, each sequence starts with an organization of its own: a sequence then
    meets the same state whenever Hypothesis replays it (a key used before, a balance spent by
    another sequence would answer otherwise, and Hypothesis would call the test flaky)."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.tenant = fresh_tenant() if fresh_tenant else None
            self.headers = self.tenant.headers if self.tenant else headers

        def before_call(self, case: Any) -> None:
            prepare(case)
            if self.tenant is not None:
                for name in ("org_id", "organization_id"):
                    if case.path_parameters and name in case.path_parameters:
                        case.path_parameters[name] = self.tenant.org_id

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": self.headers}

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            try:
                case.validate_response(
                    response,
                    additional_checks=additional_checks,
                    headers=self.headers,
                    transport_kwargs=kwargs or None,
                    recorder=self.recorder,
                )
            except FailureGroup as exc:  # a BaseException
                # A replay of a failing sequence may meet another state and pass (Hypothesis then
                # reports the test flaky): say what failed the first time.
                print(f"stateful step failed: {case.method} {case.formatted_path}\n{exc}", file=sys.stderr)
                raise

    Workflow.run(settings=STATEFUL)


@pytest.mark.schemathesis
def test_tenant_workflows(api: Api) -> None:
    api.run = (
        "workflows with a tenant key",
        len(list(api.tenant.exclude(path_regex=OPERATOR_PATHS).get_all_operations())),
    )
    run_workflows(
        api.tenant.exclude(path_regex=OPERATOR_PATHS),
        api.tenant_headers,
        fresh_tenant=lambda: Tenant(api.operator),
    )


@pytest.mark.schemathesis
def test_operator_workflows(api: Api) -> None:
    operator = api.operator.exclude(path_regex=NOT_OPERATOR_PATHS)
    api.run = ("workflows with the operator key", len(list(operator.get_all_operations())))
    run_workflows(operator, ADMIN)
