"""The testbed's PKI: one CA, the API server's serving certificate, client certificates by identity
(the common name is the user, the organizations its groups), and the service-account signing key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)
_CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "discord-ml-testbed-ca")])


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    plain = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, plain)


@dataclass(frozen=True)
class Pki:
    """Where the files are: `ca.crt`/`ca.key`, `<name>.crt`/`<name>.key` per certificate, `sa.key`/`sa.pub`."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def issue(self, name: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> None:
        """A certificate `name` signed by the CA."""
        ca_key = serialization.load_pem_private_key((self.root / "ca.key").read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(_CA_NAME)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        self.cert(name).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        self.key(name).write_bytes(_key_pem(key))

    def issue_client(self, name: str, user: str, groups: list[str]) -> None:
        """A client certificate: the API server reads the user from its CN, the groups from its O."""
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        self.issue(name, x509.Name(subject), ExtendedKeyUsageOID.CLIENT_AUTH, [])


def make_pki(root: Path, *, hosts: list[str], clients: dict[str, tuple[str, list[str]]]) -> Pki:
    """A CA, a serving certificate `apiserver` for `hosts` (IPs or DNS names), one client certificate
    per entry of `clients` (file name -> (user, groups)), and the service-account key pair."""
    root.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_CA_NAME)
        .issuer_name(_CA_NAME)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(root)
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "ca.key").write_bytes(_key_pem(ca_key))
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    pki.issue("apiserver", server, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    for name, (user, groups) in clients.items():
        pki.issue_client(name, user, groups)
    # Service-account tokens are signed with an RSA key (RS256).
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (root / "sa.key").write_bytes(_key_pem(sa_key))
    public = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (root / "sa.pub").write_bytes(public)
    return pki
