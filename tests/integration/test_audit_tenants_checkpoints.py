"""Per-tenant exports and signed checkpoints against the real broker (issue 20).

Histories are decided by the pure domain (``tests.support.history``) and written to real topics
under a unique prefix; the CLI runs as a subprocess, as an auditor would run it.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import shutil
import sys
from pathlib import Path

import orjson
import pytest

from schemas.codec import encode
from schemas.topics import Topics
from services.audit.archive import MANIFEST, Manifest
from services.audit.checkpointer import fetch_checkpoints
from services.audit.checkpoints import (
    CHECKPOINTS_FILE,
    Checkpoint,
    load_public_keys,
    read_checkpoints,
)
from tests.integration.test_audit import produce, run, segment_lines, verify_json
from tests.support.history import generate_history, restamp_chain

pytestmark = pytest.mark.integration


def archive_events(folder: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for lines in segment_lines(folder).values() for line in lines]


async def export(bootstrap: str, prefix: str, folder: Path, *extra: str) -> dict[str, object]:
    result = await run("export", str(folder), "--bootstrap", bootstrap, "--topic-prefix", prefix,
                       "--json", "--segment-events", "150", *extra)  # fmt: skip
    assert result.exit_code == 0, result.output
    return dict(orjson.loads(result.stdout))


async def test_tenant_export_holds_only_that_tenants_campaigns_and_verifies(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"{unique}."
    # Campaign ids are one namespace across tenants today (issue 12), so each tenant has its own.
    a = generate_history(campaigns=4, seed=3, prefix="a-camp-", tenant="tenant-a")
    b = generate_history(campaigns=4, seed=5, prefix="b-camp-", tenant="tenant-b")
    # B's events first on every topic: A's settlement events are read before A's launches.
    await produce(bootstrap, prefix, [*b.lines, *a.lines])
    folder = tmp_path / "tenant-a"
    result = await export(bootstrap, prefix, folder, "--tenant", "tenant-a")
    assert result["events"] == len(a.lines) and result["left_out"] == 0

    events = archive_events(folder)
    b_ids = {str(e.event_id) for e in b.envelopes}
    assert not b_ids & {str(e["event_id"]) for e in events}
    assert {str(e["campaign_id"]) for e in events} == set(a.states)
    assert {str(e["stream"]) for e in events} == {"campaign", "settlement"}
    manifest = orjson.loads((folder / MANIFEST).read_bytes())
    assert manifest["tenant"] == "tenant-a"
    assert manifest["tenant_campaigns"] == sorted(a.states)

    code, report = await verify_json("--from", str(folder))
    assert code == 0, report["first"]
    assert report["events"] == len(a.lines) and report["campaigns"] == len(a.states)
    statement = await run("report", "--campaign", "a-camp-0001", "--format", "json",
                          "--from", str(folder))  # fmt: skip
    assert statement.exit_code == 0, statement.output

    # Incremental: only the tenant's new campaigns are added, even though B's old campaigns'
    # launches are no longer read (they were before this archive's cursor).
    a2 = generate_history(campaigns=2, seed=8, prefix="a2-camp-", tenant="tenant-a")
    b2 = generate_history(campaigns=2, seed=9, prefix="b2-camp-", tenant="tenant-b")
    await produce(bootstrap, prefix, [*a2.lines, *b2.lines])
    again = await export(bootstrap, prefix, folder, "--tenant", "tenant-a")
    assert again["events"] == len(a2.lines)
    assert {str(e["campaign_id"]) for e in archive_events(folder)} == {*a.states, *a2.states}
    code, report = await verify_json("--from", str(folder))
    assert code == 0 and report["events"] == len(a.lines) + len(a2.lines)

    refused = await run("export", str(folder), "--bootstrap", bootstrap, "--topic-prefix", prefix,
                        "--tenant", "tenant-b")  # fmt: skip
    assert refused.exit_code == 2 and "--tenant" in refused.stderr


async def keygen(folder: Path, name: str) -> tuple[Path, Path]:
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    result = await run("checkpoint", "keygen", "--private", str(private), "--public", str(public))
    assert result.exit_code == 0, result.output
    return private, public


def rewrite_campaign(source: Path, target: Path, campaign: str) -> None:
    """An operator's consistent rewrite: the campaign's title changed at seq 1 and its whole
    chain re-hashed from genesis; segments and manifest SHA-256s recomputed; the archive's
    checkpoints dropped (the operator hides them)."""
    shutil.copytree(source, target)
    lines = segment_lines(target)
    chain = [orjson.loads(x) for part in lines.values() for x in part]
    chain = [e for e in chain if e["campaign_id"] == campaign and e["stream"] == "campaign"]
    chain[0]["payload"]["title"] = "A different campaign"
    by_id = {
        e["event_id"]: orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in restamp_chain(chain)
    }
    manifest = Manifest.load(target)
    for segment in manifest.segments:
        new = [by_id.get(orjson.loads(x)["event_id"], x) for x in lines[segment.name]]
        data = gzip.compress(b"\n".join(new) + b"\n")
        (target / segment.name).write_bytes(data)
        segment.sha256, segment.bytes = hashlib.sha256(data).hexdigest(), len(data)
    (target / CHECKPOINTS_FILE).unlink()
    manifest.checkpoints = None
    manifest.save(target)


async def test_a_rewritten_history_passes_verify_but_fails_against_a_signed_checkpoint(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"{unique}."
    history = generate_history(campaigns=4, seed=21)
    await produce(bootstrap, prefix, history.lines)
    private, public = await keygen(tmp_path, "platform")
    kept = tmp_path / "kept.jsonl"
    made = await run("checkpoint", "make", "--key", str(private), "--output", str(kept),
                     "--bootstrap", bootstrap, "--topic-prefix", prefix)  # fmt: skip
    assert made.exit_code == 0, made.output
    [checkpoint] = read_checkpoints(kept)
    assert checkpoint.tenant_id == "tenant-1"
    assert len(checkpoint.chains) == len({(e.campaign_id, e.stream) for e in history.envelopes})

    folder = tmp_path / "archive"
    result = await export(bootstrap, prefix, folder)
    assert result["checkpoints"] == 1
    assert read_checkpoints(folder / CHECKPOINTS_FILE) == [checkpoint]
    signed = ["--checkpoints", str(kept), "--public-key", str(public)]
    code, report = await verify_json("--from", str(folder), *signed)
    assert code == 0, report["archive_findings"]
    assert report["signed_heads_checked"] == len(checkpoint.chains)

    rewritten = tmp_path / "rewritten"
    rewrite_campaign(folder, rewritten, "camp-0002")
    plain = await run("verify", "--from", str(rewritten))
    assert plain.exit_code == 0, plain.output
    failed = await run("verify", "--from", str(rewritten), *signed)
    assert failed.exit_code == 1
    [problem] = [x for x in failed.stderr.splitlines() if x.startswith("FAIL archive")]
    assert f"checkpoint {checkpoint.checkpoint_id}" in problem
    assert "campaign 'camp-0002' stream 'campaign'" in problem and "rewritten" in problem

    # A key the auditor was not given does not count as a signature.
    _, stranger = await keygen(tmp_path, "stranger")
    wrong = await run("verify", "--from", str(folder), "--checkpoints", str(kept),
                      "--public-key", str(stranger))  # fmt: skip
    assert wrong.exit_code == 1 and "not among the given public keys" in wrong.stderr
    missing = await run("verify", "--from", str(folder), "--checkpoints", str(kept))
    assert missing.exit_code == 2 and "--public-key" in missing.stderr


async def signed_by(
    bootstrap: str, topic: str, reason: str, head: tuple[str, str, int, str]
) -> list[Checkpoint]:
    """Checkpoints of ``reason`` that sign ``head``, polled for up to 30 s."""
    for _ in range(60):
        found, bad = await fetch_checkpoints(bootstrap, topic)
        assert bad == 0
        matching = [c for c in found if c.reason == reason and head in c.chains]
        if matching:
            return matching
        await asyncio.sleep(0.5)
    raise AssertionError(f"no {reason} checkpoint of {head} in {found}")


async def test_the_checkpointer_signs_when_a_campaign_closes_and_when_it_settles(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"{unique}."
    private, public = await keygen(tmp_path, "platform")
    await produce(bootstrap, prefix, [])  # the topics
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "audit", "checkpoint", "run", "--key", str(private),
        "--interval", "3600", "--bootstrap", bootstrap, "--topic-prefix", prefix,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        while b"caught up" not in (line := await asyncio.wait_for(process.stderr.readline(), 60)):
            assert line, "the checkpointer exited"
        # The interval is an hour: only a close or a settlement makes a checkpoint now.
        history = generate_history(campaigns=1, seed=4)
        campaign = [e for e in history.envelopes if e.stream == "campaign"]
        settlement = [e for e in history.envelopes if e.stream == "settlement"]
        assert campaign[-1].event_type == "CampaignClosed"
        assert settlement[-1].event_type == "CampaignSettled"
        topic = Topics(prefix=prefix).checkpoints
        keys = load_public_keys([public])

        await produce(bootstrap, prefix, [encode(e) for e in campaign])
        closed = campaign[-1]
        head = (closed.campaign_id, "campaign", closed.seq, closed.hash)
        [on_close] = await signed_by(bootstrap, topic, "campaign_closed", head)
        assert on_close.verify(keys) is None and on_close.tenant_id == "tenant-1"

        await produce(bootstrap, prefix, [encode(e) for e in settlement])
        settled = settlement[-1]
        head = (settled.campaign_id, "settlement", settled.seq, settled.hash)
        [on_settle] = await signed_by(bootstrap, topic, "campaign_settled", head)
        assert on_settle.verify(keys) is None
        assert (closed.campaign_id, "campaign", closed.seq, closed.hash) in on_settle.chains
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


async def test_the_checkpointer_signs_every_tenant_after_catching_up_then_at_its_interval(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"{unique}."
    private, public = await keygen(tmp_path, "platform")
    a = generate_history(campaigns=1, seed=6, prefix="a-", tenant="tenant-a")
    b = generate_history(campaigns=1, seed=7, prefix="b-", tenant="tenant-b")
    await produce(bootstrap, prefix, [*a.lines, *b.lines])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "audit", "checkpoint", "run", "--key", str(private),
        "--interval", "1", "--bootstrap", bootstrap, "--topic-prefix", prefix,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        topic = Topics(prefix=prefix).checkpoints
        last = a.envelopes[-1]
        [of_a] = await signed_by(
            bootstrap, topic, "interval", (last.campaign_id, last.stream, last.seq, last.hash)
        )
        assert of_a.tenant_id == "tenant-a" and of_a.verify(load_public_keys([public])) is None
        assert {c for c, *_ in of_a.chains} == set(a.states)
        last = b.envelopes[-1]
        await signed_by(
            bootstrap, topic, "interval", (last.campaign_id, last.stream, last.seq, last.hash)
        )
        # Nothing moved since: the interval signs only tenants whose heads moved.
        await asyncio.sleep(2.5)
        found, _ = await fetch_checkpoints(bootstrap, topic)
        assert sorted(c.tenant_id for c in found) == ["tenant-a", "tenant-b"]
        # A new campaign's events without a close or settlement: only the interval signs them.
        produced = generate_history(campaigns=1, seed=8, prefix="a2-", tenant="tenant-a")
        opened = [e for e in produced.of("a2-0000") if e.event_type != "CampaignClosed"]
        await produce(bootstrap, prefix, [encode(e) for e in opened])
        head = (opened[-1].campaign_id, "campaign", opened[-1].seq, opened[-1].hash)
        [later] = await signed_by(bootstrap, topic, "interval", head)
        assert later.tenant_id == "tenant-a"
        assert {c for c, *_ in later.chains} == {*a.states, "a2-0000"}
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
