"""Microsoft's Graph SDK (msgraph-sdk, on kiota) with Microsoft's auth library (msal) against
`rollcall sandbox graph` (demo seed).

What a real Entra ID integration does: the client-credentials grant through the tenant's
OpenID discovery, users paged by `@odata.nextLink` with `$select`/`$top`, advanced `$filter`
with `ConsistencyLevel: eventual` and `$count`, nested group members, subscribed SKUs,
`/users/delta` to its deltaLink and again after a change made through the API, and Graph's
OData error shape for a user that is not there.
"""
import asyncio
import urllib.parse

import httpx
import msal
import requests
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
    BaseBearerTokenAuthenticationProvider)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.user import User
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core import GraphClientFactory
from msgraph_core.tasks.page_iterator import PageIterator

from common import REDIRECT, Suite, base_url, consent, same

TENANT = "demo.onmicrosoft.com"
CLIENT_ID = "00000000-0000-4000-8000-000000000001"
CLIENT_SECRET = "demo-graph-secret"
ALL_STAFF = "00000000-0000-4000-b000-000000000005"

url = base_url()
host = urllib.parse.urlparse(url).netloc
suite = Suite("graph")


class LoopbackSession(requests.Session):
    """msal insists on an https authority; the sandbox is plain HTTP on loopback. Only the
    scheme of requests to the sandbox (and of the endpoints its discovery document names)
    changes."""

    def request(self, method, target, *args, **kwargs):
        answer = super().request(method, target.replace(f"https://{host}", url, 1), *args, **kwargs)
        if target.endswith("/.well-known/openid-configuration"):
            # The discovery document names the sandbox's endpoints with its http scheme, which
            # msal refuses; it is given them as https, which this session sends as http again.
            answer._content = answer.content.replace(url.encode(), f"https://{host}".encode())
        return answer


app = msal.ConfidentialClientApplication(
    CLIENT_ID, client_credential=CLIENT_SECRET, authority=f"https://{host}/{TENANT}",
    validate_authority=False, instance_discovery=False, http_client=LoopbackSession())


class MsalTokens(AccessTokenProvider):
    async def get_authorization_token(self, uri, additional_authentication_context=None):
        result = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
        if "access_token" not in result:
            raise RuntimeError(f"no token: {result}")
        return result["access_token"]

    def get_allowed_hosts_validator(self):
        return AllowedHostsValidator([host])


async def main():
    with suite.step("client credentials through OpenID discovery"):
        result = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
        assert "access_token" in result, result
        same(result.get("token_type"), "Bearer", "token type")
        wrong = msal.ConfidentialClientApplication(
            CLIENT_ID, client_credential="wrong", authority=f"https://{host}/{TENANT}",
            validate_authority=False, instance_discovery=False, http_client=LoopbackSession())
        refused = wrong.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
        same(refused.get("error"), "invalid_client", "wrong secret")

    with suite.step("authorization code with refresh, through msal"):
        flow = app.initiate_auth_code_flow(["User.Read.All"], redirect_uri=REDIRECT)
        _, query = consent(flow["auth_uri"].replace(f"https://{host}", url, 1))
        same(query.get("state"), flow["state"], "state echoed")
        tokens = app.acquire_token_by_auth_code_flow(flow, query)
        assert "access_token" in tokens and "refresh_token" in tokens, tokens
        assert "offline_access" in tokens.get("scope", ""), tokens.get("scope")
        again = app.acquire_token_by_refresh_token(tokens["refresh_token"], ["User.Read.All"])
        assert "access_token" in again, again
        assert again["refresh_token"] != tokens["refresh_token"], "a new refresh token comes back"
        spent = app.acquire_token_by_auth_code_flow(flow, query)
        assert "error" in spent, "an authorization code works once"
        delegated = httpx.get(f"{url}/v1.0/users?$top=1",
                              headers={"Authorization": f"Bearer {again['access_token']}"})
        same(delegated.status_code, 200, "the refreshed token reaches Graph")

    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(MsalTokens()),
                                  client=GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient()))
    adapter.base_url = f"{url}/v1.0"
    graph = GraphServiceClient(request_adapter=adapter)
    user_ids = []

    with suite.step("users paged by @odata.nextLink"):
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            select=["id", "displayName", "userPrincipalName", "accountEnabled", "assignedLicenses", "mail"], top=4)
        first = await graph.users.get(RequestConfiguration(query_parameters=query))
        same(len(first.value), 4, "first page")
        assert first.odata_next_link, "no nextLink on a full first page"
        seen = []
        iterator = PageIterator(first, adapter)
        await iterator.iterate(lambda u: seen.append(u.id) or True)
        same(len(seen), 13, "users over all pages")
        same(len(set(seen)), 13, "distinct")
        user_ids.extend(seen)

    with suite.step("advanced filter with ConsistencyLevel and $count"):
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            filter="endsWith(mail,'@globex.example')", count=True, select=["id", "mail"])
        config = RequestConfiguration(query_parameters=query)
        config.headers.add("ConsistencyLevel", "eventual")
        found = await graph.users.get(config)
        same(len(found.value), 4, "globex users")
        same(found.odata_count, 4, "@odata.count")

    with suite.step("a user read by id, licences parsed"):
        from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
        plain = await graph.users.by_user_id(user_ids[0]).get()
        assert plain.user_principal_name, "userPrincipalName"
        same(plain.assigned_licenses, None, "licences outside Graph's default property set")
        query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id", "userPrincipalName", "assignedLicenses", "accountEnabled"])
        user = await graph.users.by_user_id(user_ids[0]).get(RequestConfiguration(query_parameters=query))
        assert user.assigned_licenses, "assignedLicenses when selected"
        same(user.account_enabled, True, "accountEnabled when selected")

    with suite.step("nested group members, transitively"):
        members = await graph.groups.by_group_id(ALL_STAFF).transitive_members.get()
        users = [m for m in members.value if m.odata_type == "#microsoft.graph.user"]
        same(len(users), 12, "people under All Staff")

    with suite.step("subscribed SKUs"):
        skus = await graph.subscribed_skus.get()
        by_part = {s.sku_part_number: s for s in skus.value}
        same(by_part["SPB"].prepaid_units.enabled, 25, "SPB seats bought")
        assert by_part["SPB"].consumed_units >= 1, "SPB seats used"

    with suite.step("delta to its deltaLink, then only what changed through the API"):
        query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=["id", "displayName", "jobTitle"])
        page = await graph.users.delta.get(RequestConfiguration(query_parameters=query))
        rounds, all_users = 0, []
        while True:
            all_users += page.value
            rounds += 1
            if page.odata_delta_link:
                break
            assert page.odata_next_link, "a delta page with neither link"
            page = await graph.users.delta.with_url(page.odata_next_link).get()
        same(len(all_users), 13, "users in the first delta round")
        delta_link = page.odata_delta_link
        change = User()
        change.job_title = "Changed by conformance"
        await graph.users.by_user_id(user_ids[1]).patch(change)
        again = await graph.users.delta.with_url(delta_link).get()
        same([u.id for u in again.value], [user_ids[1]], "changed users")
        same(again.value[0].job_title, "Changed by conformance", "changed value")
        assert again.odata_delta_link, "a new deltaLink"
        quiet = await graph.users.delta.with_url(again.odata_delta_link).get()
        same(quiet.value, [], "nothing changed since")

    with suite.step("odd text round-trips; an unknown property is refused"):
        odd = User()
        odd.job_title = "Ops \u202eLead\u202c \u0007 \"quoted\" 🧾"
        await graph.users.by_user_id(user_ids[2]).patch(odd)
        back = await graph.users.by_user_id(user_ids[2]).get()
        same(back.job_title, odd.job_title, "jobTitle with bidi, control and emoji")
        answer = httpx.patch(f"{url}/v1.0/users/{user_ids[2]}", json={"noSuchProperty": 1},
                             headers={"Authorization": f"Bearer {await MsalTokens().get_authorization_token(url)}"})
        same(answer.status_code, 400, "unknown property")
        same(answer.json()["error"]["code"], "BadRequest", "OData error code")

    with suite.step("a user that is not there: 404 in OData's error shape"):
        try:
            await graph.users.by_user_id("00000000-0000-4000-a000-999999999999").get()
            raise AssertionError("a missing user was found")
        except ODataError as e:
            same(e.response_status_code, 404, "status")
            same(e.error.code, "Request_ResourceNotFound", "code")
            assert e.error.inner_error is not None, "innerError"

    with suite.step("an unknown $select property is refused"):
        try:
            query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=["noSuchProperty"])
            await graph.users.get(RequestConfiguration(query_parameters=query))
            raise AssertionError("an unknown property was accepted")
        except ODataError as e:
            same(e.response_status_code, 400, "status")


asyncio.run(main())
suite.finish()
