"""Intuit's OAuth client (intuit-oauth) and python-quickbooks against `rollcall sandbox
quickbooks` (demo seed).

What a real QuickBooks Online integration does: OAuth endpoints from the discovery document,
consent by authorization code (QuickBooks has no client-credentials grant), refresh-token
rotation, customers and items created and read back, queries paged by STARTPOSITION and
MAXRESULTS with the answer's startPosition/maxResults/totalCount, an invoice with exact
amounts, `requestid` retries, stale SyncToken (5010), not found (610), and change data
capture after an update.
"""
import datetime
import time
from decimal import Decimal

from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import ObjectNotFoundException, QuickbooksException, ValidationException
from quickbooks.objects.base import EmailAddress, Ref
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item

from common import REDIRECT, Suite, base_url, consent, money, same

CLIENT_ID = "demo-qbo-client"
CLIENT_SECRET = "demo-qbo-secret"
REALM = "9130350000000001"

url = base_url()
suite = Suite("quickbooks")
auth = AuthClient(CLIENT_ID, CLIENT_SECRET, REDIRECT, f"{url}/.well-known/openid_sandbox_configuration")
qb = None

with suite.step("discovery, authorization code grant"):
    same(auth.token_endpoint, f"{url}/oauth2/v1/tokens/bearer", "token endpoint from discovery")
    _, query = consent(auth.get_authorization_url([Scopes.ACCOUNTING], state_token="st-1"))
    same(query.get("state"), "st-1", "state echoed")
    same(query.get("realmId"), REALM, "realmId")
    auth.get_bearer_token(query["code"], realm_id=query["realmId"])
    assert auth.access_token and auth.refresh_token, "tokens issued"
    same(auth.x_refresh_token_expires_in > 86400 * 30, True, "refresh token lives months")

with suite.step("refresh rotates the refresh token; the spent one is refused"):
    spent = auth.refresh_token
    auth.refresh()
    assert auth.refresh_token != spent, "the refresh token did not rotate"
    try:
        AuthClient(CLIENT_ID, CLIENT_SECRET, REDIRECT, auth.environment).refresh(refresh_token=spent)
        raise AssertionError("a spent refresh token was accepted")
    except AuthClientError as e:
        same(e.status_code, 400, "status")
        assert b"invalid_grant" in e.content, e.content

with suite.step("client built from the refresh token"):
    qb = QuickBooks(auth_client=auth, refresh_token=auth.refresh_token, company_id=REALM, minorversion=75)
    qb.api_url_v3 = f"{url}/v3"
    same(len(Item.all(qb=qb)) >= 4, True, "seeded items")

customers = []
with suite.step("customers created, read back; a retried requestid makes no second one"):
    for n in range(5):
        c = Customer()
        c.DisplayName = f"Conformance {n:02}"
        c.CompanyName = f"Conformance {n:02} Ltd"
        c.PrimaryEmailAddr = EmailAddress()
        c.PrimaryEmailAddr.Address = f"ap{n}@conformance.test"
        c.save(qb=qb, request_id=f"conf-cust-{n}")
        customers.append(c)
    retried = Customer()
    retried.DisplayName = "Conformance 00"
    retried.save(qb=qb, request_id="conf-cust-0")
    same(retried.Id, customers[0].Id, "replayed create")
    back = Customer.get(customers[1].Id, qb=qb)
    same(back.DisplayName, "Conformance 01", "display name")
    same(back.PrimaryEmailAddr.Address, "ap1@conformance.test", "email")
    same(back.SyncToken, "0", "sync token of a new customer")
    same(back.Active, True, "active")

with suite.step("queries page by STARTPOSITION/MAXRESULTS with the answer's metadata"):
    total = Customer.count(qb=qb)
    same(total >= 5, True, "count(*)")
    seen, start = [], 1
    while True:
        answer = qb.query(f"select * from Customer STARTPOSITION {start} MAXRESULTS 2")["QueryResponse"]
        rows = answer.get("Customer", [])
        if not rows:
            break
        same(answer["startPosition"], start, "startPosition")
        same(answer["maxResults"], len(rows), "maxResults is the rows returned")
        seen += [r["Id"] for r in rows]
        start += len(rows)
    same(len(seen), total, "customers over all pages")
    same(len(set(seen)), total, "distinct")

with suite.step("filters: equality, LIKE, IN, order"):
    same([c.DisplayName for c in Customer.filter(DisplayName="Conformance 03", qb=qb)], ["Conformance 03"], "filter")
    found = Customer.where("DisplayName LIKE 'Conformance 0%'", order_by="DisplayName DESC", qb=qb)
    same([c.DisplayName for c in found][:2], ["Conformance 04", "Conformance 03"], "LIKE, ordered")
    found = Customer.choose(["Conformance 01", "Conformance 02"], field="DisplayName", qb=qb)
    same(sorted(c.DisplayName for c in found), ["Conformance 01", "Conformance 02"], "IN")
    same(Customer.count("Active = true", qb=qb) >= 5, True, "count with where")

item = None
with suite.step("an item created and read back with its price"):
    item = Item()
    item.Name = "CONF-SEAT"
    item.Type = "Service"
    item.UnitPrice = 12.345
    item.IncomeAccountRef = Ref()
    item.IncomeAccountRef.value = "1"
    item.save(qb=qb)
    back = Item.get(item.Id, qb=qb)
    same(money(back.UnitPrice), Decimal("12.345"), "unit price")
    same(back.Type, "Service", "type")

invoice = None
with suite.step("an invoice with exact amounts, read back"):
    invoice = Invoice()
    invoice.CustomerRef = customers[0].to_ref()
    invoice.DocNumber = "CONF-2024-02"
    invoice.TxnDate = "2024-02-29"
    for qty, price in ((2.5, 22.1), (3, 0.1)):
        line = SalesItemLine()
        line.Amount = float(money(qty) * money(price))
        line.Description = "seats"
        line.SalesItemLineDetail = SalesItemLineDetail()
        line.SalesItemLineDetail.ItemRef = item.to_ref()
        line.SalesItemLineDetail.Qty = qty
        line.SalesItemLineDetail.UnitPrice = price
        invoice.Line.append(line)
    invoice.save(qb=qb, request_id="conf-inv-1")
    back = Invoice.get(invoice.Id, qb=qb)
    amounts = [money(l.Amount) for l in back.Line if l.DetailType == "SalesItemLineDetail"]
    same(amounts, [Decimal("55.25"), Decimal("0.3")], "line amounts")
    same(money(back.TotalAmt), Decimal("55.55"), "total")
    same(back.TxnDate, "2024-02-29", "leap day")
    same(back.DocNumber, "CONF-2024-02", "doc number")
    same(back.CustomerRef.value, customers[0].Id, "customer")

with suite.step("a stale SyncToken is refused with 5010"):
    current = Customer.get(customers[2].Id, qb=qb)
    stale = Customer.get(customers[2].Id, qb=qb)
    current.CompanyName = "Renamed Ltd"
    same(current.save(qb=qb).SyncToken, "1", "sync token after update")
    stale.CompanyName = "Lost update Ltd"
    try:
        stale.save(qb=qb)
        raise AssertionError("a stale SyncToken was accepted")
    except QuickbooksException as e:
        same(e.error_code, 5010, "error code")

with suite.step("not found is 610"):
    try:
        Invoice.get("999999", qb=qb)
        raise AssertionError("a missing invoice was found")
    except ObjectNotFoundException as e:
        same(e.error_code, 610, "error code")

with suite.step("validation errors name the problem"):
    bad = Invoice()
    bad.CustomerRef = Ref()
    bad.CustomerRef.value = "999999"
    try:
        bad.save(qb=qb)
        raise AssertionError("an invoice for no customer was accepted")
    except (ValidationException, QuickbooksException) as e:
        assert 2000 <= e.error_code < 10000, e.error_code

with suite.step("quotes, ampersands and bidi text in names survive the query language"):
    odd = Customer()
    odd.DisplayName = "O'Brien & Søn \u202e\"Ltd\""
    odd.save(qb=qb)
    found = Customer.filter(DisplayName=odd.DisplayName, qb=qb)
    same([c.DisplayName for c in found], [odd.DisplayName], "found by its odd name")

with suite.step("change data capture without changedSince is refused"):
    try:
        qb.change_data_capture("Customer", "yesterday")
        raise AssertionError("a changedSince that is not a date was accepted")
    except ValidationException as e:
        same(e.error_code, 2020, "error code")

with suite.step("change data capture returns what changed since"):
    time.sleep(1.1)
    mark = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    time.sleep(1.1)
    changed = Customer.get(customers[3].Id, qb=qb)
    changed.CompanyName = "Changed Ltd"
    changed.save(qb=qb)
    cdc = change_data_capture([Customer, Invoice], mark.strftime("%Y-%m-%dT%H:%M:%SZ"), qb=qb)
    same([c.Id for c in cdc.Customer], [customers[3].Id], "changed customers")
    same(getattr(cdc, "Invoice", None) is None or len(cdc.Invoice) == 0, True, "no changed invoices")

suite.finish()
