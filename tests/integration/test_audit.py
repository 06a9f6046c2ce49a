"""`pledgeflow audit` against the real broker: export, verify, replay, report.

Generated histories (decided by the pure domain, plus generated settlement streams) are written
to real topics under a unique prefix with a plain aiokafka producer, one topic per event type,
keyed by campaign, as the processor writes them.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from schemas.topics import Topics, ensure_topics
from services.audit.archive import MANIFEST, Manifest
from services.pledge.adapters.redis_readmodel import Keys, ReadModelStore
from tests.support.api import api_settings, free_port, projector
from tests.support.history import generate_history, restamp_chain

pytestmark = pytest.mark.integration

PARTITIONS = 3


async def produce(bootstrap: str, prefix: str, lines: Iterable[bytes]) -> None:
    """Write canonical envelope lines to their event-type topics, keyed by campaign, in one
    transaction (event topics have transactional writers only; a reader dead-letters a record
    written outside one)."""
    await ensure_topics(bootstrap, Topics(prefix=prefix, partitions=PARTITIONS))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"{prefix}history-writer", linger_ms=5
    )
    await producer.start()
    try:
        async with producer.transaction():
            for line in lines:
                raw = orjson.loads(line)
                await producer.send(
                    prefix + raw["event_type"], line, key=raw["campaign_id"].encode()
                )
    finally:
        await producer.stop()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stderr


async def run(*args: str) -> Result:
    """The real console script in a subprocess (it forks workers and runs its own loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "audit", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def verify_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = await run("verify", *args, "--json")
    return result.exit_code, orjson.loads(result.stdout)


def kafka_args(bootstrap: str, prefix: str) -> list[str]:
    return ["--from-kafka", "--bootstrap", bootstrap, "--topic-prefix", prefix]


async def export(bootstrap: str, prefix: str, folder: Path) -> dict[str, Any]:
    result = await run("export", str(folder), "--bootstrap", bootstrap, "--topic-prefix", prefix,
                 "--json", "--segment-events", "150")  # fmt: skip
    assert result.exit_code == 0, result.output
    return dict(orjson.loads(result.stdout))


def segment_lines(folder: Path) -> dict[str, list[bytes]]:
    manifest = Manifest.load(folder)
    return {
        s.name: gzip.decompress((folder / s.name).read_bytes()).splitlines()
        for s in manifest.segments
    }


def rewrite(folder: Path, name: str, lines: list[bytes]) -> None:
    (folder / name).write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))


@pytest.fixture(scope="module")
def history_lines() -> list[bytes]:
    return generate_history(campaigns=8, seed=11).lines


@pytest.fixture
async def exported(
    bootstrap: str, unique: str, tmp_path: Path, history_lines: list[bytes]
) -> tuple[str, Path]:
    prefix = f"{unique}."
    await produce(bootstrap, prefix, history_lines)
    folder = tmp_path / "archive"
    await export(bootstrap, prefix, folder)
    return prefix, folder


def pick(folder: Path, event_type: bytes) -> tuple[str, int, dict[str, Any]]:
    """A segment, line index and parsed event of ``event_type`` that has a successor in its
    chain within the same segment."""
    for name, lines in segment_lines(folder).items():
        for i, line in enumerate(lines[:-1]):
            raw = orjson.loads(line)
            if raw["event_type"] == event_type.decode():
                later = [orjson.loads(x) for x in lines[i + 1 :]]
                if any(
                    r["campaign_id"] == raw["campaign_id"] and r["stream"] == raw["stream"]
                    for r in later
                ):
                    return name, i, raw
    raise AssertionError("no such event")


async def test_export_then_verify_is_clean(
    bootstrap: str, exported: tuple[str, Path], history_lines: list[bytes]
) -> None:
    _, folder = exported
    code, report = await verify_json("--from", str(folder))
    assert code == 0, report["first"]
    assert report["ok"] and report["events"] == len(history_lines)
    manifest = orjson.loads((folder / MANIFEST).read_bytes())
    assert manifest["counts"]["events"] == len(history_lines)
    assert manifest["exported_at"] and all(len(s["sha256"]) == 64 for s in manifest["segments"])
    ranges = [r for s in manifest["segments"] for r in s["offsets"].values()]
    assert ranges and all(first <= last for first, last in ranges)


async def test_verify_from_kafka_and_from_archive_agree(
    bootstrap: str, exported: tuple[str, Path]
) -> None:
    prefix, folder = exported
    code_kafka, from_kafka = await verify_json(*kafka_args(bootstrap, prefix))
    code_archive, from_archive = await verify_json("--from", str(folder))
    assert code_kafka == code_archive == 0
    assert from_kafka["events"] == from_archive["events"]
    replay_kafka = orjson.loads(
        (await run("replay", *kafka_args(bootstrap, prefix), "--json")).stdout
    )
    replay_archive = orjson.loads((await run("replay", "--from", str(folder), "--json")).stdout)
    assert replay_kafka["campaigns"] == replay_archive["campaigns"]
    outcomes = {c["outcome"] for c in replay_archive["campaigns"]}
    assert {"funded", "failed", "cancelled"} <= outcomes
    assert any(c["cancelled"] for c in replay_archive["campaigns"])
    assert all(c["settled"] for c in replay_archive["campaigns"])


async def test_flipped_byte_is_named(exported: tuple[str, Path]) -> None:
    _, folder = exported
    name, i, raw = pick(folder, b"PledgeMade")
    lines = segment_lines(folder)[name]
    at = lines[i].find(b'"backer_id":"') + 14
    lines[i] = lines[i][:at] + bytes([lines[i][at] ^ 0x01]) + lines[i][at + 1 :]
    rewrite(folder, name, lines)
    code, report = await verify_json("--from", str(folder))
    assert code == 1
    first = report["first"]
    assert first["rule"] == "hash_intact"
    assert (first["campaign_id"], first["seq"], first["event_id"]) == (
        raw["campaign_id"], raw["seq"], raw["event_id"],
    )  # fmt: skip
    assert first["topic"].endswith(".PledgeMade") and first["offset"] is not None
    assert any("SHA-256" in problem for problem in report["archive_findings"])


async def test_deleted_line_is_named(exported: tuple[str, Path]) -> None:
    _, folder = exported
    name, i, raw = pick(folder, b"PledgeMade")
    lines = segment_lines(folder)[name]
    successor = next(
        orjson.loads(x) for x in lines[i + 1 :]
        if orjson.loads(x)["campaign_id"] == raw["campaign_id"]
        and orjson.loads(x)["stream"] == raw["stream"]
    )  # fmt: skip
    del lines[i]
    rewrite(folder, name, lines)
    code, report = await verify_json("--from", str(folder))
    assert code == 1
    first = report["first"]
    assert first["rule"] == "seq_gapless", (raw, report["findings"][:3])
    assert (first["campaign_id"], first["seq"]) == (raw["campaign_id"], raw["seq"] + 1)
    assert first["event_id"] == successor["event_id"]
    assert f"where {raw['seq']} was expected" in first["detail"]


async def test_swapped_lines_are_named(exported: tuple[str, Path]) -> None:
    _, folder = exported
    name, i, raw = pick(folder, b"PledgeMade")
    lines = segment_lines(folder)[name]
    j = next(
        k for k in range(i + 1, len(lines))
        if orjson.loads(lines[k])["campaign_id"] == raw["campaign_id"]
        and orjson.loads(lines[k])["stream"] == raw["stream"]
    )  # fmt: skip
    later = orjson.loads(lines[j])
    lines[i], lines[j] = lines[j], lines[i]
    rewrite(folder, name, lines)
    code, report = await verify_json("--from", str(folder))
    assert code == 1
    first = report["first"]
    assert first["rule"] == "seq_gapless"
    assert (first["campaign_id"], first["seq"]) == (later["campaign_id"], later["seq"])
    # Named by its own Kafka coordinates (the index is matched by event id, not position).
    assert first["event_id"] == later["event_id"]
    assert first["topic"].endswith("." + later["event_type"])


async def test_duplicated_pledge_is_named(
    bootstrap: str, unique: str, tmp_path: Path, history_lines: list[bytes]
) -> None:
    """A writer bug: a second PledgeMade with a used pledge id, correctly chained."""
    raws = [orjson.loads(line) for line in history_lines]
    cid = next(r["campaign_id"] for r in raws if r["event_type"] == "PledgeMade")
    chain = [r for r in raws if r["campaign_id"] == cid and r["stream"] == "campaign"]
    made = [i for i, r in enumerate(chain) if r["event_type"] == "PledgeMade"]
    duplicate = dict(chain[made[2]], causation_id="cmd-duplicate")
    chain.insert(made[3], duplicate)
    restamped = list(restamp_chain(chain))
    bad_seq = made[3] + 1
    others = [r for r in raws if not (r["campaign_id"] == cid and r["stream"] == "campaign")]
    lines = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in restamped + others]
    prefix = f"{unique}."
    await produce(bootstrap, prefix, lines)
    folder = tmp_path / "dup"
    await export(bootstrap, prefix, folder)
    for source in (["--from", str(folder)], kafka_args(bootstrap, prefix)):
        code, report = await verify_json(*source)
        assert code == 1
        first = report["first"]
        assert first["rule"] == "pledge_id_unique", first
        assert (first["campaign_id"], first["seq"]) == (cid, bad_seq)
        assert first["topic"] == prefix + "PledgeMade"


async def test_incremental_export_appends_only_new_events(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    first_half = generate_history(campaigns=4, seed=3, prefix="a-").lines
    second_half = generate_history(campaigns=3, seed=4, prefix="b-").lines
    prefix = f"{unique}."
    folder = tmp_path / "inc"
    await produce(bootstrap, prefix, first_half)
    before = await export(bootstrap, prefix, folder)
    assert before["events"] == len(first_half)
    again = await export(bootstrap, prefix, folder)
    assert again["events"] == 0 and again["segments"] == []
    await produce(bootstrap, prefix, second_half)
    after = await export(bootstrap, prefix, folder)
    assert after["events"] == len(second_half)
    assert after["archive_events"] == len(first_half) + len(second_half)
    new = {
        name: lines for name, lines in segment_lines(folder).items() if name in after["segments"]
    }
    assert all(orjson.loads(x)["campaign_id"].startswith("b-") for v in new.values() for x in v)
    code, report = await verify_json("--from", str(folder))
    assert code == 0 and report["events"] == len(first_half) + len(second_half)


async def test_report_formats(exported: tuple[str, Path], tmp_path: Path) -> None:
    _, folder = exported
    replayed = orjson.loads((await run("replay", "--from", str(folder), "--json")).stdout)
    funded = next(c for c in replayed["campaigns"] if c["outcome"] == "funded")
    result = await run("report", "--from", str(folder), "--campaign", funded["campaign_id"],
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    statement = orjson.loads(result.stdout)
    assert statement["totals"]["payout_minor"] == funded["payout_minor"]
    entries = statement["ledger"]["entries"]
    assert sum(e["debit_minor"] for e in entries) == sum(e["credit_minor"] for e in entries)
    for fmt, marker in (("csv", "section,ref"), ("md", "# Campaign statement")):
        out = await run("report", "--from", str(folder), "--campaign", funded["campaign_id"],
                  "--format", fmt)  # fmt: skip
        assert out.exit_code == 0 and marker in out.stdout


async def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    for args in (
        ["verify"],
        ["verify", "--from", str(tmp_path / "nowhere")],
        ["verify", "--from", str(tmp_path), "--workers", "0"],
        ["report", "--from", str(tmp_path), "--campaign", "x", "--format", "xml"],
        ["export", str(tmp_path / "x"), "--topics", "NoSuchEvent"],
        ["verify", "--bogus"],
        # aiokafka's own "Unable connect" log line used to come first: two lines
        ["verify", "--from-kafka", "--bootstrap", f"127.0.0.1:{free_port()}"],
        ["export", str(tmp_path / "y"), "--bootstrap", f"127.0.0.1:{free_port()}"],
    ):
        result = await run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith("error: ")
        assert "--" in result.output


async def test_against_readmodel_fails_clearly_without_a_read_model(
    exported: tuple[str, Path], redis_server: str, unique: str
) -> None:
    _, folder = exported
    result = await run("verify", "--from", str(folder), "--against-readmodel", "--redis-url",
                 redis_server, "--topic-prefix", f"{unique}-none.", "--json")  # fmt: skip
    assert result.exit_code == 1
    report = orjson.loads(result.stdout)
    assert report["counts_by_rule"] == {"readmodel_equal": len(report["findings"])}
    assert "missing from the read model" in report["first"]["detail"]


async def test_against_readmodel_names_a_redis_url_it_cannot_use(
    exported: tuple[str, Path],
) -> None:
    # "nope" was redis-py's ValueError traceback; an unreachable Redis with nothing to compare
    # (here: an unknown --campaign) answered "OK ... pass", as if the read model had been read.
    _, folder = exported
    for url, extra in (
        ("nope", []),
        (f"redis://127.0.0.1:{free_port()}/0", ["--campaign", "no-such-campaign"]),
    ):
        result = await run(
            "verify", "--from", str(folder), "--against-readmodel", "--redis-url", url, *extra
        )
        assert result.exit_code == 2, (url, result.stdout, result.output)
        assert result.output.count("\n") == 1, result.output
        assert result.output.startswith("error: --redis-url: "), result.output


async def test_verify_against_a_live_read_model_is_clean_then_names_a_drifted_campaign(
    bootstrap: str, redis_server: str, unique: str, history_lines: list[bytes]
) -> None:
    settings = api_settings(bootstrap, redis_server, unique, partitions=PARTITIONS)
    prefix = settings.topic_prefix
    await produce(bootstrap, prefix, history_lines)
    last_seq: dict[str, int] = {}
    for line in history_lines:
        raw = orjson.loads(line)
        if raw["stream"] == "campaign":
            last_seq[raw["campaign_id"]] = max(last_seq.get(raw["campaign_id"], 0), raw["seq"])

    client = aioredis.Redis.from_url(redis_server)
    store = ReadModelStore(client, Keys(prefix))
    try:
        # The pledge service's real projector fills the read model from the same topics.
        async with projector(settings):
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                rows = await store.campaigns(list(last_seq))
                if all(cid in rows and rows[cid].seq == s for cid, s in last_seq.items()):
                    break
                assert asyncio.get_running_loop().time() < deadline, "projector did not catch up"
                await asyncio.sleep(0.2)

        args = [*kafka_args(bootstrap, prefix), "--against-readmodel", "--redis-url", redis_server]
        code, report = await verify_json(*args)
        assert code == 0, report["findings"][:3]

        # The read model drifts from the log: verify names the campaign.
        victim = sorted(last_seq)[0]
        key = Keys(prefix).campaign(victim)
        doc = orjson.loads(await client.hget(key, "doc"))
        doc["total"]["amount_minor"] += 1
        await client.hset(key, "doc", orjson.dumps(doc))
        code, report = await verify_json(*args)
        assert code == 1
        assert report["counts_by_rule"] == {"readmodel_equal": 1}
        assert report["first"]["rule"] == "readmodel_equal"
        assert report["first"]["campaign_id"] == victim
        assert "total" in report["first"]["detail"]
    finally:
        await client.aclose()


async def test_verify_from_kafka_skips_aborted_transactions(
    bootstrap: str, unique: str, history_lines: list[bytes]
) -> None:
    """The processor writes in transactions: an aborted batch (here a forged next event and a
    tampered copy of a real one, interleaved with the committed history) is never audited."""
    prefix = f"{unique}."
    await ensure_topics(bootstrap, Topics(prefix=prefix, partitions=PARTITIONS))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"{unique}-tx", linger_ms=5
    )
    await producer.start()

    async def send(line: bytes) -> None:
        raw = orjson.loads(line)
        await producer.send(prefix + raw["event_type"], line, key=raw["campaign_id"].encode())

    try:
        step = 40
        for start in range(0, len(history_lines), step):
            async with producer.transaction():
                for line in history_lines[start : start + step]:
                    await send(line)
            following = history_lines[start + step : start + step + 1]
            if following:
                await producer.begin_transaction()
                forged = orjson.loads(following[0])
                await send(following[0])  # would be a duplicate when the real one follows
                forged["causation_id"] = "forged"  # would break hash_intact
                await send(orjson.dumps(forged, option=orjson.OPT_SORT_KEYS))
                await producer.abort_transaction()
    finally:
        await producer.stop()
    code, report = await verify_json(*kafka_args(bootstrap, prefix))
    assert code == 0, report["findings"][:3]
    assert report["events"] == len(history_lines)


async def test_tampered_kafka_record_is_named_by_its_offset(
    bootstrap: str, unique: str, history_lines: list[bytes]
) -> None:
    """Read straight from Kafka, a record whose content no longer matches its hash is named
    by its own topic and offset."""
    kinds = [orjson.loads(line)["event_type"] for line in history_lines]
    victim = kinds.index("PledgeMade")
    raw = orjson.loads(history_lines[victim])
    line = history_lines[victim]
    at = line.find(b'"backer_id":"') + 14
    tampered = line[:at] + bytes([line[at] ^ 0x01]) + line[at + 1 :]
    lines = [*history_lines[:victim], tampered, *history_lines[victim + 1 :]]
    prefix = f"{unique}."
    await produce(bootstrap, prefix, lines)
    before = sum(
        1
        for x in history_lines[:victim]
        if orjson.loads(x)["event_type"] == "PledgeMade"
        and partition_of(orjson.loads(x)["campaign_id"]) == partition_of(raw["campaign_id"])
    )
    code, report = await verify_json(*kafka_args(bootstrap, prefix))
    assert code == 1
    first = report["first"]
    assert first["rule"] == "hash_intact"
    assert (first["campaign_id"], first["seq"], first["event_id"]) == (
        raw["campaign_id"], raw["seq"], raw["event_id"],
    )  # fmt: skip
    assert (first["topic"], first["offset"]) == (prefix + "PledgeMade", before)


def partition_of(campaign_id: str) -> int:
    from services.audit.sources import partition_for

    return partition_for(campaign_id, PARTITIONS)
