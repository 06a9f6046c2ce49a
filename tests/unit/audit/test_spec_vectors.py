"""The committed test vectors of docs/spec/event-log.md hold for the project's codec.

The Node verifier (tools/verify-js) checks the same files; if the codec ever changes a byte of
the canonical form, the hash rule or the checkpoint format, these fail before an archive
written by the new code stops verifying elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.canonical import GENESIS_HASH, canonical_bytes, chain_hash, dumps
from schemas.codec import decode, encode, verify_chain_raw, verify_hash
from services.audit.checkpoints import Checkpoint, load_public_keys
from tests.support.spec_vectors import VECTORS, build


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def test_committed_vectors_are_what_the_codec_builds_today() -> None:
    for name, data in build().items():
        assert (VECTORS / name).read_bytes() == data, f"{name} drifted from the codec"


@pytest.mark.parametrize("case", load("canonical.json"), ids=lambda c: c["name"])
def test_canonical_json_cases(case: dict[str, str]) -> None:
    value = orjson.loads(case["input"])
    assert canonical_bytes(value) == case["canonical"].encode("utf-8")
    assert dumps(orjson.loads(case["canonical"])) == case["canonical"].encode("utf-8")


@pytest.mark.parametrize("vector", load("events.json"), ids=lambda v: v["name"])
def test_event_vectors_hash_and_encode(vector: dict[str, Any]) -> None:
    body = vector["body"]
    assert list(body) != sorted(body)  # the input order is not the canonical one
    assert canonical_bytes(body) == vector["canonical_body"].encode("utf-8")
    assert chain_hash(vector["prev_hash"], canonical_bytes(body)) == vector["hash"]
    line = vector["line"].encode("utf-8")
    assert line == dumps({**body, "hash": vector["hash"]})
    assert encode(decode(line)) == line  # the typed path writes the same bytes
    assert verify_hash(orjson.loads(line), vector["prev_hash"])


def test_the_chain_verifies_from_genesis() -> None:
    lines = (VECTORS / "chain.jsonl").read_bytes().splitlines()
    firsts = [orjson.loads(x) for x in lines if orjson.loads(x)["seq"] == 1]
    assert firsts and all(e["prev_hash"] == GENESIS_HASH for e in firsts)
    assert verify_chain_raw(lines) is None
    assert verify_chain_raw([orjson.loads(x) for x in lines]) is None


@pytest.mark.parametrize("case", load("bad-chains.json"), ids=lambda c: c["name"])
def test_bad_chains_break_where_the_vector_says(case: dict[str, Any]) -> None:
    broken = verify_chain_raw([x.encode("utf-8") for x in case["lines"]])
    assert broken is not None
    assert (broken.index, broken.reason) == (case["fails_at"], case["reason"])


def test_the_checkpoint_vector_verifies_and_is_deterministic(tmp_path: Path) -> None:
    vector = load("checkpoint.json")
    checkpoint = Checkpoint.parse(vector["line"])
    keys = load_public_keys([VECTORS / "checkpoint-test-key.pub.pem"])
    assert list(keys) == [vector["key_id"]] == [checkpoint.key_id]
    assert checkpoint.verify(keys) is None
    assert checkpoint.message() == vector["signed_message"].encode()
    assert checkpoint.checkpoint_id == vector["checkpoint_id"]
    assert checkpoint.encode() == vector["line"].encode()
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["private_key_seed_hex"]))
    assert key.sign(checkpoint.message()).hex() == _signature_hex(checkpoint)
    lines = [orjson.loads(x) for x in (VECTORS / "chain.jsonl").read_bytes().splitlines()]
    heads = {(e["campaign_id"], e["stream"]): (e["seq"], e["hash"]) for e in lines}
    assert {(c, s): (n, h) for c, s, n, h in checkpoint.chains} == heads


def _signature_hex(checkpoint: Checkpoint) -> str:
    import base64

    return base64.b64decode(checkpoint.signature).hex()
