"""The command bus's murmur2 places every key where aiokafka's default partitioner does (a
compacted topic keeps each key on one partition across both writers)."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from services.pledge.adapters.command_bus import murmur2


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_murmur2_is_kafkas_for_any_key(key: bytes) -> None:
    assert murmur2(key) & 0x7FFFFFFF == aiokafka_murmur2(key) & 0x7FFFFFFF


def test_murmur2_of_known_keys_matches_the_java_client() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2 (its unit test), as unsigned.
    assert murmur2(b"21") & 0xFFFFFFFF == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == -985981536 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") & 0xFFFFFFFF == -1486304829 & 0xFFFFFFFF
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") & 0xFFFFFFFF == (
        -58897971 & 0xFFFFFFFF
    )
