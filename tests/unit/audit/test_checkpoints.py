"""Signed checkpoints and per-tenant selection, without Kafka (services.audit.checkpoints,
services.audit.tenants)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    HeadTracker,
    archive_heads,
    extension_findings,
    key_id,
    sign_checkpoint,
)
from services.audit.tenants import TenantFilter
from tests.support.history import generate_history

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEYS = {key_id(KEY.public_key()): KEY.public_key()}


def two_tenants() -> tuple[list[bytes], list[bytes]]:
    a = generate_history(campaigns=2, seed=1, prefix="a-", tenant="tenant-a").lines
    b = generate_history(campaigns=2, seed=2, prefix="b-", tenant="tenant-b").lines
    return a, b


def heads_of(lines: list[bytes]) -> dict[tuple[str, str], tuple[int, str]]:
    raws = [orjson.loads(x) for x in lines]
    return {(r["campaign_id"], r["stream"]): (r["seq"], r["hash"]) for r in raws}


def test_a_signed_checkpoint_round_trips_and_verifies() -> None:
    a, _ = two_tenants()
    checkpoint = sign_checkpoint(KEY, "tenant-a", heads_of(a), NOW, "interval")
    parsed = Checkpoint.parse(checkpoint.encode())
    assert parsed == checkpoint and parsed.verify(KEYS) is None
    assert parsed.made_at == "2026-05-01T12:00:00.000000Z"
    assert [c[:2] for c in parsed.chains] == sorted(heads_of(a))


def test_any_signed_member_changed_breaks_the_signature() -> None:
    a, _ = two_tenants()
    checkpoint = sign_checkpoint(KEY, "tenant-a", heads_of(a), NOW, "interval")
    cid, stream, seq, digest = checkpoint.chains[0]
    for forged in (
        replace(checkpoint, tenant_id="tenant-b"),
        replace(checkpoint, made_at="2027-01-01T00:00:00.000000Z"),
        replace(checkpoint, chains=((cid, stream, seq - 1, digest), *checkpoint.chains[1:])),
    ):
        assert forged.verify(KEYS) == f"signature does not verify with key {checkpoint.key_id}"
    other = Ed25519PrivateKey.generate().public_key()
    assert "not among the given public keys" in str(checkpoint.verify({key_id(other): other}))


def test_a_malformed_checkpoint_line_names_the_member() -> None:
    with pytest.raises(CheckpointError, match="format"):
        Checkpoint.parse(b'{"format":"other"}')
    line = orjson.loads(sign_checkpoint(KEY, "t", {("c", "campaign"): (1, "0" * 64)}, NOW,
                                        "manual").encode())  # fmt: skip
    line["chains"][0]["seq"] = "1"
    with pytest.raises(CheckpointError, match=r"chains\[0\]"):
        Checkpoint.parse(orjson.dumps(line))
    with pytest.raises(ValueError, match="reason"):
        sign_checkpoint(KEY, "t", {}, NOW, "because")


def test_heads_follow_the_highest_seq_and_tenants_their_launch_in_any_order() -> None:
    a, b = two_tenants()
    tracker = HeadTracker()
    triggers = [t for line in reversed([*a, *b]) if (t := tracker.feed(line)) is not None]
    assert tracker.of_tenant("tenant-a") == heads_of(a)
    assert tracker.of_tenant("tenant-b") == heads_of(b)
    assert tracker.take_dirty() == {"tenant-a", "tenant-b"} and not tracker.dirty
    # Read backwards, closes and settlements come before the launch (no tenant to sign yet):
    # they fire once the launch names the tenant, a settlement outranking a close.
    assert set(triggers) == {("tenant-a", "campaign_settled"), ("tenant-b", "campaign_settled")}
    forwards = HeadTracker()
    seen = [t for line in a if (t := forwards.feed(line)) is not None]
    assert ("tenant-a", "campaign_closed") in seen and ("tenant-a", "campaign_settled") in seen
    assert forwards.feed(b"not json") is None


def test_an_archive_extends_its_checkpoint_and_a_rewrite_is_named() -> None:
    a, _ = two_tenants()
    checkpoint = sign_checkpoint(KEY, "tenant-a", heads_of(a), NOW, "interval")
    wanted = {(c, s, n) for c, s, n, _ in checkpoint.chains}
    stored, last = archive_heads(iter(a), wanted)
    assert extension_findings([checkpoint], KEYS, stored, last) == ([], len(wanted))

    cid, stream, seq, _ = checkpoint.chains[0]
    rewritten = {**stored, (cid, stream, seq): "f" * 64}
    [problem], _ = extension_findings([checkpoint], KEYS, rewritten, last)
    assert problem.startswith(f"checkpoint {checkpoint.checkpoint_id} (tenant 'tenant-a'")
    assert f"campaign {cid!r} stream {stream!r}: signed seq {seq}" in problem
    assert "history rewritten" in problem

    truncated = {k: v for k, v in stored.items() if k[0] != cid}
    problems, _ = extension_findings([checkpoint], KEYS, truncated, {})
    assert problems and all("no event of that chain" in p for p in problems)


def test_heads_outside_the_archives_scope_are_not_required() -> None:
    a, b = two_tenants()
    of_b = sign_checkpoint(KEY, "tenant-b", heads_of(b), NOW, "interval")
    of_a = sign_checkpoint(KEY, "tenant-a", heads_of(a), NOW, "interval")
    stored, last = archive_heads(iter(a), {(c, s, n) for c, s, n, _ in of_a.chains})
    problems, checked = extension_findings([of_a, of_b], KEYS, stored, last, tenant="tenant-a")
    assert problems == [] and checked == len(of_a.chains)
    only_campaign = extension_findings([of_a], KEYS, stored, last, streams={"campaign"})
    assert only_campaign == ([], sum(1 for c in of_a.chains if c[1] == "campaign"))
    # A whole deployment's archive that lost a tenant fails on that tenant's checkpoint.
    problems, _ = extension_findings([of_a, of_b], KEYS, stored, last)
    assert problems and all("tenant 'tenant-b'" in p for p in problems)


def test_the_tenant_filter_holds_events_until_their_launch_and_drops_other_tenants() -> None:
    a, b = two_tenants()
    gate = TenantFilter("tenant-a")
    # Reversed: every event arrives before its campaign's launch.
    passed = [item for line in reversed([*a, *b]) for item in gate.admit(line, (line,))]
    assert sorted(x for (x,) in passed) == sorted(a)
    assert gate.campaigns == sorted({orjson.loads(x)["campaign_id"] for x in a})
    assert gate.left_out == 0
    later = TenantFilter("tenant-a", gate.campaigns)
    settlement = [x for x in a if orjson.loads(x)["stream"] == "settlement"]
    assert [i for x in settlement for i in later.admit(x, (x,))] == [(x,) for x in settlement]
    unknown = [x for x in b if orjson.loads(x)["event_type"] != "CampaignLaunched"]
    assert [i for x in unknown for i in later.admit(x, (x,))] == []
    assert later.left_out == len(unknown)
    assert later.admit(b"{not json", (b"",)) == []
