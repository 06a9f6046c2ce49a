"""The erasable payment-token store settlement reads: written by the API's adapter, looked up
by pledge key, erased by a tombstone (real broker)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas.tenancy import pledge_key, qualify
from services.pledge.adapters.payment_tokens import (
    KafkaPaymentTokens,
    forget_payment_token,
    load_payment_tokens,
)
from tests.support.api import api_settings, create_topics
from tests.support.infra import kafka_bootstrap, redis_url, unique_name

pytestmark = pytest.mark.integration


async def test_tokens_are_found_by_pledge_and_erased_by_a_tombstone(broker: Any) -> None:
    settings = api_settings(kafka_bootstrap(), redis_url(), unique_name("tok"))
    topics = await create_topics(settings)
    campaign = qualify("tenant-a", "c-1")
    first, second = pledge_key(campaign, "p1"), pledge_key(campaign, "p2")
    store = KafkaPaymentTokens(settings.kafka_bootstrap, topics.payment_tokens)
    await store.start()
    try:
        await store.put([(first, "tok_one"), (second, "tok_two")])
    finally:
        await store.stop()
    found = await load_payment_tokens(
        settings.kafka_bootstrap, topics.payment_tokens, topics.partitions
    )
    assert found == {first: "tok_one", second: "tok_two"}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await forget_payment_token(producer, topics.payment_tokens, first)
    finally:
        await producer.stop()
    left = await load_payment_tokens(
        settings.kafka_bootstrap, topics.payment_tokens, topics.partitions
    )
    assert left == {second: "tok_two"}
