"""How every Kafka client of every process authenticates (one setting, one mapping).

``PLEDGEFLOW_KAFKA_SECURITY_PROTOCOL`` is ``PLAINTEXT`` (local, dev, tests: no extra client
arguments) or ``SASL_SSL`` (prod: SCRAM-SHA-512 over TLS against the Strimzi listener on 9093,
trusting the cluster CA from ``PLEDGEFLOW_KAFKA_CA_FILE``). Every client creation site passes
:func:`kafka_client_kwargs` (aiokafka) or :func:`faust_broker_credentials` (faust), so no
client is left on the unauthenticated default when the setting says SASL_SSL.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "KafkaSecurity",
    "KafkaSecurityError",
    "faust_broker_credentials",
    "kafka_client_kwargs",
]


_SASL = "PLEDGEFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL"


class KafkaSecurityError(ValueError):
    """The Kafka security settings cannot make a client (message: one line naming the field)."""


class KafkaSecurity(BaseSettings):
    """``PLEDGEFLOW_KAFKA_*`` client security; the default is plaintext, unauthenticated."""

    model_config = SettingsConfigDict(env_prefix="PLEDGEFLOW_KAFKA_", extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    #: PEM file of the CA that signed the brokers' certificates (the Strimzi cluster CA).
    ca_file: str = ""

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting only ``ca_file`` (hostname checked)."""
        if not self.ca_file:
            raise KafkaSecurityError(f"PLEDGEFLOW_KAFKA_CA_FILE is required when {_SASL}")
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(
                f"PLEDGEFLOW_KAFKA_CA_FILE={self.ca_file!r} is not a readable PEM CA file: {exc}"
            ) from None

    def _check_credentials(self) -> None:
        for env, value in (
            ("PLEDGEFLOW_KAFKA_SASL_USERNAME", self.sasl_username),
            ("PLEDGEFLOW_KAFKA_SASL_PASSWORD", self.sasl_password.get_secret_value()),
        ):
            if not value:
                raise KafkaSecurityError(f"{env} is required when {_SASL}")


def kafka_client_kwargs(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """Extra keyword arguments for ``AIOKafkaProducer/Consumer/AdminClient`` (none if plaintext).

    ``security`` defaults to the process environment, so helpers that only receive a bootstrap
    address still honour the one shared setting.
    """
    s = security if security is not None else KafkaSecurity()
    if s.security_protocol == "PLAINTEXT":
        return {}
    s._check_credentials()
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": s.sasl_mechanism,
        "sasl_plain_username": s.sasl_username,
        "sasl_plain_password": s.sasl_password.get_secret_value(),
        "ssl_context": s.ssl_context(),
    }


def faust_broker_credentials(security: KafkaSecurity | None = None) -> Any:
    """faust's ``broker_credentials`` (``None`` if plaintext, else SCRAM over TLS)."""
    s = security if security is not None else KafkaSecurity()
    if s.security_protocol == "PLAINTEXT":
        return None
    s._check_credentials()
    import faust

    return faust.SASLCredentials(
        username=s.sasl_username,
        password=s.sasl_password.get_secret_value(),
        ssl_context=s.ssl_context(),
        mechanism=s.sasl_mechanism,
    )
