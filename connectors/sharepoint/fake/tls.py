"""Certificates for the fake login endpoint, made with ``cryptography`` when the fake is built:

- a throwaway CA (EC P-256) and a server certificate it signs for ``127.0.0.1``/``localhost``
  (clients trust the CA's PEM, ``FakeGraph.ca_file``);
- the app's client certificate (RSA 2048, self-signed) whose PEM, private key included, is what
  azure-identity's ``CertificateCredential`` takes (``FakeGraph.certificate_pem``).

:class:`TlsHTTPServer` is the tracking HTTP server with every accepted connection wrapped in
TLS; the handshake happens in the connection's own thread.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from syncd.connectors.fakehttp import TrackingHTTPServer

_VALIDITY = datetime.timedelta(days=30)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "syncd fake Entra ID"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class ServerCertificates:
    """The CA's certificate (what clients trust) and the server's certificate and key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def generate(cls, host: str = "127.0.0.1") -> ServerCertificates:
        """A fresh CA and a server certificate for ``host``, ``127.0.0.1`` and ``localhost``."""
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("syncd fake Graph CA")
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        addresses = {"127.0.0.1", host}
        for address in sorted(addresses):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                names.append(x509.DNSName(address))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("127.0.0.1")).issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cls(
            ca.public_bytes(serialization.Encoding.PEM),
            cert.public_bytes(serialization.Encoding.PEM),
            _pem(key),
        )

    def context(self, directory: Path) -> ssl.SSLContext:
        """A server-side TLS context (the chain and key are written to ``directory``, which
        ``load_cert_chain`` needs)."""
        chain = directory / "server-chain.pem"
        key = directory / "server-key.pem"
        chain.write_bytes(self.cert_pem + self.ca_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(chain, key)
        return context


@dataclass(frozen=True)
class ClientCertificate:
    """The app's certificate: ``pem`` holds the private key then the certificate."""

    pem: bytes
    certificate: x509.Certificate

    @classmethod
    def generate(cls, common_name: str = "syncd-sharepoint-app") -> ClientCertificate:
        """A fresh self-signed RSA 2048 certificate."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        subject = _name(common_name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        return cls(_pem(key) + certificate.public_bytes(serialization.Encoding.PEM), certificate)


class HasSSLContext(Protocol):
    """What a TLS server's fake offers."""

    @property
    def ssl_context(self) -> ssl.SSLContext: ...


class TlsHTTPServer(TrackingHTTPServer[Any]):
    """The tracking server over TLS: ``fake.ssl_context`` wraps each accepted connection."""

    handshake_timeout = 10.0

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection and wrap it (the handshake waits for the handler thread)."""
        connection, address = super().get_request()
        context: ssl.SSLContext = self.fake.ssl_context
        wrapped = context.wrap_socket(
            connection, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake in the connection's thread, then serve it."""
        request.settimeout(self.handshake_timeout)
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return  # a client that does not trust us, or a port scan
        request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that vanish or break TLS; report the rest."""
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)
