"""The fake Entra ID (login.microsoftonline.com) the fake Graph's tokens come from, served over
HTTPS by :class:`LoginServer` (MSAL refuses an ``http`` authority).

Endpoints, for the one registered tenant:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: the OpenID metadata MSAL reads
  (``token_endpoint``, ``authorization_endpoint``, ``issuer``, ``jwks_uri``, …);
- ``GET /{tenant}/discovery/v2.0/keys``: an empty key set;
- ``POST /{tenant}/oauth2/v2.0/token``: the client-credentials grant, with ``client_secret``
  (form or HTTP Basic) or a ``client_assertion`` JWT (RS256 or PS256, as MSAL signs it)
  verified against the app's certificate (signature, ``aud`` = the token endpoint,
  ``iss`` = ``sub`` = client id, ``exp``/``nbf``, the ``x5t``/``x5t#S256`` thumbprint when
  present). It answers ``{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
  "access_token": …}`` or Entra's error JSON (``invalid_client`` AADSTS7000215 for a wrong
  secret, ``invalid_request`` AADSTS90002 for an unknown tenant, …).

Access tokens are JWT-shaped (readable claims: ``aud``, ``tid``, ``appid``, ``roles``, ``exp``)
with a random signature; Graph accepts exactly the ones issued here and still valid.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from syncd.connectors.fakehttp import LoopbackFake, QuietHandler, TrackingHTTPServer

from .faults import STATUS_FAULTS, Fault
from .tls import TlsHTTPServer
from .wire import HTML, PLAIN_JSON, Reply, dumps, html_error_page, utc_now

TOKEN_LIFETIME: Final = 3599
ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_RESERVED_SCOPES: Final = frozenset({"openid", "profile", "offline_access"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AccessTokens:
    """The access tokens issued so far; thread-safe."""

    def __init__(self) -> None:
        self._valid: dict[str, float] = {}  # token → expiry (epoch seconds)
        self._revoked: set[str] = set()
        self._lock = threading.Lock()

    def issue(self, tenant_id: str, client_id: str, audience: str, by_certificate: bool) -> str:
        """A new token for the app."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": "syncd-fake-graph"}
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant_id}/",
            "iat": now, "nbf": now, "exp": now + TOKEN_LIFETIME,
            "app_displayname": "syncd SharePoint reader",
            "appid": client_id,
            "appidacr": "2" if by_certificate else "1",
            "idp": f"https://sts.windows.net/{tenant_id}/",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{tenant_id}/{client_id}")),
            "roles": ["Sites.Selected"],
            "sub": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{tenant_id}/{client_id}")),
            "tid": tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        token = ".".join([
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(claims, separators=(",", ":")).encode()),
            _b64url(secrets.token_bytes(64)),
        ])
        with self._lock:
            self._valid[token] = now + TOKEN_LIFETIME
        return token

    def problem(self, authorization: str | None) -> str | None:
        """Why an ``Authorization`` header is refused (Graph's message), or None when it
        carries a valid token."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "Access token is empty."
        with self._lock:
            expiry = self._valid.get(token)
            revoked = token in self._revoked
        if revoked or (expiry is not None and expiry < time.time()):
            return "Lifetime validation failed, the token is expired."
        if expiry is None:
            if "." not in token:
                return (
                    "IDX14100: JWT is not well formed, there are no dots (.).\n"
                    "The token needs to be in JWS or JWE Compact Serialization Format."
                )
            return "Access token validation failure. Invalid audience."
        return None

    def invalidate_all(self) -> None:
        """Every token issued so far is refused from now on."""
        with self._lock:
            self._revoked.update(self._valid)
            self._valid.clear()


class EntraLogin:
    """The login endpoint's logic for one tenant and one app (secret or certificate)."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        certificate: x509.Certificate,
        tokens: AccessTokens,
        take_fault: Callable[[str], Fault | None],
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.certificate = certificate
        self.tokens = tokens
        self.base_url = ""  # https://127.0.0.1:PORT, set when the server starts
        self._take_fault = take_fault
        self.wait: Callable[[float], object] = time.sleep  # how a "slow" fault waits
        self._count_lock = threading.Lock()
        self.token_requests = 0

    def reset_counters(self) -> None:
        """Forget how many token requests there were."""
        with self._count_lock:
            self.token_requests = 0

    def handle(self, verb: str, raw_path: str, headers: Any, body: bytes) -> Reply:
        """Answer one request to the login endpoint."""
        path = raw_path.partition("?")[0]
        tenant, _, rest = unquote(path).lstrip("/").partition("/")
        is_token = verb == "POST" and rest == "oauth2/v2.0/token"
        if is_token:
            with self._count_lock:
                self.token_requests += 1
        fault = self._take_fault(path)
        if fault is not None and fault.kind == "slow":
            self.wait(fault.delay or 0.0)
        elif fault is not None:
            return self._fault_reply(fault)
        known_tenant = tenant.lower() == self.tenant_id.lower()
        if verb == "GET" and rest in ("v2.0/.well-known/openid-configuration",
                                      ".well-known/openid-configuration"):
            if not known_tenant:
                return self._unknown_tenant(tenant, "invalid_tenant")
            return self._json(self.openid_configuration(tenant))
        if verb == "GET" and rest == "discovery/v2.0/keys":
            return self._json({"keys": []})
        if is_token:
            if not known_tenant:
                return self._unknown_tenant(tenant, "invalid_request")
            return self._token(tenant, headers, body)
        return self._json({"error": "not_found"}, 404)

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        """What Entra publishes at ``/{tenant}/v2.0/.well-known/openid-configuration``."""
        base = f"{self.base_url}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic"
            ],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time",
                "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash",
                "c_hash", "email",
            ],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    # --- the token grant ----------------------------------------------------------------------

    def _token(self, tenant: str, headers: Any, body: bytes) -> Reply:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        basic_id, basic_secret = _basic_auth(headers.get("Authorization"))
        client_id = form.get("client_id") or basic_id or ""
        if client_id != self.client_id:
            return self._error(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You "
                "may have sent your authentication request to the wrong tenant.",
            )
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            return self._error(
                400, "unsupported_grant_type", 70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        scopes = [s for s in form.get("scope", "").split() if s not in _RESERVED_SCOPES]
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return self._error(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {form.get('scope', '')} is not valid. Client "
                "credential flows must have a scope value with /.default suffixed to the "
                "resource identifier (application ID URI).",
            )
        secret = form.get("client_secret") or basic_secret
        assertion = form.get("client_assertion")
        if assertion is not None:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                return self._error(
                    400, "invalid_request", 50027,
                    "Invalid client_assertion_type: expected " + ASSERTION_TYPE + ".",
                )
            problem = self._assertion_problem(assertion, tenant)
            if problem is not None:
                return self._error(401, "invalid_client", *problem)
            by_certificate = True
        elif secret is not None:
            if not secrets.compare_digest(secret.encode(), self.client_secret.encode()):
                return self._error(
                    401, "invalid_client", 7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the "
                    f"request is the client secret value, not the client secret ID, for a "
                    f"secret added to app '{self.client_id}'.",
                )
            by_certificate = False
        else:
            return self._error(
                401, "invalid_client", 7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        audience = scopes[0][: -len("/.default")]
        token = self.tokens.issue(self.tenant_id, client_id, audience, by_certificate)
        return self._json({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": token,
        })

    def _assertion_problem(self, assertion: str, tenant: str) -> tuple[int, str] | None:
        """(AADSTS code, description) of what is wrong with a client assertion, or None."""
        parts = assertion.split(".")
        try:
            if len(parts) != 3:
                raise ValueError("not a JWS")
            header = json.loads(_unb64url(parts[0]))
            claims = json.loads(_unb64url(parts[1]))
            signature = _unb64url(parts[2])
            if not isinstance(header, dict) or not isinstance(claims, dict):
                raise ValueError("not JSON objects")
        except (ValueError, binascii.Error):
            return 50012, "Client assertion is not a valid JWT."
        if not self._signature_valid(header, f"{parts[0]}.{parts[1]}".encode(), signature):
            return 700027, "Client assertion failed signature validation."
        token_endpoints = {
            f"{self.base_url}/{tenant}/oauth2/v2.0/token",
            f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token",
        }
        if claims.get("aud") not in token_endpoints:
            return 700212, (
                "No matching federated identity record found for presented assertion audience "
                f"'{claims.get('aud')}'."
            )
        if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            return 700023, "Client assertion audience claim does not match Realm issuer."
        now = time.time()
        try:
            expires = float(claims["exp"])
            not_before = float(claims.get("nbf") or claims.get("iat") or now)
        except (KeyError, TypeError, ValueError):
            return 50012, "Client assertion contains an invalid exp or nbf claim."
        if expires < now or not_before > now + 300:
            return 700024, "Client assertion is not within its valid time range."
        return None

    def _signature_valid(self, header: dict[str, Any], signed: bytes, signature: bytes) -> bool:
        certificate = self.certificate
        for name, digest in (("x5t#S256", hashes.SHA256()), ("x5t", hashes.SHA1())):
            given = header.get(name)  # base64url, with or without padding (MSAL keeps it)
            if given is not None and str(given).rstrip("=") != _b64url(
                certificate.fingerprint(digest)
            ):
                return False
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        algorithm = header.get("alg")
        scheme: padding.AsymmetricPadding
        if algorithm == "RS256":
            scheme = padding.PKCS1v15()
        elif algorithm == "PS256":
            scheme = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        else:
            return False
        try:
            key.verify(signature, signed, scheme, hashes.SHA256())
        except InvalidSignature:
            return False
        return True

    # --- answers ------------------------------------------------------------------------------

    def _json(self, payload: dict[str, Any], status: int = 200) -> Reply:
        return Reply(status, dumps(payload), PLAIN_JSON, _login_headers())

    def _unknown_tenant(self, tenant: str, error: str) -> Reply:
        return self._error(
            400, error, 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud. Check with your subscription "
            "administrator, this may happen if there are no active subscriptions for the "
            "tenant.",
        )

    def _error(self, status: int, error: str, code: int, description: str) -> Reply:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = utc_now().strftime("%Y-%m-%d %H:%M:%SZ")
        return self._json(
            {
                "error": error,
                "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
                f"Correlation ID: {correlation} Timestamp: {stamp}",
                "error_codes": [code],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"{self.base_url}/error?code={code}",
            },
            status,
        )

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.kind == "drop":
            return Reply(transport="drop")
        if fault.kind == "html":
            return Reply(500, html_error_page(500, "Internal server error."), HTML)
        if fault.kind == "truncate":
            reply = self._json({"error": "temporarily_unavailable"}, 503)
            reply.transport = "truncate"
            return reply
        status, _, _ = STATUS_FAULTS.get(fault.kind, (500, "", ""))
        reply = self._error(
            status, "temporarily_unavailable" if status >= 429 else "invalid_client", 90033,
            "A transient error has occurred. Please try again.",
        )
        reply.headers.update(fault.retry_after_header())
        return reply


def _login_headers() -> dict[str, str]:
    return {
        "Cache-Control": "no-store, no-cache",
        "Pragma": "no-cache",
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-ests-server": "2.1.18000.9 - NEULR1 ProdSlices",
    }


def _basic_auth(header: str | None) -> tuple[str | None, str | None]:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (ValueError, binascii.Error):
        return None, None
    return unquote(user), unquote(password)


class LoginServer(LoopbackFake):
    """:class:`EntraLogin` served over HTTPS on loopback."""

    _name = "graph-login"

    def __init__(self, login: EntraLogin, ssl_context: ssl.SSLContext, host: str, port: int):
        super().__init__(host, port)
        self.login = login
        self.ssl_context = ssl_context
        login.wait = self.wait

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _LoginHandler

    def _server_class(self) -> type[TrackingHTTPServer[Any]]:
        return TlsHTTPServer

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``."""
        return f"https://{self.host}:{self.port}"

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds`` (cut short when the server stops)."""
        return self._stopping.wait(seconds)


class _LoginHandler(QuietHandler):
    """Reads a request, lets :class:`EntraLogin` answer it."""

    server_version = "Microsoft-IIS/10.0"
    verbs = frozenset({"GET", "POST"})
    server: TrackingHTTPServer[LoginServer]

    def serve(self, verb: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        fake = self.server.fake
        try:
            reply = fake.login.handle(verb, self.path, self.headers, body)
        except Exception as exc:  # a bug in the fake must not hang the client
            reply = Reply(500, dumps({"error": f"fake server bug: {exc!r}"}), PLAIN_JSON)
        self.write_reply(reply)


def thumbprint_sha1(certificate: x509.Certificate) -> str:
    """The certificate's SHA-1 thumbprint in hex (what the Azure portal shows)."""
    return certificate.fingerprint(hashes.SHA1()).hex().upper()
