"""Deciding one partition's polled commands: the processor's hot loop.

:meth:`Decider.decide` turns the commands of one poll of one partition into an
:class:`~services.pledge.processor.partition.Outbox` (events, dead letters, an optional
snapshot round, the last consumed offset), folding each decision into the partition's live
states as it goes. It does no I/O: the worker writes the outbox in one transaction. The loop
binds what it touches to locals and calls out only for rare cases (it is what
``make bench NAME=processor`` measures).
"""

from __future__ import annotations

import heapq
import logging
from datetime import datetime

from aiokafka import ConsumerRecord

from schemas import DecodeError, decode_command, encode, message_key
from schemas.topics import COMMANDS_TOPIC, Topics
from services.pledge.adapters.snapshots import MAX_SNAPSHOT_BYTES, snapshot_records
from services.pledge.domain import CampaignState, Policy, deadline_close, decide_encoded, evolve
from services.pledge.processor.partition import NO_HEADERS, Outbox, OwnedPartition, PoisonCommand
from services.streams import dead_letter, key_partition

__all__ = ["Decider"]

log = logging.getLogger("services.pledge.processor")


class Decider:
    """Decides polled commands for the partitions of one worker (settings fixed at start)."""

    def __init__(
        self,
        topics: Topics,
        policy: Policy,
        *,
        snapshot_every: int,
        max_command_bytes: int = 1024 * 1024,
    ) -> None:
        self._policy = policy
        self._event_topics = topics.event_topics()
        self._dlq = topics.dead_letter(COMMANDS_TOPIC)
        self._partition_count = topics.partitions
        self.snapshots_topic = topics.snapshots
        self.snapshot_every = snapshot_every
        #: Bigger commands are dead-lettered unread (``oversized``).
        self.max_command_bytes = max_command_bytes
        #: Biggest campaign snapshot the snapshot topic takes (the worker reads it at start).
        self.snapshot_max = MAX_SNAPSHOT_BYTES

    def decide(
        self,
        part: OwnedPartition,
        records: list[ConsumerRecord[bytes, bytes]],
        now: datetime,
        sweep: bool,
    ) -> Outbox:
        out = Outbox()
        if part.events_since_snapshot >= self.snapshot_every and part.dirty:
            self._snapshot(part, out)
        # The hot loop (once per command): decode, decide, fold the events into the state,
        # queue their bytes. What it touches is bound to locals; rare cases call out.
        first = part.next_command
        poison = part.poison
        keys = part.keys
        states = part.states
        dirty = part.dirty
        policy = self._policy
        event_topics = self._event_topics
        outbox = out.records
        max_bytes = self.max_command_bytes
        # Plain dicts, added to the outbox's Counters at the end (a Counter's += is slower).
        outcomes: dict[tuple[str, str], int] = {}
        event_counts: dict[str, int] = {}
        issued = out.issued
        written = 0
        for record in records:
            offset = record.offset
            if offset < first:
                continue  # fetched before a rebuild moved us back: already decided
            out.last_offset = offset
            if offset in poison:
                self._dead_letter(out, record, "evolve_failed", "a previous decision broke evolve")
                continue
            value = record.value
            if value is None or len(value) > max_bytes:
                self._dead_letter(out, record, *_unreadable(value, max_bytes))
                continue
            try:
                command = decode_command(value)
            except DecodeError as exc:
                self._dead_letter(out, record, "undecodable", str(exc))
                continue
            # Fields from __dict__: a pydantic model's attribute reads are slow.
            fields = command.__dict__
            campaign_id: str = fields["campaign_id"]
            key = keys.get(campaign_id)
            if key is None or record.key != key:
                key = self._owned_key(part, record, campaign_id, out)
                if key is None:
                    continue  # dead-lettered
            state = states.get(campaign_id)
            new = state is None
            if state is None:
                state = CampaignState.empty(campaign_id)
            try:
                decided = decide_encoded(state, command, now, policy)
            except Exception as exc:  # a domain bug must not stop the partition
                log.exception(
                    "decide failed on %s offset %s",
                    record.topic,
                    offset,
                    extra={"correlation_id": fields.get("correlation_id")},
                )
                self._dead_letter(out, record, "decide_failed", repr(exc))
                continue
            command_type: str = fields["command_type"]
            if not decided:
                outcome_key = (command_type, "ignored")
                outcomes[outcome_key] = outcomes.get(outcome_key, 0) + 1
                continue
            outcome = "accepted"
            try:
                for envelope, body, data in decided:
                    evolve(state, envelope)
                    event_type: str = body["event_type"]
                    topic = event_topics[event_type]
                    bucket = outbox.get(topic)
                    if bucket is None:
                        bucket = outbox[topic] = []
                    bucket.append((key, data, NO_HEADERS))
                    event_counts[event_type] = event_counts.get(event_type, 0) + 1
                    if event_type == "PledgeRejected":
                        outcome = "rejected"
                        out.rejections[body["payload"]["reason"]] += 1
                    elif event_type == "CampaignLaunched":
                        part.track_deadline(state)
            except Exception as exc:
                raise PoisonCommand(offset) from exc
            if new:
                states[campaign_id] = state
            dirty.add(campaign_id)
            written += len(decided)
            outcome_key = (command_type, outcome)
            outcomes[outcome_key] = outcomes.get(outcome_key, 0) + 1
            issued.append(now - fields["issued_at"])
        part.events_since_snapshot += written
        out.now = now
        out.commands.update(outcomes)
        out.events.update(event_counts)
        if sweep:
            self._sweep(part, now, out)
        if out.last_offset is not None:
            part.next_command = out.last_offset + 1
        return out

    def _owned_key(
        self,
        part: OwnedPartition,
        record: ConsumerRecord[bytes, bytes],
        campaign_id: str,
        out: Outbox,
    ) -> bytes | None:
        """The message key of ``campaign_id`` if ``record`` carries it and the campaign belongs
        to ``part`` (remembered for the next command); otherwise dead-letter ``record``."""
        key = message_key(campaign_id)
        if record.key != key:
            self._dead_letter(out, record, "wrong_key", f"key is not campaign id {campaign_id!r}")
            return None
        if key_partition(key, self._partition_count) != part.number:
            # Co-partitioning broken (another partitioner, or a repartitioned topic):
            # deciding here would split the campaign's stream between two writers.
            self._dead_letter(
                out, record, "wrong_partition", f"{campaign_id!r} is not in {part.number}"
            )
            return None
        part.keys[campaign_id] = key
        return key

    def _sweep(self, part: OwnedPartition, now: datetime, out: Outbox) -> None:
        heap = part.deadlines
        while heap and heap[0][0] <= now:
            _, campaign_id = heapq.heappop(heap)
            state = part.states.get(campaign_id)
            if state is None:
                continue
            closed = deadline_close(state, now)
            for envelope in closed:
                evolve(state, envelope)
                out.add(
                    self._event_topics[envelope.event_type],
                    message_key(campaign_id),
                    encode(envelope),
                    NO_HEADERS,
                )
                out.events[envelope.event_type] += 1
            if closed:
                part.dirty.add(campaign_id)
                part.events_since_snapshot += len(closed)

    def _snapshot(self, part: OwnedPartition, out: Outbox) -> None:
        """Queue a snapshot round of the campaigns changed so far (state before this batch,
        i.e. exactly the committed log up to ``event_offsets``)."""
        states = [part.states[cid] for cid in sorted(part.dirty) if cid in part.states]
        records = snapshot_records(states, part.event_offsets, part.number, self.snapshot_max)
        if records is None:
            log.warning("partition %s: a campaign snapshot is too big; round skipped", part.number)
            return
        for key, value in records:
            out.add(self.snapshots_topic, key, value, NO_HEADERS)
        part.dirty = set()
        part.events_since_snapshot = 0
        out.snapshot = True

    def _dead_letter(
        self, out: Outbox, record: ConsumerRecord[bytes, bytes], cause: str, detail: str
    ) -> None:
        key, value, headers = dead_letter(record, cause, detail)
        out.add(self._dlq, key, value, headers)
        out.dead_letters[cause] += 1
        out.commands[("unknown", "dead_lettered")] += 1


def _unreadable(value: bytes | None, max_bytes: int) -> tuple[str, str]:
    """Cause and detail of a command not even parsed: no value, or too big."""
    if value is None:
        return "undecodable", "no value (a tombstone)"
    return "oversized", f"{len(value)} bytes, the limit is {max_bytes}"
