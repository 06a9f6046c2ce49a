"""A private Kafka broker secured like production: SCRAM-SHA-512 over TLS, ACLs enforced.

The prod overlay runs Strimzi with a TLS + SCRAM-SHA-512 listener and ``simple``
authorization; each process is a ``KafkaUser`` whose ACLs ``pledgeflow deploy render`` writes to
``deploy/k8s/overlays/prod/kafka-users.yaml``. This broker reproduces that from the same jars
as the local one: a ``SASL_SSL`` listener (certificate from a throwaway CA with the loopback
address as SAN), ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``, SCRAM
users created at format time (``--add-scram``, like Strimzi's user operator would) and the
ACLs of the rendered ``KafkaUser`` documents applied by the Kafka Admin client
(``kafka_acls/CreateAcls.java``). ``ANONYMOUS`` is a super user only because the KRaft
controller listener of this one-node cluster is plaintext (the broker registers through it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from services.streams.kafka_security import KafkaSecurity
from tests.support.api import free_port
from tests.support.infra import KAFKA_DIR, REPO

__all__ = ["ADMIN", "AclBinding", "SecuredBroker", "acl_bindings", "rendered_kafka_users"]

ADMIN = "pledgeflow-admin"
KAFKA_USERS_YAML = REPO / "deploy" / "k8s" / "overlays" / "prod" / "kafka-users.yaml"
_CREATE_ACLS = Path(__file__).parent / "kafka_acls" / "CreateAcls.java"
#: Strimzi ``simple`` ACL resource types and pattern types, as Kafka's Admin API names them.
_RESOURCE_TYPES = {
    "topic": "TOPIC",
    "group": "GROUP",
    "transactionalId": "TRANSACTIONAL_ID",
    "cluster": "CLUSTER",
}
_PATTERNS = {"literal": "LITERAL", "prefix": "PREFIXED"}

#: (principal, resource type, resource name, pattern type, operation), all ALLOW from any host.
AclBinding = tuple[str, str, str, str, str]


def rendered_kafka_users(path: Path = KAFKA_USERS_YAML) -> list[dict[str, Any]]:
    """The ``KafkaUser`` documents of the prod overlay, as rendered on disk."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d.get("kind") == "KafkaUser"]


def acl_bindings(user: dict[str, Any]) -> list[AclBinding]:
    """What Strimzi's user operator creates for one ``KafkaUser``'s ``simple`` ACLs."""
    principal = f"User:{user['metadata']['name']}"
    bindings: list[AclBinding] = []
    for acl in user["spec"]["authorization"]["acls"]:
        if acl.get("type", "allow") != "allow" or acl.get("host", "*") != "*":
            raise ValueError(f"only allow-from-any-host ACLs are translated: {acl!r}")
        resource = acl["resource"]
        kind = _RESOURCE_TYPES[resource["type"]]
        name = "kafka-cluster" if kind == "CLUSTER" else resource["name"]
        pattern = _PATTERNS[resource.get("patternType", "literal")]
        operations = acl.get("operations") or [acl["operation"]]
        for operation in operations:
            # Strimzi spells operations in CamelCase (DescribeConfigs), Kafka in DESCRIBE_CONFIGS.
            upper = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).upper()
            bindings.append((principal, kind, name, pattern, upper))
    return bindings


def _certificates(folder: Path) -> tuple[Path, Path]:
    """A throwaway CA (``ca.pem``) and the broker's key + chain (``broker.pem``) for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pledgeflow test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, broker_file = folder / "ca.pem", folder / "broker.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    broker_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca.public_bytes(pem)
    )
    return ca_file, broker_file


class SecuredBroker:
    """One-node KRaft broker with a SASL_SSL (SCRAM-SHA-512) listener and enforced ACLs."""

    def __init__(self, data: Path, users: list[str]) -> None:
        self.data = data
        self.port, self.controller_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        #: Every user's password, the super user's included.
        self.passwords = {name: secrets.token_hex(16) for name in [ADMIN, *users]}
        self.ca_file = Path()
        self._proc: subprocess.Popen[bytes] | None = None

    def security(self, user: str) -> KafkaSecurity:
        """The client settings a process running as ``user`` gets in prod."""
        return KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_username=user,
            sasl_password=SecretStr(self.passwords[user]),
            ca_file=str(self.ca_file),
        )

    def env(self, user: str) -> dict[str, str]:
        """The ``PLEDGEFLOW_KAFKA_*`` environment of a process running as ``user``."""
        return {
            "PLEDGEFLOW_KAFKA_BOOTSTRAP": self.bootstrap,
            "PLEDGEFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PLEDGEFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PLEDGEFLOW_KAFKA_SASL_USERNAME": user,
            "PLEDGEFLOW_KAFKA_SASL_PASSWORD": self.passwords[user],
            "PLEDGEFLOW_KAFKA_CA_FILE": str(self.ca_file),
        }

    def _jvm(self) -> list[str]:
        return [
            "java",
            "-Xmx512m",
            "-Xms256m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.data / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.data / 'logs'}",
            "-cp",
            f"{KAFKA_DIR / 'lib'}/*",
        ]

    def _properties(self, broker_pem: Path) -> str:
        base = (KAFKA_DIR / "server.properties").read_text()
        base = base.replace("@@CONTROLLER_PORT@@", str(self.controller_port))
        kept = [
            line
            for line in base.splitlines()
            if line.strip()
            and not line.startswith("#")
            and not line.split("=", 1)[0].endswith(("listeners", "listener.name", "protocol.map"))
            and not line.startswith("log.dirs")
        ]
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required"
        admin_jaas = f'{jaas} username="{ADMIN}" password="{self.passwords[ADMIN]}";'
        own = [
            "listeners=SASL_SSL://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners=SASL_SSL://127.0.0.1:{p}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name=SASL_SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={admin_jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={broker_pem}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca_file}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{ADMIN};User:ANONYMOUS",
            f"log.dirs={self.data / 'log'}",
        ]
        body = [*kept, *(line.format(p=self.port, c=self.controller_port) for line in own)]
        return "\n".join(body) + "\n"

    def start(self, timeout: float = 90.0) -> None:
        """Format (with every SCRAM user) and start; return once the admin user is served."""
        self.data.mkdir(parents=True, exist_ok=True)
        if not (KAFKA_DIR / "lib" / ".fetched").exists():  # as kafka-up.sh does
            subprocess.run([str(KAFKA_DIR / "fetch.sh")], check=True, capture_output=True)
            (KAFKA_DIR / "lib" / ".fetched").touch()
        self.ca_file, broker_pem = _certificates(self.data)
        # The local broker's logging, plus every authorization denial (what a test reports).
        (self.data / "log4j2.yaml").write_text(
            (KAFKA_DIR / "log4j2.yaml").read_text()
            + "      - name: kafka.authorizer.logger\n        level: INFO\n"
        )
        props = self.data / "server.properties"
        props.write_text(self._properties(broker_pem))
        scram = []
        for name, password in self.passwords.items():
            scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        cluster_id = subprocess.run(
            [*self._jvm(), "kafka.tools.StorageTool", "random-uuid"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        formatted = subprocess.run(
            [*self._jvm(), "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c",
             str(props), *scram],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if formatted.returncode != 0:
            raise RuntimeError(f"formatting the secured broker failed:\n{formatted.stderr}")
        with (self.data / "broker.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [*self._jvm(), "kafka.Kafka", str(props)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not asyncio.run(self._answers()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("secured broker did not start:\n" + self.log_tail())
            time.sleep(0.2)

    async def _answers(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        try:  # not listening yet: no client (and no client error log) until it is
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()

        from services.streams.kafka_security import kafka_client_kwargs

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            request_timeout_ms=3000,
            **kafka_client_kwargs(self.security(ADMIN)),
        )
        try:
            await admin.start()
            await admin.describe_cluster()
            return True
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    def create_acls(self, bindings: list[AclBinding]) -> None:
        """Create ``bindings`` as the super user (Kafka's own Admin client)."""
        client = self.data / "admin-client.properties"
        client.write_text(
            "\n".join(
                [
                    f"bootstrap.servers={self.bootstrap}",
                    "security.protocol=SASL_SSL",
                    "sasl.mechanism=SCRAM-SHA-512",
                    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule"
                    f' required username="{ADMIN}" password="{self.passwords[ADMIN]}";',
                    "ssl.truststore.type=PEM",
                    f"ssl.truststore.location={self.ca_file}",
                ]
            )
            + "\n"
        )
        table = self.data / "acls.tsv"
        table.write_text("".join("\t".join(binding) + "\n" for binding in bindings))
        done = subprocess.run(
            [*self._jvm(), str(_CREATE_ACLS), str(client), str(table)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"CreateAcls failed:\n{done.stdout}\n{done.stderr}")

    def log_tail(self, lines: int = 60) -> str:
        log = self.data / "broker.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def authorizer_denials(self) -> list[str]:
        """Lines of the broker log where the authorizer denied something (needs INFO logs)."""
        return [line for line in self.log_tail(100_000).splitlines() if " is Denied " in line]

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
