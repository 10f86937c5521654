"""Every emulator response, errors and webhooks included, validates against Plaid's OpenAPI
spec (`shared/plaid-openapi/2020-09-14.yml`)."""

import http.server
import json
import os
import threading
import time
import urllib.request

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from conftest import CLIENT_ID, ROOT, SECRET

SPEC_PATH = os.environ.get("PLAID_OPENAPI") or os.path.join(os.path.dirname(ROOT), "shared", "plaid-openapi", "2020-09-14.yml")
URI = "urn:plaid-openapi"


@pytest.fixture(scope="session")
def spec():
    with open(SPEC_PATH) as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="session")
def registry(spec):
    return Registry().with_resource(URI, Resource.from_contents(spec, default_specification=DRAFT4))


def validate(registry, schema_name, instance):
    validator = OAS30Validator({"$ref": f"{URI}#/components/schemas/{schema_name}"}, registry=registry)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{schema_name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def response_schema(spec, path):
    ref = spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


def call(url, path, body, headers=None):
    data = json.dumps(body).encode()
    h = {"Content-Type": "application/json", "PLAID-CLIENT-ID": CLIENT_ID, "PLAID-SECRET": SECRET}
    h.update(headers or {})
    req = urllib.request.Request(url + path, data=data, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Checker:
    """Calls the emulator and validates every answer; remembers what it checked."""

    def __init__(self, url, spec, registry):
        self.url, self.spec, self.registry = url, spec, registry
        self.ok, self.errors = set(), set()

    def ok_call(self, path, body):
        status, out = call(self.url, path, body)
        assert status == 200, (path, out)
        assert out["request_id"]
        validate(self.registry, response_schema(self.spec, path), out)
        self.ok.add(path)
        return out

    def error_call(self, path, body, code, status):
        got, out = call(self.url, path, body)
        assert (got, out.get("error_code")) == (status, code), (path, got, out)
        for key in ("error_type", "error_code", "error_message", "display_message", "request_id"):
            assert key in out, (path, key)
        validate(self.registry, "PlaidError", out)
        self.errors.add(code)
        return out


class Hooks(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hook_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()


WEBHOOK_SCHEMAS = {
    ("TRANSACTIONS", "INITIAL_UPDATE"): "InitialUpdateWebhook",
    ("TRANSACTIONS", "HISTORICAL_UPDATE"): "HistoricalUpdateWebhook",
    ("TRANSACTIONS", "DEFAULT_UPDATE"): "DefaultUpdateWebhook",
    ("TRANSACTIONS", "TRANSACTIONS_REMOVED"): "TransactionsRemovedWebhook",
    ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"): "SyncUpdatesAvailableWebhook",
    ("TRANSACTIONS", "RECURRING_TRANSACTIONS_UPDATE"): "RecurringTransactionsUpdateWebhook",
    ("ITEM", "ERROR"): "ItemErrorWebhook",
    ("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED"): "WebhookUpdateAcknowledgedWebhook",
    ("ITEM", "NEW_ACCOUNTS_AVAILABLE"): "NewAccountsAvailableWebhook",
    ("ITEM", "PENDING_EXPIRATION"): "PendingExpirationWebhook",
    ("ITEM", "USER_PERMISSION_REVOKED"): "UserPermissionRevokedWebhook",
    ("ITEM", "LOGIN_REPAIRED"): "ItemLoginRepairedWebhook",
    ("ITEM", "PENDING_DISCONNECT"): "PendingDisconnectWebhook",
    ("ITEM", "USER_ACCOUNT_REVOKED"): "UserAccountRevokedWebhook",
    ("AUTH", "AUTH_DATA_UPDATE"): "AuthDefaultUpdateWebhook",
    ("ASSETS", "PRODUCT_READY"): "AssetsProductReadyWebhook",
    ("ASSETS", "ERROR"): "AssetsErrorWebhook",
}


def test_every_response_and_error_matches_the_openapi_spec(emulator_url, spec, registry, hook_url):
    c = Checker(emulator_url, spec, registry)
    lt = c.ok_call("/link/token/create", {
        "client_name": "bankgraph", "language": "en", "country_codes": ["US"],
        "user": {"client_user_id": "user-1"}, "products": ["transactions"], "webhook": hook_url,
        "redirect_uri": "https://app.example.com/oauth",
    })
    c.ok_call("/link/token/get", {"link_token": lt["link_token"]})
    pt = c.ok_call("/sandbox/public_token/create", {
        "institution_id": "ins_109508", "initial_products": ["transactions", "auth", "identity", "assets"],
        "options": {"webhook": hook_url},
    })
    ex = c.ok_call("/item/public_token/exchange", {"public_token": pt["public_token"]})
    token = {"access_token": ex["access_token"]}
    c.ok_call("/item/get", token)
    accounts = c.ok_call("/accounts/get", token)["accounts"]
    c.ok_call("/accounts/balance/get", {**token, "options": {"account_ids": [accounts[0]["account_id"]]}})
    c.ok_call("/auth/get", token)
    c.ok_call("/identity/get", token)
    page = c.ok_call("/transactions/sync", {**token, "count": 500})
    while page["has_more"]:
        page = c.ok_call("/transactions/sync", {**token, "cursor": page["next_cursor"], "count": 500})
    c.ok_call("/transactions/refresh", token)
    page = c.ok_call("/transactions/sync", {**token, "cursor": page["next_cursor"]})
    assert page["added"] and page["removed"] is not None
    c.ok_call("/transactions/get", {**token, "start_date": "2000-01-01", "end_date": "2100-01-01", "options": {"count": 50}})
    c.ok_call("/institutions/get_by_id", {"institution_id": "ins_109508", "country_codes": ["US"]})
    c.ok_call("/item/webhook/update", {**token, "webhook": hook_url + "/new"})
    for code in ["DEFAULT_UPDATE", "SYNC_UPDATES_AVAILABLE", "RECURRING_TRANSACTIONS_UPDATE",
                 "NEW_ACCOUNTS_AVAILABLE", "AUTH_DATA_UPDATE", "PRODUCT_READY", "ERROR"]:
        c.ok_call("/sandbox/item/fire_webhook", {**token, "webhook_code": code})
    for wtype, code in [("ITEM", "PENDING_EXPIRATION"), ("ITEM", "PENDING_DISCONNECT"), ("ITEM", "USER_ACCOUNT_REVOKED"),
                        ("ITEM", "LOGIN_REPAIRED")]:
        req = urllib.request.Request(f"{emulator_url}/emulator/items/{ex['item_id']}/webhook",
                                     data=json.dumps({"webhook_type": wtype, "webhook_code": code,
                                                      "account_id": accounts[0]["account_id"]}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req).read()
    c.ok_call("/sandbox/item/reset_login", token)

    # Errors, each with Plaid's shape, code and status.
    c.error_call("/accounts/get", token, "ITEM_LOGIN_REQUIRED", 400)
    c.error_call("/item/public_token/exchange", {"public_token": pt["public_token"]}, "INVALID_PUBLIC_TOKEN", 400)
    c.error_call("/accounts/get", {"access_token": "access-sandbox-00000000-0000-0000-0000-000000000000"}, "INVALID_ACCESS_TOKEN", 400)
    c.error_call("/institutions/get_by_id", {"institution_id": "ins_nope", "country_codes": ["US"]}, "INVALID_INSTITUTION", 400)
    c.error_call("/link/token/create", {"client_name": "x", "language": "en", "country_codes": ["US"],
                                        "user": {"client_user_id": "u"}, "products": ["balance"]}, "INVALID_PRODUCT", 400)
    c.error_call("/sandbox/public_token/create", {"institution_id": "ins_109508"}, "MISSING_FIELDS", 400)
    c.error_call("/transactions/sync", {**token, "count": 501}, "INVALID_FIELD", 400)
    c.error_call("/nope", {}, "NOT_FOUND", 400)
    c.error_call("/webhook_verification_key/get", {"key_id": "no-such-kid"}, "INVALID_WEBHOOK_VERIFICATION_KEY_ID", 400)
    c.error_call("/sandbox/public_token/create", {"institution_id": "ins_109508", "initial_products": ["transactions"],
                                                  "options": {"override_password": "error_ITEM_LOCKED"}}, "ITEM_LOCKED", 400)
    for fault, code, status in [({"kind": "http_error", "status": 500}, "INTERNAL_SERVER_ERROR", 500),
                                ({"kind": "rate_limit"}, "ITEM_GET_LIMIT", 429)]:
        req = urllib.request.Request(emulator_url + "/emulator/faults",
                                     data=json.dumps({"endpoint": "/item/get", "times": 1, **fault}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req).read()
        c.error_call("/item/get", token, code, status)
    c.ok_call("/item/remove", token)
    c.error_call("/item/get", token, "ITEM_NOT_FOUND", 400)

    # Every webhook that arrived: its schema, Plaid's 2-space indent, and a key we can fetch.
    deadline = time.time() + 10
    while time.time() < deadline and len({json.loads(b)["webhook_code"] for _, b in Hooks.received}) < 15:
        time.sleep(0.1)
    kids = set()
    seen = set()
    for headers, body in Hooks.received:
        payload = json.loads(body)
        key = (payload["webhook_type"], payload["webhook_code"])
        assert key in WEBHOOK_SCHEMAS, key
        validate(registry, WEBHOOK_SCHEMAS[key], payload)
        assert body.startswith(b'{\n  "'), "bodies are indented with two spaces"
        header = json.loads(_b64(headers["plaid-verification"].split(".")[0]))
        kids.add(header["kid"])
        seen.add(key)
    for kid in kids:
        c.ok_call("/webhook_verification_key/get", {"key_id": kid})
    assert len(seen) >= 15, seen

    served = {p for p in spec["paths"]} & c.ok
    assert len(served) == 18, sorted(c.ok)


def _b64(s):
    import base64
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
