"""The template's Cognito wiring: every app client can call the API, only one grants admin,
the API may read addresses from its own pool only, and the pool outlives the stack."""

from __future__ import annotations

from typing import Any

import pytest
from jobtracker_local import gates

pytestmark = pytest.mark.infra

Doc = dict[str, Any]
ADMIN_SCOPE = "jobtracker/admin"


def clients(doc: Doc) -> dict[str, Doc]:
    return {k: v for k, v in doc["Resources"].items() if v["Type"] == "AWS::Cognito::UserPoolClient"}


def jwt_configuration(doc: Doc) -> Doc:
    config: Doc = doc["Resources"]["HttpApi"]["Properties"]["Auth"]["Authorizers"]["JwtAuthorizer"][
        "JwtConfiguration"
    ]
    return config


def test_every_app_client_is_an_audience_of_the_authorizer(template_doc: Doc) -> None:
    # Given the app clients of the pool (Cognito access tokens carry no `aud`: API Gateway
    # matches their `client_id` against the audience)
    condition, with_cognito, external = jwt_configuration(template_doc)["audience"]["Fn::If"]
    # Then with Cognito every client is an audience, and with an external issuer only JwtAudience
    assert condition == "UseCognito"
    assert (
        {ref["Ref"] for ref in with_cognito}
        == set(clients(template_doc))
        == {
            "UserPoolClient",
            "AdminUserPoolClient",
        }
    )
    assert external == [{"Ref": "JwtAudience"}]


def test_only_the_confidential_admin_client_grants_admin(template_doc: Doc) -> None:
    props = {name: c["Properties"] for name, c in clients(template_doc).items()}
    users, admins = props["UserPoolClient"], props["AdminUserPoolClient"]
    # The admin client offers every scope of the resource server, the users' client all but admin
    server = template_doc["Resources"]["UserPoolResourceServer"]["Properties"]
    every = {f"{server['Identifier']}/{s['ScopeName']}" for s in server["Scopes"]}
    assert {s for s in admins["AllowedOAuthScopes"] if s.startswith("jobtracker/")} == every
    assert ADMIN_SCOPE not in users["AllowedOAuthScopes"]
    assert set(users["AllowedOAuthScopes"]) == set(admins["AllowedOAuthScopes"]) - {ADMIN_SCOPE}
    # Any pool user can sign in through any client: only holders of the secret redeem admin codes
    assert admins["GenerateSecret"] is True
    for key in ("AllowedOAuthFlows", "ExplicitAuthFlows", "CallbackURLs", "SupportedIdentityProviders"):
        assert admins[key] == users[key], key
    assert all(c.get("Condition") == "UseCognito" for c in clients(template_doc).values())


def test_the_api_reads_addresses_from_its_own_pool_only(template_doc: Doc) -> None:
    api = template_doc["Resources"]["ApiFunction"]["Properties"]
    # The pool id only with Cognito (empty: no lookups)...
    assert api["Environment"]["Variables"]["USER_POOL_ID"] == {
        "Fn::If": ["UseCognito", {"Ref": "UserPool"}, ""]
    }
    # ...and AdminGetUser on that pool, granted to the API alone
    translated = gates.translate(template_doc)
    grants = [
        (where.split(".")[0], s["Resource"])
        for where, s in gates._statements(translated)
        if any(a.startswith("cognito-idp:") for a in gates._actions(s))
    ]
    assert grants == [("ApiFunctionRole", {"Fn::GetAtt": ["UserPool", "Arn"]})]
    actions = {
        a for where, s in gates._statements(translated) for a in gates._actions(s) if a.startswith("cognito")
    }
    assert actions == {"cognito-idp:admingetuser"}


def test_the_user_pool_outlives_the_stack(template_doc: Doc) -> None:
    # Kept by `sam delete` and a replacement; deleted only by the rollback of the deploy that
    # created it (nobody is in it yet), so a failed first deploy leaves no orphan pool.
    pool = template_doc["Resources"]["UserPool"]
    assert pool["DeletionPolicy"] == "RetainExceptOnCreate"
    assert pool["UpdateReplacePolicy"] == "Retain"
