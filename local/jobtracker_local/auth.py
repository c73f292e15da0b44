"""Local JWTs: an RSA key generated once under the state folder, a JWKS, token minting, and
verification with the same rules as API Gateway's HTTP API JWT authorizer."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: What a user gets from `jobtracker local token` without --scope.
DEFAULT_SCOPES = ("read:job_logs", "write:job_logs", "read:jobs", "write:jobs")
ADMIN_SCOPE = "admin"
KEY_FILE = "jwt-signing-key.pem"


class KeyStore:
    """The signing key of the local issuer, created on first use and kept across restarts."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / KEY_FILE
        self._key: rsa.RSAPrivateKey | None = None

    def private_key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            if self.path.exists():
                loaded = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
                assert isinstance(loaded, rsa.RSAPrivateKey)
                self._key = loaded
            else:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                pem = self._key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(pem)
        return self._key

    @property
    def kid(self) -> str:
        der = (
            self.private_key()
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return hashlib.sha256(der).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key().public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return {"keys": [jwk]}

    def mint(
        self,
        *,
        sub: str,
        issuer: str,
        audience: str,
        email: str | None = None,
        scopes: list[str] | None = None,
        ttl_seconds: int = 12 * 3600,
    ) -> str:
        now = int(time.time())
        scope_list = list(DEFAULT_SCOPES if scopes is None else scopes)
        claims: dict[str, Any] = {
            "sub": sub,
            "iss": issuer,
            "aud": audience,
            "client_id": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "token_use": "access",
            "scope": " ".join(scope_list),
        }
        if email:
            claims["email"] = email
        return jwt.encode(claims, self.private_key(), algorithm="RS256", headers={"kid": self.kid})


def expand_scopes(requested: list[str] | None) -> list[str]:
    """`--scope admin` means an administrator: admin plus every ordinary scope."""
    if requested is None:
        return list(DEFAULT_SCOPES)
    if ADMIN_SCOPE in requested:
        return sorted(set(requested) | set(DEFAULT_SCOPES))
    return list(requested)


class AuthError(Exception):
    def __init__(self, status: int, message: str, description: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.description = description


@dataclass
class JwtAuthorizer:
    """API Gateway HTTP API JWT authorizer rules: signature by a JWKS key, `iss` equal to the
    issuer, `aud` (or `client_id` when there is no `aud`) among the audiences, `exp`/`nbf`/`iat`
    valid, and at least one of the route's scopes in `scope`/`scp`."""

    keys: KeyStore
    issuer: str
    audiences: list[str]

    def verify(self, header_value: str | None) -> dict[str, Any]:
        if not header_value:
            raise AuthError(401, "Unauthorized")
        token = header_value.strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self.keys.kid:
                raise AuthError(401, "Unauthorized", "signing key not found in JWKS")
            claims: dict[str, Any] = jwt.decode(
                token,
                self.keys.private_key().public_key(),
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"verify_aud": False, "require": ["exp", "iss"]},
                leeway=0,
            )
        except jwt.PyJWTError as exc:
            raise AuthError(401, "Unauthorized", str(exc)) from exc
        audience = claims.get("aud", claims.get("client_id"))
        values = audience if isinstance(audience, list) else [audience]
        if not any(v in self.audiences for v in values):
            raise AuthError(401, "Unauthorized", "audience not allowed")
        return claims

    @staticmethod
    def scopes_of(claims: dict[str, Any]) -> list[str]:
        raw = claims.get("scope", claims.get("scp"))
        if raw is None:
            return []
        return raw.split() if isinstance(raw, str) else [str(s) for s in raw]

    def authorize(self, header_value: str | None, required: list[str]) -> tuple[dict[str, Any], list[str]]:
        claims = self.verify(header_value)
        scopes = self.scopes_of(claims)
        if required and not set(required) & set(scopes):
            raise AuthError(403, "Forbidden", "token lacks a scope this route requires")
        return claims, scopes


def gateway_claims(claims: dict[str, Any]) -> dict[str, str]:
    """Claims as HTTP API passes them to the integration: every value a string."""
    out = {}
    for key, value in claims.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, list):
            out[key] = "[" + " ".join(str(v) for v in value) + "]"
        else:
            out[key] = json.dumps(value) if isinstance(value, dict) else str(value)
    return out
