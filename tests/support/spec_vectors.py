"""Builds the test vectors of docs/spec/event-log.md with the project's own codec.

``python -m tests.support.spec_vectors`` (re)writes ``docs/spec/vectors/``; the committed files
are what both verifiers check (tests/unit/audit/test_spec_vectors.py, tools/verify-js). Run it
only when the spec changes on purpose: a codec change that alters a vector is a format break.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.canonical import chain_hash, dumps
from services.audit.checkpoints import public_pem, sign_checkpoint
from tests.support.history import START, generate_history, restamp_chain

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "spec" / "vectors"
#: The checkpoint vector's key: public on purpose, never used anywhere but here.
TEST_KEY_SEED = bytes(range(32))
#: A title exercising every escaping rule: quote, backslash, solidus, control characters
#: (short and \\u forms), DEL, non-ASCII, an astral character and U+2028.
TRICKY_TITLE = 'Caf\u00e9 "quoted" \\ / \n\t\b\f\r\u0001\u001f\u007f \U0001f389 \u2028 end'

CANONICAL_CASES: list[tuple[str, str]] = [
    ("keys sorted by code point, not UTF-16", '{"\U0001f389": 3, "\uffff": 4, "b": 1, "a": 2}'),
    ("nested objects sorted, arrays kept in order", '{"z": [3, 1, {"y": 1, "x": 2}], "a": {}}'),
    ("no whitespace", '{ "a" : [ 1 , 2 ] ,\n "b" : null , "c" : true, "d": false }'),
    ("escapes", json.dumps({"s": TRICKY_TITLE})),
    ("non-ASCII stays UTF-8, \\u escapes in input are decoded", '{"s": "\\u00e9\\ud83c\\udf89"}'),
    ("integers beyond 2^53 keep every digit", '{"big": 9223372036854775807, "neg": -42}'),
    ("empty string and zero", '{"e": "", "z": 0}'),
]


def _history_lines() -> list[dict[str, Any]]:
    """A small campaign (4 events) and its settlement (2), the title made tricky."""
    history = generate_history(campaigns=1, pledges=(2, 3), seed=1)
    raws = [orjson.loads(line) for line in history.lines]
    campaign = [r for r in raws if r["stream"] == "campaign"]
    campaign[0]["payload"]["title"] = TRICKY_TITLE
    restamped = {r["event_id"]: r for r in restamp_chain(campaign)}
    return [restamped.get(r["event_id"], r) for r in raws]


def _bad_chains(lines: list[bytes]) -> list[dict[str, Any]]:
    edited = orjson.loads(lines[1])
    edited["payload"]["amount"]["amount_minor"] += 1
    rehashed = dict(edited)
    del rehashed["hash"]
    rehashed["hash"] = chain_hash(rehashed["prev_hash"], dumps(rehashed))
    first = orjson.loads(lines[0])
    first["prev_hash"] = "1" * 64
    del first["hash"]
    first["hash"] = chain_hash(first["prev_hash"], dumps(first))

    def text(items: list[bytes]) -> list[str]:
        return [x.decode() for x in items]

    return [
        {
            "name": "payload edited, hash left",
            "lines": text([lines[0], dumps(edited), *lines[2:]]),
            "fails_at": 1,
            "reason": "hash_mismatch",
        },
        {
            "name": "payload edited and re-hashed alone: the successor no longer links",
            "lines": text([lines[0], dumps(rehashed), *lines[2:]]),
            "fails_at": 2,
            "reason": "prev_hash_mismatch",
        },
        {
            "name": "an event deleted",
            "lines": text([lines[0], *lines[2:]]),
            "fails_at": 1,
            "reason": "seq_gap",
        },
        {
            "name": "two events swapped",
            "lines": text([lines[0], lines[2], lines[1], *lines[3:]]),
            "fails_at": 1,
            "reason": "seq_gap",
        },
        {
            "name": "first event does not start from the genesis hash",
            "lines": text([dumps(first)]),
            "fails_at": 0,
            "reason": "prev_hash_mismatch",
        },
        {
            "name": "not JSON",
            "lines": text([lines[0], b'{"campaign_id":']),
            "fails_at": 1,
            "reason": "malformed",
        },
    ]


def build() -> dict[str, bytes]:
    """Every vector file's bytes, by name."""
    raws = _history_lines()
    lines = [dumps(r) for r in raws]
    events = []
    for raw in raws:
        body = {k: v for k, v in raw.items() if k != "hash"}
        shuffled = dict(reversed(list(body.items())))  # input key order must not matter
        events.append(
            {
                "name": f"{raw['stream']} seq {raw['seq']} {raw['event_type']}",
                "body": shuffled,
                "canonical_body": dumps(body).decode(),
                "prev_hash": raw["prev_hash"],
                "hash": raw["hash"],
                "line": dumps(raw).decode(),
            }
        )
    canonical = [
        {"name": name, "input": text, "canonical": dumps(orjson.loads(text)).decode()}
        for name, text in CANONICAL_CASES
    ]
    key = Ed25519PrivateKey.from_private_bytes(TEST_KEY_SEED)
    heads = {(r["campaign_id"], r["stream"]): (r["seq"], r["hash"]) for r in raws}
    checkpoint = sign_checkpoint(key, "tenant-1", heads, START, "manual")
    checkpoint_vector = {
        "private_key_seed_hex": TEST_KEY_SEED.hex(),
        "public_key_pem": public_pem(key).decode(),
        "key_id": checkpoint.key_id,
        "signed_message": checkpoint.message().decode(),
        "checkpoint_id": checkpoint.checkpoint_id,
        "line": checkpoint.encode().decode(),
    }

    def pretty(value: Any) -> bytes:
        return json.dumps(value, indent=2, ensure_ascii=True).encode() + b"\n"

    return {
        "canonical.json": pretty(canonical),
        "events.json": pretty(events),
        "chain.jsonl": b"".join(line + b"\n" for line in lines),
        "bad-chains.json": pretty(_bad_chains(lines)),
        "checkpoint.json": pretty(checkpoint_vector),
        "checkpoint-test-key.pub.pem": public_pem(key),
    }


def main() -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (VECTORS / name).write_bytes(data)
        print(f"wrote {VECTORS / name}")


if __name__ == "__main__":
    main()
