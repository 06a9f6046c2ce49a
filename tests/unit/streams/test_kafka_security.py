"""The one Kafka client security setting and what it turns into for aiokafka and faust."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.streams.config import StreamSettings
from services.streams.kafka_security import (
    KafkaSecurity,
    KafkaSecurityError,
    faust_broker_credentials,
    kafka_client_kwargs,
)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A self-signed CA certificate in PEM, like the Strimzi cluster CA's ``ca.crt``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cluster-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _sasl(ca: Path | str, password: str = "s3cret") -> KafkaSecurity:
    return KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_username="processor",
        sasl_password=password,
        ca_file=str(ca),
    )


def test_plaintext_adds_no_client_arguments() -> None:
    assert kafka_client_kwargs(KafkaSecurity()) == {}
    assert faust_broker_credentials(KafkaSecurity()) is None


def test_sasl_ssl_gives_scram_over_tls_with_the_ca(ca_file: Path) -> None:
    kwargs = kafka_client_kwargs(_sasl(ca_file))
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "processor",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "cluster-ca"),),)]


def test_faust_gets_scram_credentials_over_tls(ca_file: Path) -> None:
    creds = faust_broker_credentials(_sasl(ca_file))
    assert creds.username == "processor"
    assert creds.password == "s3cret"
    assert str(creds.mechanism.value) == "SCRAM-SHA-512"
    assert str(creds.protocol.value) == "SASL_SSL"
    assert isinstance(creds.ssl_context, ssl.SSLContext)


def test_missing_password_with_sasl_names_the_field(ca_file: Path) -> None:
    with pytest.raises(KafkaSecurityError) as err:
        kafka_client_kwargs(_sasl(ca_file, password=""))
    assert str(err.value) == (
        "PLEDGEFLOW_KAFKA_SASL_PASSWORD is required"
        " when PLEDGEFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
    )
    with pytest.raises(KafkaSecurityError, match="PLEDGEFLOW_KAFKA_SASL_PASSWORD"):
        faust_broker_credentials(_sasl(ca_file, password=""))


def test_missing_or_unreadable_ca_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(KafkaSecurityError, match=r"^PLEDGEFLOW_KAFKA_CA_FILE is required"):
        kafka_client_kwargs(_sasl(""))
    with pytest.raises(KafkaSecurityError, match=r"^PLEDGEFLOW_KAFKA_CA_FILE=.*not a readable"):
        kafka_client_kwargs(_sasl(tmp_path / "absent.crt"))


def test_stream_settings_read_the_shared_env(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    monkeypatch.setenv("PLEDGEFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PLEDGEFLOW_KAFKA_SASL_USERNAME", "api")
    monkeypatch.setenv("PLEDGEFLOW_KAFKA_SASL_PASSWORD", "pw")
    monkeypatch.setenv("PLEDGEFLOW_KAFKA_CA_FILE", str(ca_file))
    security = StreamSettings().kafka_security
    assert security.security_protocol == "SASL_SSL"
    assert kafka_client_kwargs()["sasl_plain_username"] == "api"
    assert kafka_client_kwargs(security)["sasl_plain_password"] == "pw"
