"""The ``readmodel_equal`` rule: the live read model's campaign rows equal the replay.

The read model belongs to the pledge service (``services.pledge.adapters.redis_readmodel``);
the auditor only reads it. If that adapter is not installed the check fails with a clear
message rather than passing silently.
"""

from __future__ import annotations

from typing import Any

from services.audit.engine import Finding

__all__ = ["ReadModelUnavailable", "compare_readmodel"]


class ReadModelUnavailable(Exception):
    """The read model cannot be read (adapter missing, Redis unreachable)."""


def _differences(replayed: dict[str, Any], doc: dict[str, Any] | None, seq: int) -> list[str]:
    if doc is None:
        return ["the read model has no summary document"]
    wanted = {
        "status": replayed["status"],
        "outcome": replayed["outcome"],
        "total": replayed["total_minor"],
        "pledge_count": replayed["pledges"],
        "seq": replayed["last_seq"],
    }
    total = doc.get("total")
    found = {
        "status": doc.get("status"),
        "outcome": doc.get("outcome"),
        "total": total.get("amount_minor") if isinstance(total, dict) else None,
        "pledge_count": doc.get("pledge_count"),
        "seq": seq,
    }
    return [
        f"{name} {found[name]!r} in the read model, {value!r} replayed"
        for name, value in wanted.items()
        if found[name] != value
    ]


async def compare_readmodel(
    summaries: dict[str, dict[str, Any]], redis_url: str, topic_prefix: str
) -> list[Finding]:
    """One ``readmodel_equal`` finding per campaign whose live row differs from the replay."""
    try:
        import redis.asyncio as aioredis

        from services.pledge.adapters.redis_readmodel import Keys, ReadModelStore
    except ImportError as exc:
        raise ReadModelUnavailable(
            f"--against-readmodel: the pledge read model adapter is not available ({exc})"
        ) from None
    try:
        client = aioredis.Redis.from_url(redis_url)
    except ValueError as exc:  # not a redis://, rediss:// or unix:// URL
        raise ReadModelUnavailable(f"--redis-url: {exc}") from None
    try:
        store = ReadModelStore(client, Keys(topic_prefix))
        ids = [cid for cid, s in summaries.items() if s["status"] != "absent"]
        try:
            # PINGed even with nothing to compare: "clean against the read model" must mean
            # that it was read.
            await client.ping()
            rows = await store.campaigns(ids)
        except Exception as exc:
            raise ReadModelUnavailable(
                f"--redis-url: cannot read the read model at {redis_url} ({exc})"
            ) from None
    finally:
        await client.aclose()
    findings: list[Finding] = []
    for cid in ids:
        row = rows.get(cid)
        replayed = summaries[cid]
        problems = (
            ["the campaign is missing from the read model"]
            if row is None
            else _differences(replayed, row.doc, row.seq)
        )
        if problems:
            findings.append(
                Finding(
                    "readmodel_equal",
                    "; ".join(problems),
                    partition=-1,
                    ordinal=len(findings),
                    campaign_id=cid,
                    stream="campaign",
                    seq=replayed["last_seq"],
                    location="read model",
                )
            )
    return findings
