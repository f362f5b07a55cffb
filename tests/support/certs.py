"""Throwaway certificates for TLS tests: a CA, a server cert for 127.0.0.1/localhost, a client cert.

Generated with the `cryptography` package (EC P-256 keys: fast to make), written as PEM files
into a folder, valid from a minute ago for one day. Nothing here is fit for real use.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class CertFiles:
    """Paths of the PEM files of one throwaway PKI."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must fail


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
             ) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(_name(subject)).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + VALIDITY))


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = (_builder(common_name, _name(common_name), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _make_leaf(common_name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
               usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
               ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (_builder(common_name, ca.subject, key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None,
           key_path: Path | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None and key_path is not None:
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        key_path.chmod(0o600)


def make_certs(folder: Path) -> CertFiles:
    """Write a CA, a server cert (127.0.0.1, ::1, localhost) and a client cert into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _make_ca("taskgrid test CA")
    other_ca, _ = _make_ca("taskgrid unrelated CA")
    server, server_key = _make_leaf(
        "localhost", ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
         x509.IPAddress(ipaddress.ip_address("::1"))])
    client, client_key = _make_leaf("taskgrid test client", ca, ca_key,
                                    ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = CertFiles(ca=folder / "ca.pem", server_cert=folder / "server.pem",
                      server_key=folder / "server.key", client_cert=folder / "client.pem",
                      client_key=folder / "client.key", other_ca=folder / "other-ca.pem")
    _write(files.ca, ca)
    _write(files.other_ca, other_ca)
    _write(files.server_cert, server, server_key, files.server_key)
    _write(files.client_cert, client, client_key, files.client_key)
    return files
