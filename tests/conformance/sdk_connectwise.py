"""ConnectWise's community-maintained official-listed SDK (pyconnectwise) against `rollcall
sandbox connectwise` (demo seed).

What a real ConnectWise Manage integration does: the codebase from /login/companyinfo, API
member keys with the clientId header, lists paged by the `Link` header, `conditions=`,
`childConditions=`, `orderBy=`, `fields=`, counts, contacts and agreement additions created and
read back with exact decimals, JSON-Patch updates, change tracking by `lastUpdated`, and
ConnectWise's error shapes (400 with `errors[]`, 404, 401). ConnectWise has no OAuth grant for
API members, no idempotency key and no optimistic concurrency: a retried create is reconciled
by reading first, which the suite does as rollcall does.
"""
import datetime
import time
from decimal import Decimal

from pyconnectwise import ConnectWiseManageAPIClient
from pyconnectwise.exceptions import (AuthenticationFailedException, MalformedRequestException,
                                      NotFoundException)

from common import Suite, base_url, money, same

COMPANY_ID = "demo"
PUBLIC_KEY = "demo-public"
PRIVATE_KEY = "demo-private"
CLIENT_ID = "00000000-0000-4000-8000-000000000000"

url = base_url()
suite = Suite("connectwise")


class LoopbackClient(ConnectWiseManageAPIClient):
    """pyconnectwise always speaks https; the sandbox is plain HTTP on loopback. Only the scheme
    changes: paths, headers and bodies are the SDK's own."""

    def _make_request(self, method, url, *args, **kwargs):
        return super()._make_request(method, url.replace("https://", "http://", 1), *args, **kwargs)


host = url.split("://", 1)[1]
client = None
with suite.step("codebase from /login/companyinfo"):
    client = LoopbackClient(COMPANY_ID, host, CLIENT_ID, PUBLIC_KEY, PRIVATE_KEY)
    same(client.codebase.strip("/"), "v4_6_release", "codebase")
    info = client.system.info.get()
    assert info.version, "system/info has a version"

with suite.step("wrong keys are refused with 401"):
    try:
        wrong = LoopbackClient(COMPANY_ID, host, CLIENT_ID, PUBLIC_KEY, "wrong", codebase="v4_6_release/")
        wrong.codebase = "v4_6_release/"  # pyconnectwise 0.6.1.2 forgets a codebase it is given
        wrong.company.companies.get()
        raise AssertionError("wrong keys were accepted")
    except AuthenticationFailedException:
        pass

acme = None
with suite.step("companies by conditions, ordered, counted, sparse fields"):
    found = client.company.companies.get(params={"conditions": 'identifier="ACME"'})
    same([c.name for c in found], ["Acme Corporation"], "ACME")
    acme = found[0]
    ordered = client.company.companies.get(params={"orderBy": "name desc"})
    same([c.identifier for c in ordered], ["INITECH", "GLOBEX", "ACME"], "orderBy")
    same(client.company.companies.count.get().count, 3, "count")
    # The SDK's typed models require `name`, so a sparse answer is read as JSON, as
    # pyconnectwise's own callers must.
    sparse = client.company.companies._make_request(
        "GET", params={"fields": "id,identifier", "conditions": 'identifier="GLOBEX"'}).json()
    same(sparse, [{"id": sparse[0]["id"], "identifier": "GLOBEX"}], "only the fields asked for")

contacts = []
with suite.step("contacts created with communication items, read back"):
    for n in range(7):
        contacts.append(client.company.contacts.post(data={
            "firstName": f"Conf{n}", "lastName": "Ormance", "company": {"id": acme.id},
            "communicationItems": [{"type": {"name": "Email"}, "value": f"conf{n}@acme.test",
                                    "communicationType": "Email", "defaultFlag": True}],
        }))
    back = client.company.contacts.id(contacts[2].id).get()
    same(back.first_name, "Conf2", "first name")
    same(back.company.id, acme.id, "company")
    same(back.communication_items[0].value, "conf2@acme.test", "email")
    assert back.info and back.info.get("lastUpdated"), "_info.lastUpdated"

with suite.step("pages follow the Link header to the last page"):
    page = client.company.contacts.paginated(1, 3, {"conditions": f"company/id={acme.id}"})
    same(page.has_next_page, True, "has next")
    same(page.next_page, 2, "next page")
    same(page.last_page, 3, "last page")
    seen = [c.id for c in page.all()]
    same(len(seen), 7, "contacts over all pages")
    same(len(set(seen)), 7, "distinct")

with suite.step("childConditions on communication items"):
    found = client.company.contacts.get(params={"childConditions": 'communicationItems/value="conf4@acme.test"'})
    same([c.first_name for c in found], ["Conf4"], "by email")

with suite.step("quotes and bidi text survive conditions"):
    odd = client.company.contacts.post(data={"firstName": 'Zoë "Q" \u202eX', "lastName": "Ormance",
                                             "company": {"id": acme.id}})
    found = client.company.contacts.get(params={"conditions": 'firstName="Zoë \\"Q\\" \u202eX"'})
    same([c.id for c in found], [odd.id], "found by its odd name")

with suite.step("a bad condition is a 400 in ConnectWise's shape"):
    try:
        client.company.contacts.get(params={"conditions": "firstName =="})
        raise AssertionError("a malformed condition was accepted")
    except MalformedRequestException as e:
        body = e.response.json()
        assert body.get("code") and body.get("message"), body

agreement = None
addition = None
with suite.step("an addition with exact decimals, read back"):
    agreement = client.finance.agreements.get(params={"conditions": f"company/id={acme.id}"})[0]
    product = client.procurement.catalog.get(params={"conditions": 'identifier="M365-BP"'})[0]
    same(money(product.price), Decimal("22"), "catalog price")
    addition = client.finance.agreements.id(agreement.id).additions.post(data={
        "product": {"id": product.id}, "quantity": 7, "lessIncluded": 0, "unitPrice": 22.1,
        "unitCost": 19.8, "billCustomer": "Billable", "effectiveDate": "2024-02-29T00:00:00Z",
        "description": "Microsoft 365 Business Premium", "invoiceDescription": "7 users: Conf0..Conf6",
    })
    back = client.finance.agreements.id(agreement.id).additions.id(addition.id).get()
    same(money(back.quantity), Decimal("7"), "quantity")
    same(money(back.unit_price), Decimal("22.1"), "unit price")
    same(back.bill_customer, "Billable", "billCustomer")
    same(back.product.identifier, "M365-BP", "product identifier")
    same(back.agreement_id, agreement.id, "agreementId")

with suite.step("JSON-Patch changes the quantity, exactly"):
    patched = client.finance.agreements.id(agreement.id).additions.id(addition.id).patch(
        data=[{"op": "replace", "path": "quantity", "value": 12.5}])
    same(money(patched.quantity), Decimal("12.5"), "patched quantity")
    found = client.finance.agreements.id(agreement.id).additions.get(params={"conditions": "quantity=12.5"})
    same([a.id for a in found], [addition.id], "by quantity")

with suite.step("a retried create is reconciled by reading first"):
    existing = client.company.contacts.get(params={
        "conditions": f'firstName="Conf0" and lastName="Ormance" and company/id={acme.id}'})
    same([c.id for c in existing], [contacts[0].id], "the first create is found, not made again")

with suite.step("change tracking by lastUpdated"):
    time.sleep(1.1)
    mark = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    time.sleep(1.1)
    client.company.contacts.id(contacts[5].id).patch(data=[{"op": "replace", "path": "title", "value": "Changed"}])
    changed = client.company.contacts.get(params={"conditions": f"lastUpdated > [{mark.strftime('%Y-%m-%dT%H:%M:%SZ')}]"})
    same([c.id for c in changed], [contacts[5].id], "changed since")

with suite.step("not found is a 404"):
    try:
        client.company.contacts.id(999999).get()
        raise AssertionError("a missing contact was found")
    except NotFoundException:
        pass

with suite.step("an invalid addition names the field"):
    try:
        client.finance.agreements.id(agreement.id).additions.post(data={"quantity": 1, "billCustomer": "Billable"})
        raise AssertionError("an addition without a product was accepted")
    except MalformedRequestException as e:
        body = e.response.json()
        assert any(err.get("field") == "product" for err in body.get("errors", [])), body

suite.finish()
