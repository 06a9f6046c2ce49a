"""The second verifier (tools/verify-js, Node stdlib, written from docs/spec/event-log.md)
on archives the project's own exporter writes from the real broker, so the two
implementations cannot drift apart unnoticed."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from services.audit.archive import Manifest
from services.audit.checkpoints import CHECKPOINTS_FILE, read_checkpoints
from tests.integration.test_audit import produce, run, segment_lines
from tests.integration.test_audit_tenants_checkpoints import export, keygen, rewrite_campaign
from tests.support.history import generate_history
from tests.support.spec_vectors import VECTORS

pytestmark = pytest.mark.integration

VERIFIER = Path(__file__).resolve().parents[2] / "tools" / "verify-js" / "verify.mjs"


@dataclass
class NodeResult:
    exit_code: int
    stderr: str


async def node_verify(*args: str) -> NodeResult:
    node = shutil.which("node")
    assert node, "Node 20 must be on PATH for the second verifier (tools/verify-js)"
    process = await asyncio.create_subprocess_exec(
        node, str(VERIFIER), *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode is not None
    return NodeResult(process.returncode, err.decode())


async def test_the_test_vectors_pass_and_a_changed_vector_fails(tmp_path: Path) -> None:
    result = await node_verify("vectors", str(VECTORS))
    assert result.exit_code == 0, result.stderr
    changed = tmp_path / "vectors"
    shutil.copytree(VECTORS, changed)
    events = orjson.loads((changed / "events.json").read_bytes())
    events[2]["hash"] = "0" * 64
    (changed / "events.json").write_bytes(orjson.dumps(events))
    failed = await node_verify("vectors", str(changed))
    assert failed.exit_code == 1 and f'event "{events[2]["name"]}": hash' in failed.stderr


def resign_segment(folder: Path, name: str, lines: list[bytes]) -> None:
    """Write a segment and fix its SHA-256 in the manifest (only the chain can tell)."""
    data = gzip.compress(b"\n".join(lines) + b"\n")
    (folder / name).write_bytes(data)
    manifest = Manifest.load(folder)
    for segment in manifest.segments:
        if segment.name == name:
            segment.sha256, segment.bytes = hashlib.sha256(data).hexdigest(), len(data)
    manifest.save(folder)


async def test_the_second_verifier_checks_the_suites_export(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"{unique}."
    history = generate_history(campaigns=6, seed=31)
    await produce(bootstrap, prefix, history.lines)
    private, public = await keygen(tmp_path, "platform")
    made = await run("checkpoint", "make", "--key", str(private),
                     "--bootstrap", bootstrap, "--topic-prefix", prefix)  # fmt: skip
    assert made.exit_code == 0, made.output
    folder = tmp_path / "archive"
    await export(bootstrap, prefix, folder)
    [checkpoint] = read_checkpoints(folder / CHECKPOINTS_FILE)
    signed = ["--checkpoints", str(folder / CHECKPOINTS_FILE), "--public-key", str(public)]

    clean = await node_verify("archive", str(folder), *signed)
    assert clean.exit_code == 0, clean.stderr
    chains = len({(e.campaign_id, e.stream) for e in history.envelopes})
    assert (
        f"OK: {len(history.lines)} events in {chains} chains; "
        f"extends {len(checkpoint.chains)} signed chain heads"
    ) in clean.stderr

    # A payload edited in place, the segment's SHA-256 fixed up: the hash chain names it.
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    name, lines = next(iter(segment_lines(tampered).items()))
    at = next(i for i, x in enumerate(lines) if b'"PledgeMade"' in x)
    event = orjson.loads(lines[at])
    event["payload"]["amount"]["amount_minor"] += 100
    lines[at] = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    resign_segment(tampered, name, lines)
    failed = await node_verify("archive", str(tampered))
    assert failed.exit_code == 1
    first = failed.stderr.splitlines()[0]
    assert first.startswith(f"FAIL first bad event: {name} line {at + 1} (topic {prefix}PledgeMade")
    assert f"event {event['event_id']} campaign {event['campaign_id']}" in first
    assert f"seq {event['seq']}: hash_mismatch" in first

    # The segment changed but not the manifest: the SHA-256 is a finding too.
    (tampered / name).write_bytes(gzip.compress(b"\n".join(lines[:-1]) + b"\n"))
    moved = await node_verify("archive", str(tampered))
    assert moved.exit_code == 1 and f"segment {name}: SHA-256 differs" in moved.stderr

    # A whole campaign rewritten and re-hashed from genesis: only the checkpoint catches it.
    rewritten = tmp_path / "rewritten"
    rewrite_campaign(folder, rewritten, "camp-0003")
    plain = await node_verify("archive", str(rewritten))
    assert plain.exit_code == 0, plain.stderr
    caught = await node_verify("archive", str(rewritten), *signed)
    assert caught.exit_code == 1
    assert f"FAIL checkpoint {checkpoint.checkpoint_id} (tenant 'tenant-1'" in caught.stderr
    assert "campaign 'camp-0003' stream 'campaign'" in caught.stderr


async def test_the_second_verifier_accepts_a_tenant_export(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"{unique}."
    a = generate_history(campaigns=3, seed=41, prefix="a-", tenant="tenant-a")
    b = generate_history(campaigns=3, seed=42, prefix="b-", tenant="tenant-b")
    await produce(bootstrap, prefix, [*a.lines, *b.lines])
    folder = tmp_path / "tenant-b"
    await export(bootstrap, prefix, folder, "--tenant", "tenant-b")
    result = await node_verify("archive", str(folder))
    assert result.exit_code == 0, result.stderr
    assert f"OK: {len(b.lines)} events" in result.stderr
