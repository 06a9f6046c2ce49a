"""The portable archive: gzip JSON Lines segments, a sidecar index each, and ``manifest.json``.

Layout of an archive folder::

    manifest.json                          what is here and where an export resumes
    seg-000001-p000.jsonl.gz               one canonical envelope per line (gzip, one member)
    seg-000001-p000.idx.gz                 the same lines' Kafka coordinates: topic TAB offset
                                           TAB event_id (so a bad line is named by its origin)

A segment holds events of one partition number only (every campaign-keyed topic is
co-partitioned, so each campaign's chains live in one partition number): partitions are
verified independently, in parallel. Within a partition the writer puts every
(campaign, stream) chain in seq order, so an archive is verified in its stored order and a
reordered line is detected. Segments are immutable: an incremental export adds new ones; the
manifest is replaced atomically (write + rename) after the segments are on disk.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ArchiveError",
    "ArchiveWriter",
    "Manifest",
    "SegmentInfo",
    "read_index",
    "read_lines",
    "sidecar_findings",
]

FORMAT = "pledgeflow-audit-archive"
VERSION = 1
MANIFEST = "manifest.json"
#: Lines per segment before the writer starts a new one.
DEFAULT_SEGMENT_EVENTS = 200_000
_CHUNK = 1 << 20


class ArchiveError(Exception):
    """The folder is not a readable archive (missing or malformed manifest, wrong format)."""


@dataclass
class SegmentInfo:
    """One segment as the manifest records it."""

    name: str
    index_name: str
    partition: int
    events: int
    sha256: str
    index_sha256: str
    bytes: int
    #: ``topic -> [first offset, last offset]`` of the events in this segment.
    offsets: dict[str, list[int]] = field(default_factory=dict)
    export: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index_name,
            "partition": self.partition,
            "events": self.events,
            "sha256": self.sha256,
            "index_sha256": self.index_sha256,
            "bytes": self.bytes,
            "offsets": self.offsets,
            "export": self.export,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentInfo:
        return cls(
            name=data["name"],
            index_name=data["index"],
            partition=int(data["partition"]),
            events=int(data["events"]),
            sha256=data["sha256"],
            index_sha256=data["index_sha256"],
            bytes=int(data["bytes"]),
            offsets={k: list(v) for k, v in data.get("offsets", {}).items()},
            export=int(data.get("export", 1)),
        )


@dataclass
class Manifest:
    """``manifest.json``: segments, counts, resume offsets, chain heads, export times."""

    topic_prefix: str = ""
    topics: list[str] = field(default_factory=list)
    campaign: str | None = None
    partitions: int = 0
    segments: list[SegmentInfo] = field(default_factory=list)
    #: Next offset to read per topic and partition (the incremental export's cursor).
    next_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Last seq written per chain ``"<stream> <campaign id>"``: lets the next export keep
    #: every chain in seq order across runs.
    chain_heads: dict[str, int] = field(default_factory=dict)
    exports: list[dict[str, Any]] = field(default_factory=list)
    #: ``--tenant``: the archive holds only this tenant's campaigns (all their streams).
    tenant: str | None = None
    #: That tenant's campaigns seen so far (later exports admit their events).
    tenant_campaigns: list[str] = field(default_factory=list)
    #: ``{"file": "checkpoints.jsonl", "sha256": ..., "count": n}`` once checkpoints exist.
    checkpoints: dict[str, Any] | None = None

    @property
    def events(self) -> int:
        return sum(s.events for s in self.segments)

    def counts(self) -> dict[str, Any]:
        """Events per partition and per topic (from the segments)."""
        per_partition: dict[str, int] = {}
        for segment in self.segments:
            key = str(segment.partition)
            per_partition[key] = per_partition.get(key, 0) + segment.events
        return {
            "events": self.events,
            "segments": len(self.segments),
            "by_partition": per_partition,
        }

    def as_dict(self) -> dict[str, Any]:
        exported_at = self.exports[-1]["at"] if self.exports else None
        return {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": exported_at,
            "topic_prefix": self.topic_prefix,
            "topics": self.topics,
            "campaign": self.campaign,
            "tenant": self.tenant,
            "tenant_campaigns": self.tenant_campaigns,
            "partitions": self.partitions,
            "counts": self.counts(),
            "segments": [s.as_dict() for s in self.segments],
            "next_offsets": self.next_offsets,
            "chain_heads": self.chain_heads,
            "exports": self.exports,
            "checkpoints": self.checkpoints,
        }

    def save(self, folder: Path) -> None:
        """Write atomically: a reader sees the old manifest or the new one, never half."""
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_bytes(orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2))
        os.replace(tmp, folder / MANIFEST)

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """Read ``folder/manifest.json``; :class:`ArchiveError` names what is wrong."""
        path = folder / MANIFEST
        if not path.is_file():
            raise ArchiveError(f"{path}: no manifest.json (not an audit archive)")
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(f"{path}: malformed JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ArchiveError(f"{path}: format is not {FORMAT!r}")
        if data.get("version") != VERSION:
            raise ArchiveError(f"{path}: unsupported version {data.get('version')!r}")
        try:
            return cls(
                topic_prefix=data.get("topic_prefix", ""),
                topics=list(data.get("topics", [])),
                campaign=data.get("campaign"),
                partitions=int(data.get("partitions", 0)),
                segments=[SegmentInfo.from_dict(s) for s in data.get("segments", [])],
                next_offsets=data.get("next_offsets", {}),
                chain_heads=data.get("chain_heads", {}),
                exports=list(data.get("exports", [])),
                tenant=data.get("tenant"),
                tenant_campaigns=list(data.get("tenant_campaigns", [])),
                checkpoints=data.get("checkpoints"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"{path}: malformed segment entry ({exc})") from None

    def by_partition(self) -> dict[int, list[SegmentInfo]]:
        """Segments grouped by partition, each group in write order."""
        groups: dict[int, list[SegmentInfo]] = {}
        for segment in self.segments:
            groups.setdefault(segment.partition, []).append(segment)
        return groups


class _OpenSegment:
    """A segment being written: compressed as it goes, hashed as it is written."""

    def __init__(self, folder: Path, number: int, partition: int, export: int) -> None:
        self.name = f"seg-{number:06d}-p{partition:03d}.jsonl.gz"
        self.index_name = f"seg-{number:06d}-p{partition:03d}.idx.gz"
        self.partition = partition
        self.export = export
        self.events = 0
        self.offsets: dict[str, list[int]] = {}
        self._path = folder / self.name
        self._index_path = folder / self.index_name
        self._file = open(folder / f".{self.name}.tmp", "wb")  # noqa: SIM115 - closed in close()
        self._index = open(folder / f".{self.index_name}.tmp", "wb")  # noqa: SIM115
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._izip = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._sha = hashlib.sha256()
        self._isha = hashlib.sha256()
        self._bytes = 0
        self._lines: list[bytes] = []
        self._index_lines: list[bytes] = []

    def add(self, line: bytes, topic: str, offset: int, event_id: str) -> None:
        self._lines.append(line)
        self._index_lines.append(f"{topic}\t{offset}\t{event_id}".encode())
        self.events += 1
        span = self.offsets.get(topic)
        if span is None:
            self.offsets[topic] = [offset, offset]
        else:
            span[0] = min(span[0], offset)
            span[1] = max(span[1], offset)
        if len(self._lines) >= 4096:
            self._flush_buffers()

    def _write(self, data: bytes) -> None:
        self._sha.update(data)
        self._bytes += len(data)
        self._file.write(data)

    def _write_index(self, data: bytes) -> None:
        self._isha.update(data)
        self._index.write(data)

    def _flush_buffers(self) -> None:
        if self._lines:
            self._write(self._zip.compress(b"\n".join(self._lines) + b"\n"))
            self._write_index(self._izip.compress(b"\n".join(self._index_lines) + b"\n"))
            self._lines.clear()
            self._index_lines.clear()

    def close(self) -> SegmentInfo:
        self._flush_buffers()
        self._write(self._zip.flush())
        self._write_index(self._izip.flush())
        for handle in (self._file, self._index):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        folder = self._path.parent
        os.replace(folder / f".{self.name}.tmp", self._path)
        os.replace(folder / f".{self.index_name}.tmp", self._index_path)
        return SegmentInfo(
            name=self.name,
            index_name=self.index_name,
            partition=self.partition,
            events=self.events,
            sha256=self._sha.hexdigest(),
            index_sha256=self._isha.hexdigest(),
            bytes=self._bytes,
            offsets=self.offsets,
            export=self.export,
        )


class ArchiveWriter:
    """Appends new segments to an archive folder (one open segment per partition)."""

    def __init__(
        self, folder: Path, manifest: Manifest, *, segment_events: int = DEFAULT_SEGMENT_EVENTS
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self.segment_events = segment_events
        self.export = len(manifest.exports) + 1
        self._next = max((_number(s.name) for s in manifest.segments), default=0) + 1
        self._open: dict[int, _OpenSegment] = {}
        self.written = 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, partition: int, line: bytes, topic: str, offset: int, event_id: str) -> None:
        """Append one canonical envelope line (no newline) of ``partition``."""
        segment = self._open.get(partition)
        if segment is None:
            segment = self._open[partition] = _OpenSegment(
                self.folder, self._next, partition, self.export
            )
            self._next += 1
        segment.add(line, topic, offset, event_id)
        self.written += 1
        if segment.events >= self.segment_events:
            self.manifest.segments.append(segment.close())
            del self._open[partition]

    def close(self) -> list[SegmentInfo]:
        """Finish every open segment and record it in the manifest (not yet saved)."""
        closed = [segment.close() for segment in self._open.values()]
        self._open.clear()
        self.manifest.segments.extend(closed)
        self.manifest.segments.sort(key=lambda s: _number(s.name))
        return closed

    def record_export(self, **details: Any) -> None:
        """Note this export run in the manifest (time, events written, extra details)."""
        self.manifest.exports.append(
            {
                "export": self.export,
                "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "events": self.written,
                **details,
            }
        )


def _number(name: str) -> int:
    return int(name.split("-")[1])


def read_lines(path: Path, digest: Any = None) -> Iterator[list[bytes]]:
    """The lines of a gzip JSON Lines file, in chunks (no newline; empty lines kept except
    the one after the final newline). ``digest`` (a hashlib object) is fed the raw bytes."""
    with open(path, "rb") as handle:
        unzip = zlib.decompressobj(31)
        rest = b""
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            if digest is not None:
                digest.update(chunk)
            data = unzip.decompress(chunk)
            while unzip.eof and unzip.unused_data:
                # Concatenated gzip members are valid gzip: read them as one stream.
                unused = unzip.unused_data
                unzip = zlib.decompressobj(31)
                data += unzip.decompress(unused)
            if rest:
                data = rest + data
            lines = data.split(b"\n")
            rest = lines.pop()
            if lines:
                yield lines
        data = rest + unzip.flush()
        if data:
            yield data.split(b"\n")


def read_index(path: Path) -> list[tuple[str, int, str]]:
    """A segment's sidecar index: ``(topic, offset, event_id)`` per line."""
    rows: list[tuple[str, int, str]] = []
    for lines in read_lines(path):
        for line in lines:
            topic, offset, event_id = line.decode().split("\t")
            rows.append((topic, int(offset), event_id))
    return rows


def sidecar_findings(folder: Path) -> list[str]:
    """The manifest's SHA-256s of the files beside the segments (indexes, checkpoints) that do
    not match; the segments themselves are hashed while they are audited."""
    manifest = Manifest.load(folder)
    listed = [(s.index_name, s.index_sha256) for s in manifest.segments]
    if manifest.checkpoints is not None:
        info = manifest.checkpoints
        listed.append((str(info.get("file")), str(info.get("sha256"))))
    problems = []
    for name, expected in listed:
        try:
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        except OSError:
            problems.append(f"{name}: missing (listed in the manifest)")
            continue
        if digest != expected:
            problems.append(f"{name}: SHA-256 differs from the manifest's")
    return problems
