"""The exported JSON Schemas accept what the codec writes and refuse what it refuses.

Checked with the ``jsonschema`` package (format checking on, so ``date-time`` and ``uuid`` are
enforced), a validator independent of pydantic: every event type (and PledgeMade v1 records
as stored on old logs), every command, and mutations of them that the codec refuses.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas.codec import decode, encode
from schemas.commands import (
    CancelPledge,
    CloseCampaign,
    LaunchCampaign,
    MakePledge,
    decode_command,
    encode_command,
)
from schemas.errors import DecodeError
from schemas.events import FeeSchedule, Tier
from schemas.jsonschema import INT_MAX, INT_MIN, JSON_DIR, PAST_VERSIONS
from schemas.upcasters import UPCASTERS
from tests.unit.schemas.samples import T0, chain, eur, sample_events

V1_FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "pledge_made_v1.jsonl"
Doc = dict[str, Any]


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((JSON_DIR / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _errors(name: str, instance: Doc) -> list[str]:
    return [error.message for error in _validator(name).iter_errors(instance)]


def _events() -> list[Doc]:
    encoded = [json.loads(encode(envelope)) for envelope in chain(sample_events())]
    stored_v1 = [json.loads(line) for line in V1_FIXTURE.read_text().splitlines() if line]
    return encoded + stored_v1


def _commands() -> list[Doc]:
    fields: Doc = {
        "command_id": "tenant-a:k-1", "tenant_id": "tenant-a", "correlation_id": "req-1",
        "issued_at": T0, "campaign_id": "camp-1",
    }  # fmt: skip
    commands = [
        LaunchCampaign(
            **fields, creator_id="creator-1", title="A board game", goal=eur(100_000),
            deadline=T0, funding_model="all_or_nothing", settlement_mode="authorize_then_capture",
            commission_bps=500, fee_schedule=FeeSchedule(),
            tiers=(Tier(tier_id="early", title="Early", min_amount_minor=2000, quantity_limit=2),),
        ),
        MakePledge(**fields, pledge_id="pl-1", backer_id="b-1", amount=eur(2500), tier_id="early",
                   payment_token="tok_1", locale="fr-FR"),
        MakePledge(**fields, pledge_id="pl-2", backer_id="b-2", amount=eur(INT_MAX)),
        CancelPledge(**fields, pledge_id="pl-1"),
        CloseCampaign(**fields, reason="creator_cancelled"),
    ]  # fmt: skip
    return [json.loads(encode_command(command)) for command in commands]


def _file_of(event: Doc) -> str:
    return f"{event['event_type']}.v{event['schema_version']}.json"


def test_every_event_the_codec_writes_or_reads_is_valid_for_its_schema_and_the_envelope() -> None:
    events = _events()
    kinds = {(e["event_type"], e["schema_version"]) for e in events}
    assert ("PledgeMade", 1) in kinds and ("PledgeMade", 2) in kinds
    for event in events:
        decode(json.dumps(event))  # the codec reads it
        assert _errors(_file_of(event), event) == [], _file_of(event)
        assert _errors("Envelope.json", event) == [], _file_of(event)


def test_every_command_the_codec_writes_is_valid() -> None:
    commands = _commands()
    assert {c["command_type"] for c in commands} == {
        "LaunchCampaign", "MakePledge", "CancelPledge", "CloseCampaign",
    }  # fmt: skip
    for command in commands:
        assert _errors("Command.json", command) == [], command["command_type"]


def test_every_version_still_on_a_log_has_its_schema() -> None:
    for event_type, version in UPCASTERS.keys() | PAST_VERSIONS.keys():
        assert (JSON_DIR / f"{event_type}.v{version}.json").is_file()


def test_no_schema_uses_the_openapi_discriminator() -> None:
    for path in JSON_DIR.glob("*.json"):
        assert '"discriminator"' not in path.read_text(encoding="utf-8"), path.name


# --- mutations the codec refuses: the schemas must refuse them too ---------------------------

Mutation = Callable[[Doc], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        for part in parents:
            doc = doc[part]
        doc[last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        for part in parents:
            doc = doc[part]
        del doc[last]

    return mutate


_PLEDGE_MUTATIONS: dict[str, Mutation] = {
    "occurred_at yesterday": _set("occurred_at", "yesterday"),
    "occurred_at without offset": _set("occurred_at", "2025-05-01T12:00:00"),
    "occurred_at a number": _set("occurred_at", 1746100800),
    "event_id not a uuid": _set("event_id", "evt-1"),
    "lower-case currency": _set("payload.amount.currency", "eur"),
    "unknown currency": _set("payload.amount.currency", "XXX"),
    "amount beyond 64 bits": _set("payload.amount.amount_minor", INT_MAX + 1),
    "amount below 64 bits": _set("payload.amount.amount_minor", INT_MIN - 1),
    # Not here: 25.0 for 25. JSON Schema's "integer" is any number with no fraction, so no
    # schema can refuse it; the codec does (it reads the text). docs/operations.md says so.
    "amount a string": _set("payload.amount.amount_minor", "2500"),
    "unknown event type": _set("event_type", "PledgeMaid"),
    "unknown version": _set("schema_version", 3),
    "wrong stream": _set("stream", "settlement"),
    "seq zero": _set("seq", 0),
    "upper-case hash": _set("hash", "A" * 64),
    "empty backer": _set("payload.backer_id", ""),
    "extra envelope field": _set("extra", 1),
    "extra payload field": _set("payload.extra", 1),
    "payload missing pledge_id": _drop("payload.pledge_id"),
    **{f"missing {field}": _drop(field) for field in (
        "event_id", "event_type", "schema_version", "campaign_id", "stream", "seq",
        "occurred_at", "causation_id", "correlation_id", "prev_hash", "hash", "payload",
    )},
}  # fmt: skip


@pytest.mark.parametrize("mutation", sorted(_PLEDGE_MUTATIONS))
def test_a_mutated_event_the_codec_refuses_is_refused_by_the_schemas(mutation: str) -> None:
    pledge = next(e for e in _events() if e["event_type"] == "PledgeMade")
    bad = copy.deepcopy(pledge)
    _PLEDGE_MUTATIONS[mutation](bad)
    with pytest.raises(DecodeError):
        decode(json.dumps(bad))
    assert _errors("Envelope.json", bad), "Envelope.json accepts it"
    assert _errors("PledgeMade.v2.json", bad), "PledgeMade.v2.json accepts it"


_COMMAND_MUTATIONS: dict[str, Mutation] = {
    "no command_type": _drop("command_type"),
    "unknown command_type": _set("command_type", "RefundPledge"),
    "issued_at yesterday": _set("issued_at", "yesterday"),
    "lower-case currency": _set("amount.currency", "eur"),
    "unknown currency": _set("amount.currency", "XXX"),
    "amount beyond 64 bits": _set("amount.amount_minor", 2**70),
    "amount just past u64": _set("amount.amount_minor", INT_MAX + 1),
    "amount below i64": _set("amount.amount_minor", INT_MIN - 1),
    "extra field": _set("extra", True),
    "long locale": _set("locale", "x" * 36),
    **{f"missing {field}": _drop(field) for field in (
        "command_id", "tenant_id", "correlation_id", "issued_at", "campaign_id", "pledge_id",
        "backer_id", "amount",
    )},
}  # fmt: skip


@pytest.mark.parametrize("mutation", sorted(_COMMAND_MUTATIONS))
def test_a_mutated_command_the_codec_refuses_is_refused_by_the_schema(mutation: str) -> None:
    pledge = next(c for c in _commands() if c["command_type"] == "MakePledge")
    bad = copy.deepcopy(pledge)
    _COMMAND_MUTATIONS[mutation](bad)
    with pytest.raises(DecodeError):
        decode_command(json.dumps(bad).encode())
    assert _errors("Command.json", bad), "Command.json accepts it"


def test_a_launch_with_a_64_bit_overflow_is_refused_by_both() -> None:
    launch = next(c for c in _commands() if c["command_type"] == "LaunchCampaign")
    bad = copy.deepcopy(launch)
    bad["goal"]["amount_minor"] = INT_MAX + 1
    with pytest.raises(DecodeError):
        decode_command(json.dumps(bad).encode())
    assert _errors("Command.json", bad)
