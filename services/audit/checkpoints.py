"""Signed checkpoints: Ed25519 signatures over every chain head of a tenant, and the check
that an archive extends them.

Kept as one module: the checkpoint format, its signature and the extension check must
agree byte for byte; docs/spec/event-log.md is their normative twin.

A hash chain only proves internal consistency: whoever rewrites a campaign from its first
event and re-hashes everything gets a chain that verifies. A checkpoint pins each chain's head
``(seq, hash)`` at a moment, signed with the platform's key; an auditor who kept it can later
prove an archive still contains exactly those events (docs/spec/event-log.md, "Checkpoints").

Pure: no Kafka, no clock (``made_at`` is passed in); the checkpointer process
(``services.audit.checkpointer``) does the I/O.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.canonical import dumps, format_timestamp
from schemas.events import EVENT_TYPES

__all__ = [
    "CHECKPOINTS_FILE",
    "FORMAT",
    "REASONS",
    "Checkpoint",
    "CheckpointError",
    "HeadTracker",
    "archive_heads",
    "check_archive",
    "extension_findings",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "load_signed",
    "read_checkpoints",
    "sign_checkpoint",
    "write_checkpoints",
]

FORMAT = "pledgeflow-checkpoint"
VERSION = 1
#: The archive's file of checkpoints (one canonical checkpoint per line).
CHECKPOINTS_FILE = "checkpoints.jsonl"
#: Why a checkpoint was made.
REASONS = ("interval", "campaign_closed", "campaign_settled", "manual")
#: Events after which the checkpointer signs the campaign's tenant at once.
_TRIGGERS = {"CampaignClosed": "campaign_closed", "CampaignSettled": "campaign_settled"}


class CheckpointError(ValueError):
    """A checkpoint or key that cannot be used (malformed, wrong format): one line saying why."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key (names the key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement: "these are the heads of tenant T's chains at ``made_at``"."""

    tenant_id: str
    made_at: str
    reason: str
    key_id: str
    #: ``(campaign_id, stream, seq, hash)``, sorted by campaign id then stream.
    chains: tuple[tuple[str, str, int, str], ...]
    signature: str = ""

    def body(self) -> dict[str, Any]:
        """The signed members (everything but ``signature``)."""
        return {
            "chains": [
                {"campaign_id": c, "hash": h, "seq": s, "stream": st} for c, st, s, h in self.chains
            ],
            "format": FORMAT,
            "key_id": self.key_id,
            "made_at": self.made_at,
            "reason": self.reason,
            "tenant_id": self.tenant_id,
            "version": VERSION,
        }

    def message(self) -> bytes:
        """The signed bytes: the canonical JSON of :meth:`body`."""
        return dumps(self.body())

    @property
    def checkpoint_id(self) -> str:
        """First 16 hex digits of SHA-256 over the signed bytes (names the checkpoint)."""
        return hashlib.sha256(self.message()).hexdigest()[:16]

    def encode(self) -> bytes:
        """The canonical line (the Kafka value and the archive line)."""
        return dumps({**self.body(), "signature": self.signature})

    def describe(self) -> str:
        return f"checkpoint {self.checkpoint_id} (tenant {self.tenant_id!r}, made {self.made_at})"

    def verify(self, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
        """None when the signature verifies with the key it names, else why not."""
        key = keys.get(self.key_id)
        if key is None:
            return f"signed with key {self.key_id}, which is not among the given public keys"
        try:
            key.verify(base64.b64decode(self.signature, validate=True), self.message())
        except (InvalidSignature, ValueError):
            return f"signature does not verify with key {self.key_id}"
        return None

    @classmethod
    def parse(cls, data: bytes | str) -> Checkpoint:
        """A checkpoint line; :class:`CheckpointError` names the bad member."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(f"malformed JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CheckpointError(f"format: not {FORMAT!r}")
        if raw.get("version") != VERSION:
            raise CheckpointError(f"version: unsupported {raw.get('version')!r}")
        for name in ("tenant_id", "made_at", "reason", "key_id", "signature"):
            if not isinstance(raw.get(name), str):
                raise CheckpointError(f"{name}: missing or not a string")
        chains = raw.get("chains")
        if not isinstance(chains, list):
            raise CheckpointError("chains: missing or not a list")
        heads: list[tuple[str, str, int, str]] = []
        for i, item in enumerate(chains):
            if not (
                isinstance(item, dict) and isinstance(item.get("campaign_id"), str)
                and isinstance(item.get("stream"), str) and type(item.get("seq")) is int
                and isinstance(item.get("hash"), str)
            ):  # fmt: skip
                raise CheckpointError(f"chains[{i}]: needs campaign_id, stream, seq, hash")
            heads.append((item["campaign_id"], item["stream"], item["seq"], item["hash"]))
        return cls(
            raw["tenant_id"], raw["made_at"], raw["reason"], raw["key_id"], tuple(heads),
            raw["signature"],
        )  # fmt: skip


def sign_checkpoint(
    private_key: Ed25519PrivateKey,
    tenant_id: str,
    heads: Mapping[tuple[str, str], tuple[int, str]],
    made_at: datetime,
    reason: str,
) -> Checkpoint:
    """Sign ``heads`` (``(campaign_id, stream) -> (seq, hash)``) of one tenant."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    # Python orders str by code point, as the spec sorts campaign ids.
    chains = tuple(sorted((c, s, seq, h) for (c, s), (seq, h) in heads.items()))
    unsigned = Checkpoint(
        tenant_id, format_timestamp(made_at), reason, key_id(private_key.public_key()), chains
    )
    signature = base64.b64encode(private_key.sign(unsigned.message())).decode()
    return replace(unsigned, signature=signature)


# --- keys ----------------------------------------------------------------------------------


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PKCS#8 PEM file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path}: not an Ed25519 key")
    return key


def load_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Ed25519 public keys (SubjectPublicKeyInfo PEM files) by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: not a readable PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError(f"{path}: not an Ed25519 key")
        keys[key_id(key)] = key
    return keys


def public_pem(private_key: Ed25519PrivateKey) -> bytes:
    """The public half as SubjectPublicKeyInfo PEM (what is published)."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- heads ---------------------------------------------------------------------------------


@dataclass
class HeadTracker:
    """Every chain's head and every campaign's tenant, from stored envelopes in any order.

    Events of one campaign arrive on different topics, so a later seq may be seen first: the
    head is the highest seq seen (each event seen is committed, so its hash is a fact).
    """

    heads: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    tenants: dict[str, str] = field(default_factory=dict)
    #: Tenants with a head that moved since :meth:`take_dirty`.
    dirty: set[str] = field(default_factory=set)
    #: Chains seen before their campaign's tenant was known (the launch is on another topic).
    _orphans: dict[str, set[str]] = field(default_factory=dict)
    #: A close or settlement seen before its campaign's tenant was known: fired at the launch.
    _pending: dict[str, str] = field(default_factory=dict)

    def feed(self, value: bytes) -> tuple[str, str] | None:
        """Take one stored envelope; ``(tenant, reason)`` when it closes or settles a campaign
        of a known tenant. Unreadable values are ignored (verify names them)."""
        try:
            raw = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(raw, dict):
            return None
        cid, stream, seq, digest = (raw.get(k) for k in ("campaign_id", "stream", "seq", "hash"))
        if not (
            isinstance(cid, str) and isinstance(stream, str) and type(seq) is int
            and isinstance(digest, str)
        ):  # fmt: skip
            return None
        event_type = raw.get("event_type")
        if event_type == "CampaignLaunched":
            payload = raw.get("payload")
            tenant = payload.get("tenant_id") if isinstance(payload, dict) else None
            if isinstance(tenant, str) and cid not in self.tenants:
                self.tenants[cid] = tenant
                if self._orphans.pop(cid, None) is not None:
                    self.dirty.add(tenant)
        head = self.heads.get((cid, stream))
        if head is None or seq > head[0]:
            self.heads[(cid, stream)] = (seq, digest)
            tenant = self.tenants.get(cid)
            if tenant is None:
                self._orphans.setdefault(cid, set()).add(stream)
            else:
                self.dirty.add(tenant)
        tenant = self.tenants.get(cid)
        reason = _TRIGGERS.get(event_type) if isinstance(event_type, str) else None
        if tenant is None:
            if reason is not None and self._pending.get(cid) != "campaign_settled":
                self._pending[cid] = reason
            return None
        reasons = {r for r in (self._pending.pop(cid, None), reason) if r is not None}
        if not reasons:
            return None
        return tenant, "campaign_settled" if "campaign_settled" in reasons else reasons.pop()

    def of_tenant(self, tenant: str) -> dict[tuple[str, str], tuple[int, str]]:
        """The heads of every chain of ``tenant``'s campaigns (all streams)."""
        return {k: v for k, v in self.heads.items() if self.tenants.get(k[0]) == tenant}

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty


# --- archives ------------------------------------------------------------------------------


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """A JSON Lines file of checkpoints; :class:`CheckpointError` names the bad line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    found: list[Checkpoint] = []
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                found.append(Checkpoint.parse(line))
            except CheckpointError as exc:
                raise CheckpointError(f"{path}:{number}: {exc}") from None
    return found


def write_checkpoints(path: Path, checkpoints: Iterable[Checkpoint]) -> str:
    """Write (atomically) one canonical line per distinct checkpoint, oldest first; return the
    file's SHA-256."""
    unique = {c.checkpoint_id: c for c in checkpoints}
    ordered = sorted(unique.values(), key=lambda c: (c.made_at, c.tenant_id, c.checkpoint_id))
    data = b"".join(c.encode() + b"\n" for c in ordered)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def archive_heads(
    lines: Iterator[bytes], wanted: set[tuple[str, str, int]]
) -> tuple[dict[tuple[str, str, int], str], dict[tuple[str, str], int]]:
    """From an archive's lines: the hash stored at each wanted ``(campaign, stream, seq)`` and
    the last seq of every chain."""
    found: dict[tuple[str, str, int], str] = {}
    last: dict[tuple[str, str], int] = {}
    for line in lines:
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(raw, dict):
            continue
        cid, stream, seq, digest = (raw.get(k) for k in ("campaign_id", "stream", "seq", "hash"))
        if isinstance(cid, str) and isinstance(stream, str) and type(seq) is int:
            last[(cid, stream)] = max(last.get((cid, stream), 0), seq)
            if (cid, stream, seq) in wanted and isinstance(digest, str):
                found[(cid, stream, seq)] = digest
    return found, last


def stream_topics_covered(topics: Iterable[str], prefix: str) -> set[str]:
    """The streams whose every event topic is in ``topics`` (a narrowed export misses some)."""
    chosen = set(topics)
    streams: dict[str, bool] = {}
    for name, model in EVENT_TYPES.items():
        streams[model.stream] = streams.get(model.stream, True) and prefix + name in chosen
    return {stream for stream, complete in streams.items() if complete}


def extension_findings(
    checkpoints: Iterable[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    stored: Mapping[tuple[str, str, int], str],
    last: Mapping[tuple[str, str], int],
    *,
    tenant: str | None = None,
    campaign: str | None = None,
    streams: set[str] | None = None,
) -> tuple[list[str], int]:
    """Why the archive does not extend each signed head (empty when it does), and how many
    heads were checked. A head is in scope unless the archive was narrowed away from it
    (another tenant, another campaign, a stream whose topics were not exported)."""
    problems: list[str] = []
    checked = 0
    for checkpoint in checkpoints:
        bad = checkpoint.verify(keys)
        if bad is not None:
            problems.append(f"{checkpoint.describe()}: {bad}")
            continue
        if tenant is not None and checkpoint.tenant_id != tenant:
            continue
        for cid, stream, seq, digest in checkpoint.chains:
            if campaign is not None and cid != campaign:
                continue
            if streams is not None and stream not in streams:
                continue
            checked += 1
            have = stored.get((cid, stream, seq))
            if have == digest:
                continue
            where = f"campaign {cid!r} stream {stream!r}"
            if have is None:
                ends = last.get((cid, stream))
                held = "no event of that chain" if ends is None else f"the chain ends at {ends}"
                problems.append(
                    f"{checkpoint.describe()}: {where}: signed seq {seq} hash {digest[:16]}…, "
                    f"the archive has {held}"
                )
            else:
                problems.append(
                    f"{checkpoint.describe()}: {where}: signed seq {seq} hash {digest[:16]}…, "
                    f"the archive has hash {have[:16]}… there (history rewritten)"
                )
    return problems, checked


def check_archive(
    folder: Path, checkpoints: list[Checkpoint], keys: Mapping[str, Ed25519PublicKey]
) -> tuple[list[str], int]:
    """:func:`extension_findings` of an archive folder, in the scope its manifest declares."""
    from services.audit.archive import Manifest, read_lines

    manifest = Manifest.load(folder)
    wanted = {(c, s, seq) for cp in checkpoints for c, s, seq, _ in cp.chains}

    def lines() -> Iterator[bytes]:
        for segment in manifest.segments:
            for chunk in read_lines(folder / segment.name):
                yield from chunk

    stored, last = archive_heads(lines(), wanted)
    return extension_findings(
        checkpoints, keys, stored, last, tenant=manifest.tenant, campaign=manifest.campaign,
        streams=stream_topics_covered(manifest.topics, manifest.topic_prefix),
    )  # fmt: skip


def load_signed(
    paths: Iterable[Path], key_paths: Iterable[Path]
) -> tuple[list[Checkpoint], dict[str, Ed25519PublicKey]]:
    """The checkpoints of every file and the public keys by id (what :func:`check_archive`
    takes); :class:`CheckpointError` names the unreadable file or line."""
    keys = load_public_keys(key_paths)
    return [c for path in paths for c in read_checkpoints(path)], keys
