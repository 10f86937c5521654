"""Plaid's official Python SDK, configured with `host=` the emulator, runs the quickstart flow
unchanged: public token -> exchange -> accounts -> balance -> transactions sync to the end ->
item get -> item remove."""

from decimal import Decimal

import plaid
import pytest
from plaid.api import plaid_api
from plaid.model.accounts_balance_get_request import AccountsBalanceGetRequest
from plaid.model.accounts_get_request import AccountsGetRequest
from plaid.model.country_code import CountryCode
from plaid.model.item_get_request import ItemGetRequest
from plaid.model.item_public_token_exchange_request import ItemPublicTokenExchangeRequest
from plaid.model.item_remove_request import ItemRemoveRequest
from plaid.model.link_token_create_request import LinkTokenCreateRequest
from plaid.model.link_token_create_request_user import LinkTokenCreateRequestUser
from plaid.model.products import Products
from plaid.model.sandbox_public_token_create_request import SandboxPublicTokenCreateRequest
from plaid.model.transactions_sync_request import TransactionsSyncRequest

from conftest import CLIENT_ID, SECRET


def client(url, secret=SECRET):
    configuration = plaid.Configuration(host=url, api_key={"clientId": CLIENT_ID, "secret": secret})
    return plaid_api.PlaidApi(plaid.ApiClient(configuration))


def test_the_quickstart_flow_runs_unchanged(emulator_url):
    api = client(emulator_url)

    link = api.link_token_create(LinkTokenCreateRequest(
        products=[Products("auth"), Products("transactions")],
        client_name="Plaid Quickstart",
        country_codes=[CountryCode("US")],
        language="en",
        user=LinkTokenCreateRequestUser(client_user_id="user-123"),
    ))
    assert link["link_token"].startswith("link-sandbox-")

    public = api.sandbox_public_token_create(SandboxPublicTokenCreateRequest(
        institution_id="ins_109508", initial_products=[Products("transactions")]))
    assert public["public_token"].startswith("public-sandbox-")

    exchange = api.item_public_token_exchange(ItemPublicTokenExchangeRequest(public_token=public["public_token"]))
    access_token = exchange["access_token"]
    assert access_token.startswith("access-sandbox-")
    assert len(exchange["item_id"]) == 37

    accounts = api.accounts_get(AccountsGetRequest(access_token=access_token))["accounts"]
    names = [a["name"] for a in accounts]
    assert "Plaid Checking" in names and "Plaid Credit Card" in names

    balances = api.accounts_balance_get(AccountsBalanceGetRequest(access_token=access_token))["accounts"]
    checking = next(a for a in balances if a["subtype"].value == "checking")
    assert Decimal(str(checking["balances"]["available"])) == Decimal("100")

    cursor, added, has_more, pages = "", [], True, 0
    while has_more:
        response = api.transactions_sync(TransactionsSyncRequest(access_token=access_token, cursor=cursor, count=500))
        added.extend(response["added"])
        has_more = response["has_more"]
        cursor = response["next_cursor"]
        pages += 1
    assert len(added) == 1200 and pages == 3
    assert len({t["transaction_id"] for t in added}) == 1200

    item = api.item_get(ItemGetRequest(access_token=access_token))["item"]
    assert item["item_id"] == exchange["item_id"]
    assert item["institution_id"] == "ins_109508"

    api.item_remove(ItemRemoveRequest(access_token=access_token))
    with pytest.raises(plaid.ApiException) as gone:
        api.item_get(ItemGetRequest(access_token=access_token))
    assert gone.value.status == 400
    assert '"ITEM_NOT_FOUND"' in gone.value.body


def test_wrong_credentials_are_refused_as_plaid_does(emulator_url):
    api = client(emulator_url, secret="not-the-secret")
    with pytest.raises(plaid.ApiException) as refused:
        api.sandbox_public_token_create(SandboxPublicTokenCreateRequest(
            institution_id="ins_109508", initial_products=[Products("transactions")]))
    assert refused.value.status == 400
    assert '"INVALID_API_KEYS"' in refused.value.body
