"""The auditor's hot loop: verify each stored line's hash and chain link, then fold it.

Kept as one module: the fast path and its slow-path fallback are one proof (below) and
must be read together.

**Why the fast path is exact.** A stored line is the canonical envelope, hash included. The
canonical form sorts keys, so the ``hash`` member sits right before ``,"occurred_at":"``:
``line = body[:at] + ',"hash":"<64 hex>"' + body[at:]`` where ``body`` is exactly the bytes
the writer hashed (``hash = sha256(prev_hash + body)``). The loop takes ``o`` = the *first*
``,"occurred_at":"`` of the line, requires the 74 bytes before it to be ``,"hash":"`` + 64
bytes + ``"``, removes them, and hashes ``prev_hash + rest``. If that digest equals the stored
one, ``rest`` *is* a body the writer hashed (finding another input with that SHA-256 is
infeasible), and the removed member sat exactly where canonical encoding puts it: ``,"`` never
occurs inside a canonical JSON string (a quote there is escaped), the five members before
``occurred_at`` are plain strings, and ``,"occurred_at":"`` cannot overlap itself, so no
earlier occurrence can hide in ``rest``. Hence the line equals ``canonical(body + hash)`` and
the fields read at their fixed places (campaign id first, ``prev_hash``, ``schema_version``,
``seq``, ``stream`` last, the payload between ``occurred_at`` and ``prev_hash``) are the
authentic ones, so only the payload needs parsing. Any line that does not pass this way —
tampered, or merely not canonical (other key order, whitespace) — goes down the slow path,
which parses the whole line and re-dumps it canonically (:func:`schemas.codec.verify_hash`),
so a valid non-canonical line is still accepted and a tampered one always fails.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.canonical import GENESIS_HASH
from schemas.codec import verify_hash
from services.audit.fold import APPLY, CampaignFold
from services.audit.rules import CAMPAIGN_RULE_NAMES, CHAIN_RULES, check_campaign
from services.streams.orderer import Pushed, SeqOrderer

__all__ = ["Finding", "PartitionAuditor", "PartitionResult", "campaign_key"]

_OCC = b',"occurred_at":"'
_HASH = b',"hash":"'
_PREV = b',"prev_hash":"'
_HEAD = b'{"campaign_id":"'
_CAUSATION = b'","causation_id":"'
_EVENT_TYPE = b',"event_type":"'
_PAYLOAD = b'","payload":'
_TAIL = re.compile(rb'","schema_version":\d+,"seq":(\d+),"stream":"([a-z]+)"}')
_GENESIS = GENESIS_HASH.encode()
_QUOTE = ord('"')
_STREAMS = {b"campaign": "campaign", b"settlement": "settlement", b"notify": "notify"}

#: A held-back line: (line, ordinal, prev_hash, hash, occurred_at position, prev_hash
#: position), prev_hash None when it still has to be verified by the slow path.
_Held = tuple[bytes, int, bytes | None, bytes, int, int]

#: Findings kept in full per partition (all are counted by rule).
MAX_FINDINGS = 1000


def campaign_key(campaign_id: str) -> bytes:
    """A campaign id as its canonical JSON string content (how the hot path keys chains)."""
    return orjson.dumps(campaign_id)[1:-1]


def _campaign_id(key: bytes) -> str:
    value = orjson.loads(b'"' + key + b'"')
    return value if isinstance(value, str) else key.decode("utf-8", "replace")


@dataclass(slots=True)
class Finding:
    """One broken rule, naming the event (``ordinal`` = its place in its partition's stream;
    the source fills in topic, offset and event id)."""

    rule: str
    detail: str
    partition: int
    ordinal: int
    campaign_id: str | None = None
    stream: str | None = None
    seq: int | None = None
    event_type: str | None = None
    topic: str | None = None
    offset: int | None = None
    event_id: str | None = None
    location: str | None = None
    #: Detection order in its partition: the log order even when reading Kafka, where an
    #: event held back for its predecessor is judged after events that arrived later.
    found: int = 0

    def order(self) -> tuple[int, int, int]:
        """Sort key of "the first bad event": broken chains first (a missing or altered event
        is the root cause of whatever the fold then sees), then the rules judged on one
        event, then those judged at the end of a campaign's streams; within each, by
        partition and log order."""
        if self.rule in CAMPAIGN_RULE_NAMES:
            return 2, self.partition, self.ordinal
        return (0 if self.rule in CHAIN_RULES else 1), self.partition, self.found

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON form (``--json`` output)."""
        return {
            "rule": self.rule,
            "detail": self.detail,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "campaign_id": self.campaign_id,
            "stream": self.stream,
            "seq": self.seq,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "location": self.location,
        }

    def describe(self) -> str:
        """One line: where the bad event is and what is wrong with it."""
        where = (
            f"topic={self.topic} partition={self.partition} offset={self.offset} "
            f"campaign={self.campaign_id} stream={self.stream} seq={self.seq}"
        )
        if self.location:
            where += f" ({self.location})"
        return f"{self.rule}: {where}: {self.detail}"


@dataclass
class PartitionResult:
    """What auditing one partition's events yields (picklable: crosses process boundaries)."""

    partition: int
    events: int = 0
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    folds: dict[str, CampaignFold] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    rule_counts: Counter[str] = field(default_factory=Counter)
    unknown_types: Counter[str] = field(default_factory=Counter)
    #: Archive-level problems (segment digests, counts) that name no single event.
    archive_findings: list[str] = field(default_factory=list)


class PartitionAuditor:
    """Verifies and folds the events of one partition, fed in stored order.

    ``holdback=True`` (reading Kafka, where a campaign's events of different types arrive from
    different topics) holds an event back until its predecessor has been applied; without it
    (an archive, whose writer ordered every chain) an out-of-order event is a finding.
    """

    def __init__(
        self, partition: int, *, holdback: bool = False, campaign: str | None = None
    ) -> None:
        self.partition = partition
        self.holdback = holdback
        #: Line prefix of the one campaign audited (``--campaign``), else None.
        self.only = None if campaign is None else _HEAD + campaign_key(campaign) + _CAUSATION
        self.events = 0
        #: ``(campaign key, stream) -> [last seq, last hash, the campaign's fold]``.
        self.heads: dict[tuple[bytes, bytes], list[Any]] = {}
        self.folds: dict[bytes, CampaignFold] = {}
        self.findings: list[Finding] = []
        self.rule_counts: Counter[str] = Counter()
        self.unknown_types: Counter[str] = Counter()
        #: Held-back events (the stream runtime's hold-back; heads are tracked above).
        self._pending: SeqOrderer[tuple[bytes, bytes], _Held] = SeqOrderer(limit=1 << 62)

    # --- hot loop --------------------------------------------------------------------------

    def feed(self, lines: Sequence[bytes], start: int) -> int:
        """Check and fold ``lines`` (the first at ordinal ``start``); return the next ordinal."""
        get_head = self.heads.get
        apply_for = APPLY.get
        loads = orjson.loads
        sha256 = hashlib.sha256
        tail = _TAIL.fullmatch
        only = self.only
        pending = self._pending
        holding = pending.is_holding
        holdback = self.holdback
        events = 0
        for ordinal, line in enumerate(lines, start):
            if only is not None and not line.startswith(only):
                continue
            o = line.find(_OCC)
            if (
                o > 90
                and line[o - 1] == _QUOTE
                and line[o - 74 : o - 65] == _HASH
                and line[o + 43 : o + 55] == _PAYLOAD
            ):
                pa = line.rfind(_PREV)
                at = o - 74
                prev = line[pa + 14 : pa + 78]
                digest = line[at + 9 : o - 1]
                # From here on the line is the canonical form of an authentic body (see the
                # module docstring): the fields below are read at their canonical places.
                if pa > o and sha256(prev + line[:at] + line[o:]).hexdigest().encode() == digest:
                    m = tail(line, pa + 78)
                    if m is not None:
                        seq_text, stream = m.groups()
                        seq = int(seq_text)
                        key = (line[16 : line.find(_CAUSATION, 16)], stream)
                        head = get_head(key)
                        fold: CampaignFold | None = None
                        if head is not None:
                            if seq == head[0] + 1 and prev == head[1]:
                                head[0] = seq
                                head[1] = digest
                                fold = head[2]
                            elif holdback and seq > head[0] + 1:
                                self._hold(key, seq, (line, ordinal, prev, digest, o, pa))
                                continue
                        elif seq == 1 and prev == _GENESIS:
                            fold = self._new_chain(key, seq, digest)
                        elif holdback and seq > 1:
                            self._hold(key, seq, (line, ordinal, prev, digest, o, pa))
                            continue
                        if fold is not None:
                            events += 1
                            apply = apply_for(line[line.rfind(_EVENT_TYPE, 0, at) + 15 : at - 1])
                            if apply is None:
                                fold.unknown_events += 1
                            else:
                                try:
                                    problem = apply(fold, loads(line[o + 55 : pa]), seq, ordinal)
                                except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
                                    problem = ("well_formed", f"payload lacks or mistypes {exc}")
                                if problem is not None:
                                    self._event_finding(problem, line, ordinal, fold, seq)
                            if pending.held and holding(key):
                                self._drain(key, seq)
                            continue
            events += self._slow(line, ordinal)
        self.events += events
        return start + len(lines)

    def _hold(self, key: tuple[bytes, bytes], seq: int, item: _Held) -> None:
        """Keep an event that arrived before its predecessor (reading Kafka) until it can be
        applied, with what verifying it found (so it is not hashed again); a second copy of
        a held seq is a finding."""
        if self._pending.hold(key, seq, item) is Pushed.HELD:
            return
        line, ordinal = item[0], item[1]
        raw = orjson.loads(line)
        self._finding(
            "seq_gapless", f"seq {seq} delivered twice (duplicate)", ordinal,
            campaign_id=raw.get("campaign_id"), stream=raw.get("stream"), seq=seq,
            event_type=raw.get("event_type"), event_id=raw.get("event_id"),
        )  # fmt: skip

    def _new_chain(self, key: tuple[bytes, bytes], seq: int, digest: bytes) -> CampaignFold:
        """Start chain ``key`` at ``seq``; returns its campaign's fold (created if new)."""
        fold = self.folds.get(key[0])
        if fold is None:
            fold = self.folds[key[0]] = CampaignFold(_campaign_id(key[0]))
        self.heads[key] = [seq, digest, fold]
        return fold

    # --- everything off the fast path ------------------------------------------------------

    def _slow(self, line: bytes, ordinal: int, *, drain: bool = True) -> int:
        """Parse the whole line; verify by re-dumping canonically; link, fold. Returns 1 if the
        event was folded."""
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if self.only is None:
                self._finding("well_formed", f"not JSON ({exc})", ordinal)
            return 0
        if not isinstance(raw, dict):
            if self.only is None:
                self._finding("well_formed", f"a JSON {type(raw).__name__}, not an object", ordinal)
            return 0
        campaign_id, stream, seq = raw.get("campaign_id"), raw.get("stream"), raw.get("seq")
        prev, digest, event_type = raw.get("prev_hash"), raw.get("hash"), raw.get("event_type")
        event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
        if not (
            isinstance(campaign_id, str) and isinstance(stream, str) and type(seq) is int
            and isinstance(prev, str) and isinstance(digest, str) and isinstance(event_type, str)
        ):  # fmt: skip
            if self.only is None:
                self._finding(
                    "well_formed", "missing or mistyped envelope field", ordinal, event_id=event_id
                )
            return 0
        ckey = campaign_key(campaign_id)
        if self.only is not None and _HEAD + ckey + _CAUSATION != self.only:
            return 0
        context = {"campaign_id": campaign_id, "stream": stream, "seq": seq,
                   "event_type": event_type, "event_id": event_id}  # fmt: skip
        hash_ok = verify_hash(raw)
        if not hash_ok:
            self._finding(
                "hash_intact", "hash does not match the event's content", ordinal, **context
            )
        key = (ckey, stream.encode())
        head = self.heads.get(key)
        expected = 1 if head is None else head[0] + 1
        if seq != expected:
            if self.holdback and hash_ok and seq > expected:
                self._hold(key, seq, (line, ordinal, None, b"", 0, 0))
                return 0
            what = "duplicate or out of order" if seq < expected else "gap or out of order"
            self._finding(
                "seq_gapless", f"seq {seq} where {expected} was expected ({what})", ordinal,
                **context,
            )  # fmt: skip
            if seq < expected:
                return 0
        elif prev != (GENESIS_HASH if head is None else head[1].decode()):
            self._finding(
                "prev_hash_links", "prev_hash is not the previous event's hash", ordinal, **context
            )
        if head is None:
            fold = self._new_chain(key, seq, digest.encode())
        else:
            head[0], head[1] = seq, digest.encode()
            fold = head[2]
        apply = APPLY.get(event_type.encode())
        payload = raw.get("payload")
        if apply is None or not isinstance(payload, dict):
            fold.unknown_events += 1
            self.unknown_types[event_type] += 1
        else:
            try:
                problem = apply(fold, payload, seq, ordinal)
            except (KeyError, TypeError) as exc:
                problem = ("well_formed", f"payload lacks or mistypes {exc}")
            if problem is not None:
                self._finding(problem[0], problem[1], ordinal, **context)
        if drain and self._pending.held and self._pending.is_holding(key):
            self._drain(key, seq)
        return 1

    def _drain(self, key: tuple[bytes, bytes], seq: int) -> None:
        """Apply the held-back events that now follow their chain's head, in seq order."""
        pending = self._pending
        head = self.heads[key]
        while (item := pending.pop(key, seq + 1)) is not None:
            line, ordinal, prev, digest, o, pa = item
            if prev is None or prev != head[1]:
                # Not verified on arrival (non-canonical), or it does not link: the slow path
                # verifies it again and names what is wrong.
                self.events += self._slow(line, ordinal, drain=False)
            else:
                head[0], head[1] = seq + 1, digest
                self.events += 1
                self._apply_line(head[2], line, o, pa, seq + 1, ordinal)
            if head[0] != seq + 1:
                break
            seq += 1

    def _apply_line(
        self, fold: CampaignFold, line: bytes, o: int, pa: int, seq: int, ordinal: int
    ) -> None:
        """Fold one verified canonical line (the hot loop inlines the same steps)."""
        at = o - 74
        apply = APPLY.get(line[line.rfind(_EVENT_TYPE, 0, at) + 15 : at - 1])
        if apply is None:
            fold.unknown_events += 1
            return
        try:
            problem = apply(fold, orjson.loads(line[o + 55 : pa]), seq, ordinal)
        except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
            problem = ("well_formed", f"payload lacks or mistypes {exc}")
        if problem is not None:
            self._event_finding(problem, line, ordinal, fold, seq)

    def _event_finding(
        self, problem: tuple[str, str], line: bytes, ordinal: int, fold: CampaignFold, seq: int
    ) -> None:
        raw = orjson.loads(line)
        self._finding(
            problem[0], problem[1], ordinal, campaign_id=fold.campaign_id, stream=raw["stream"],
            seq=seq, event_type=raw["event_type"], event_id=raw["event_id"],
        )  # fmt: skip

    def _finding(self, rule: str, detail: str, ordinal: int, **context: Any) -> None:
        self.rule_counts[rule] += 1
        if len(self.findings) < MAX_FINDINGS:
            found = len(self.findings)
            self.findings.append(
                Finding(rule, detail, self.partition, ordinal, found=found, **context)
            )

    # --- end of stream ---------------------------------------------------------------------

    def finish(self, *, keep_folds: bool = False) -> PartitionResult:
        """Flush held-back events (their gaps are findings), run the campaign rules, and
        return the partition's result."""
        for key in self._pending.held_keys():
            while (lowest := self._pending.take_lowest(key)) is not None:
                line, ordinal = lowest[1][:2]
                # Never arrived: name the first event after the gap, then fold the rest in
                # order.
                self.holdback = False
                self.events += self._slow(line, ordinal)
        result = PartitionResult(self.partition, events=self.events)
        for (ckey, stream), head in self.heads.items():
            fold = self.folds.get(ckey)
            if fold is not None:
                fold.seqs[_STREAMS.get(stream, stream.decode())] = head[0]
        for fold in self.folds.values():
            if fold.goal_due_seq is not None:
                self._finding(
                    "goal_reached_consistent",
                    f"the total crossed the goal at seq {fold.goal_due_seq} but no GoalReached "
                    "followed",
                    fold.ordinals.get("goal_due", 0),
                    campaign_id=fold.campaign_id,
                    stream="campaign",
                    seq=fold.goal_due_seq,
                )
            named = {e.ordinal: e for e in fold.settlement}
            for rule, detail, ordinal in check_campaign(fold):
                entry = named.get(ordinal)
                if entry is not None:
                    where = {"stream": "settlement", "seq": entry.seq,
                             "event_type": entry.event_type}  # fmt: skip
                elif ordinal == fold.settled_ordinal and fold.settled is not None:
                    where = {"stream": "settlement", "seq": fold.settled_seq,
                             "event_type": "CampaignSettled"}  # fmt: skip
                else:
                    where = {}
                self._finding(rule, detail, ordinal, campaign_id=fold.campaign_id, **where)
            result.summaries[fold.campaign_id] = fold.summary()
            if keep_folds:
                result.folds[fold.campaign_id] = fold
        result.findings = sorted(self.findings, key=Finding.order)
        result.rule_counts = self.rule_counts
        result.unknown_types = self.unknown_types
        return result
