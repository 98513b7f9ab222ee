"""A fake Microsoft Entra ID token endpoint on localhost, over TLS, for the real azure-identity.

azure-identity only sends a client secret to an https authority, so the fake serves a certificate
of its own (`ca_file` is the file a client trusts it by). Point a credential at it with
AZURE_AUTHORITY_HOST=`authority`: a ClientSecretCredential (or DefaultAzureCredential's
environment credential) posts the client-credentials grant to `/<tenant>/oauth2/v2.0/token`, and
gets an access token for the scope it asked for, or, for a wrong client or secret, the 401 Entra
answers with (AADSTS7000215 / AADSTS700016), whose description never holds the secret.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from tests.fakes.strict import Strict, checked

TENANT = "00000000-0000-0000-0000-00000000beef"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "fake-entra-client-secret-value"


def self_signed(host: str, folder: Path) -> tuple[str, str]:
    """A certificate for `host`, its own issuer, and its key: (certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{host}-cert.pem", folder / f"{host}-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


class FakeEntra(Strict):
    def __init__(self, folder: Path) -> None:
        self.ca_file, self._key_file = self_signed("localhost", folder)
        self.client_secret = CLIENT_SECRET
        self.issued: dict[str, str] = {}  # access token -> the scope it was issued for
        self.grants: list[dict[str, str]] = []  # every grant posted, the secret left out
        self.violations: list[str] = []
        self.violations_expected = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> FakeEntra:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        context = server_context(self.ca_file, self._key_file)
        await web.TCPSite(self._runner, "localhost", 0, ssl_context=context).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def server_context(self) -> ssl.SSLContext:
        """The fake's certificate, for another fake served at localhost to be trusted alike."""
        return server_context(self.ca_file, self._key_file)

    @property
    def authority(self) -> str:
        return f"https://localhost:{self.port}"

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        tenant = request.match_info["tenant"]
        self.grants.append({k: str(v) for k, v in form.items() if k != "client_secret"})
        if form.get("grant_type") != "client_credentials" or not str(form.get("scope", "")).endswith(
            "/.default"
        ):
            return _refusal(
                400, "invalid_request", self.refuse(f"not a client-credentials grant for a scope: {form}")
            )
        if tenant != TENANT:
            return _refusal(400, "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("client_id") != CLIENT_ID:
            return _refusal(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not found in "
                f"the directory '{tenant}'.",
            )
        if form.get("client_secret") != self.client_secret:
            return _refusal(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                "request is the client secret value, not the client secret ID, for a secret added to "
                f"app '{CLIENT_ID}'.",
            )
        token = "fake-entra-token-" + secrets.token_hex(8)
        self.issued[token] = str(form["scope"])
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        )


def _refusal(status: int, error: str, description: str) -> web.Response:
    trace = "\r\nTrace ID: 0f0f0f0f-0000-0000-0000-000000000000\r\nCorrelation ID: 1e1e1e1e"
    return web.json_response(
        {
            "error": error,
            "error_description": description + trace,
            "error_codes": [int(re.match(r"AADSTS(\d+)", description)[1])],
        },
        status=status,
    )


@contextlib.asynccontextmanager
async def running_fake_entra(folder: Path) -> AsyncIterator[FakeEntra]:
    async with checked(await FakeEntra(folder).start()) as fake:
        yield fake
