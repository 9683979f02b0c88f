"""Xero's own SDK (xero-python) against `rollcall sandbox xero` (demo seed).

What a real Xero integration does: consent by authorization code, single-use refresh tokens,
the tenant from /connections, contacts created in bulk and paged through with Xero's
`pagination` metadata, `where`/`IDs` filters, an invoice with exact amounts read back,
an idempotent retry, If-Modified-Since change tracking, and Xero's error shapes.
"""
import datetime
from decimal import Decimal

import requests
from requests_oauthlib import OAuth2Session
from xero_python.accounting import AccountingApi
from xero_python.accounting.models import (Contact, Contacts, Invoice, Invoices, LineAmountTypes,
                                           LineItem)
from xero_python.api_client import ApiClient, Configuration
from xero_python.api_client.oauth2 import OAuth2Token, TokenApi
from xero_python.exceptions import AccountingBadRequestException, NotFoundException
from xero_python.identity import IdentityApi

from common import REDIRECT, Suite, base_url, consent, money, same

CLIENT_ID = "demo-xero-client"
CLIENT_SECRET = "demo-xero-secret"
SCOPES = ["offline_access", "accounting.transactions", "accounting.contacts"]

url = base_url()
suite = Suite("xero")
token_url = f"{url}/connect/token"
TokenApi.refresh_token_url = token_url
TokenApi.client_credentials_token_url = token_url
TokenApi.revoke_token_url = f"{url}/connect/revocation"

stored = {}

with suite.step("authorization code grant"):
    oauth = OAuth2Session(CLIENT_ID, redirect_uri=REDIRECT, scope=SCOPES)
    authorize, state = oauth.authorization_url(f"{url}/identity/connect/authorize")
    location, query = consent(authorize)
    same(query.get("state"), state, "state echoed")
    token = oauth.fetch_token(token_url, authorization_response=location, client_secret=CLIENT_SECRET)
    same(sorted(k for k in token if k != "expires_at"),
         ["access_token", "expires_in", "refresh_token", "scope", "token_type"], "token keys")
    stored.update(token)

config = Configuration(oauth2_token=OAuth2Token(client_id=CLIENT_ID, client_secret=CLIENT_SECRET))
api_client = ApiClient(config, oauth2_token_saver=stored.update, oauth2_token_getter=lambda: stored)
accounting = AccountingApi(api_client, base_url=f"{url}/api.xro/2.0")
identity = IdentityApi(api_client, base_url=url)
tenant = None

with suite.step("connections name the tenant"):
    connections = identity.get_connections()
    same(len(connections), 1, "connections")
    tenant = str(connections[0].tenant_id)
    same(connections[0].tenant_type, "ORGANISATION", "tenant type")

with suite.step("refresh rotates the refresh token; the spent one is refused"):
    spent = stored["refresh_token"]
    api_client.refresh_oauth2_token()
    assert stored["refresh_token"] != spent, "refresh returned the same refresh token"
    answer = requests.post(token_url, data={"grant_type": "refresh_token", "refresh_token": spent},
                           auth=(CLIENT_ID, CLIENT_SECRET), timeout=10)
    same(answer.status_code, 400, "spent refresh token status")
    same(answer.json().get("error"), "invalid_grant", "spent refresh token error")

with suite.step("client credentials grant"):
    issued = TokenApi(api_client, CLIENT_ID, CLIENT_SECRET).get_client_credentials_token(False)
    assert issued.get("access_token"), issued
    same("refresh_token" in issued, False, "client credentials give no refresh token")

started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(seconds=1)
created = []
with suite.step("create contacts in bulk, read one back"):
    batch = Contacts(contacts=[Contact(name=f"Conformance {n:03}", email_address=f"c{n}@conformance.test")
                               for n in range(7)])
    created = accounting.create_contacts(tenant, batch, summarize_errors=False).contacts
    same(len(created), 7, "created")
    one = accounting.get_contact(tenant, created[3].contact_id).contacts[0]
    same(one.name, "Conformance 003", "name read back")
    same(one.email_address, "c3@conformance.test", "email read back")
    assert one.updated_date_utc is not None, "UpdatedDateUTC parsed"

with suite.step("pages follow Xero's pagination metadata"):
    first = accounting.get_contacts(tenant, page=1, page_size=3)
    assert first.pagination is not None, "no pagination in the answer"
    total = first.pagination.item_count
    same(first.pagination.page, 1, "page")
    same(first.pagination.page_size, 3, "pageSize")
    same(first.pagination.page_count, -(-total // 3), "pageCount")
    seen = [c.contact_id for c in first.contacts]
    for page in range(2, first.pagination.page_count + 1):
        seen += [c.contact_id for c in accounting.get_contacts(tenant, page=page, page_size=3).contacts]
    same(len(seen), total, "contacts over all pages")
    same(len(set(seen)), total, "distinct contacts over all pages")

with suite.step("where and IDs filters"):
    found = accounting.get_contacts(tenant, where='Name=="Conformance 005"').contacts
    same([c.name for c in found], ["Conformance 005"], "where Name==")
    found = accounting.get_contacts(tenant, where='Name.StartsWith("Conformance 00")', order="Name DESC").contacts
    same([c.name for c in found][:2], ["Conformance 006", "Conformance 005"], "StartsWith, ordered")
    found = accounting.get_contacts(tenant, i_ds=[created[0].contact_id, created[1].contact_id]).contacts
    same(sorted(c.name for c in found), ["Conformance 000", "Conformance 001"], "IDs")

with suite.step("quotes and bidi text in a where filter; a bad If-Modified-Since is refused"):
    odd = accounting.create_contacts(tenant, Contacts(contacts=[Contact(name='Acme "Q" \u202eLtd')])).contacts[0]
    found = accounting.get_contacts(tenant, where='Name=="Acme \\"Q\\" \u202eLtd"').contacts
    same([c.contact_id for c in found], [odd.contact_id], "found by its odd name")
    answer = requests.get(f"{url}/api.xro/2.0/Contacts", timeout=10, headers={
        "Authorization": f"Bearer {stored['access_token']}", "xero-tenant-id": tenant,
        "If-Modified-Since": "last tuesday", "Accept": "application/json"})
    same(answer.status_code, 400, "a bad If-Modified-Since")
    same(answer.json()["Type"], "ValidationException", "error type")

with suite.step("If-Modified-Since returns only what changed"):
    assert created, "needs the contacts"
    import time
    time.sleep(1.1)
    mark = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    time.sleep(1.1)
    accounting.update_contact(tenant, created[2].contact_id,
                              Contacts(contacts=[Contact(contact_id=created[2].contact_id, first_name="Changed")]))
    changed = accounting.get_contacts(tenant, if_modified_since=mark).contacts
    same([c.name for c in changed], ["Conformance 002"], "changed since")
    same(len(accounting.get_contacts(tenant, if_modified_since=started).contacts) >= 7, True, "all since start")

invoice_id = None
with suite.step("an invoice with exact amounts, read back"):
    invoice = Invoice(type="ACCREC", contact=Contact(contact_id=created[0].contact_id),
                      date=datetime.date(2024, 2, 29), due_date=datetime.date(2024, 3, 31),
                      reference="conformance 2024-02", line_amount_types=LineAmountTypes.EXCLUSIVE, status="DRAFT",
                      line_items=[LineItem(description="Helpdesk seats", quantity=2.5, unit_amount=22.1,
                                           item_code="M365-BP", account_code="200"),
                                  LineItem(description="Seat", quantity=3, unit_amount=0.1,
                                           item_code="HELPDESK-USER", account_code="200")])
    made = accounting.create_invoices(tenant, Invoices(invoices=[invoice]), idempotency_key="conf-inv-1").invoices[0]
    invoice_id = made.invoice_id
    back = accounting.get_invoice(tenant, invoice_id).invoices[0]
    same(money(back.line_items[0].line_amount), Decimal("55.25"), "line amount")
    same(money(back.line_items[1].line_amount), Decimal("0.3"), "line amount 3 x 0.1")
    same(money(back.total), Decimal("55.55"), "total")
    same(back.date, datetime.date(2024, 2, 29), "leap day date")
    same(back.status, "DRAFT", "status")
    same(back.reference, "conformance 2024-02", "reference")

with suite.step("a retried create with the same Idempotency-Key makes no second invoice"):
    again = accounting.create_invoices(tenant, Invoices(invoices=[invoice]), idempotency_key="conf-inv-1").invoices[0]
    same(again.invoice_id, invoice_id, "replayed invoice")
    found = accounting.get_invoices(tenant, where='Reference=="conformance 2024-02"').invoices
    same(len(found), 1, "invoices with the reference")
    assert accounting.get_invoices(tenant, page=1).pagination is not None, "invoices carry pagination"

with suite.step("validation errors in Xero's shape"):
    try:
        bad = Invoice(type="ACCREC", contact=Contact(contact_id=created[0].contact_id),
                      line_items=[LineItem(description="x", quantity=1, unit_amount=1, item_code="NO-SUCH-ITEM")])
        accounting.create_invoices(tenant, Invoices(invoices=[bad]))
        raise AssertionError("an unknown item code was accepted")
    except AccountingBadRequestException as e:
        same(e.error_data["Type"], "ValidationException", "error type")
        same(e.error_data["ErrorNumber"], 10, "error number")
        same(e.reason, "Item code 'NO-SUCH-ITEM' is not valid", "the SDK's reason")

with suite.step("not found"):
    try:
        accounting.get_invoice(tenant, "00000000-0000-0000-0000-000000000000")
        raise AssertionError("a missing invoice was found")
    except NotFoundException as e:
        same(e.status, 404, "status")

with suite.step("items list with sale prices"):
    items = accounting.get_items(tenant).items
    by_code = {i.code: i for i in items}
    same(money(by_code["M365-BP"].sales_details.unit_price), Decimal("22"), "item price")

suite.finish()
