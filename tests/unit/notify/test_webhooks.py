"""Standard Webhooks signing, checked with the reference library's verifier; backoff; breaker."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.notify.breaker import CircuitBreaker
from services.notify.dispatch import backoff_seconds
from services.notify.webhooks import body_bytes, new_secret, signed_headers

BODY = body_bytes({"type": "GoalReached", "data": {"campaign_id": "c-1", "seq": 5}})


def test_a_signed_delivery_verifies_with_the_reference_library() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    headers = signed_headers("msg_1", datetime.now(UTC), BODY, [secret])
    assert headers["webhook-id"] == "msg_1"
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "GoalReached",
        "data": {"campaign_id": "c-1", "seq": 5},
    }


def test_a_modified_body_fails_verification() -> None:
    secret = new_secret()
    headers = signed_headers("msg_1", datetime.now(UTC), BODY, [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"5", b"6"), headers)


def test_an_old_timestamp_fails_verification_replays() -> None:
    secret = new_secret()
    headers = signed_headers("msg_1", datetime.now(UTC) - timedelta(minutes=10), BODY, [secret])
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)


def test_another_secret_or_another_id_fails_verification() -> None:
    headers = signed_headers("msg_1", datetime.now(UTC), BODY, [new_secret()])
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    secret = new_secret()
    forged = {**signed_headers("msg_1", datetime.now(UTC), BODY, [secret]), "webhook-id": "msg_2"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, forged)


def test_during_a_rotation_both_secrets_verify() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers("msg_1", datetime.now(UTC), BODY, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempts, base in [(1, 5.0), (2, 10.0), (3, 20.0), (12, 3600.0), (40, 3600.0)]:
        delays = [backoff_seconds(attempts, 5.0, 3600.0, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base / 4  # jitter spreads retries


def test_thirty_attempts_with_the_defaults_span_most_of_a_day() -> None:
    rng = random.Random(1)
    total = sum(backoff_seconds(a, 5.0, 3600.0, rng) for a in range(1, 30))
    assert 12 * 3600 < total < 30 * 3600


def test_breaker_opens_after_consecutive_failures_and_probes_once_after_cooldown() -> None:
    b = CircuitBreaker(threshold=3, cooldown=30)
    now = time.time()
    for _ in range(2):
        b.failure("ep", now)
    assert b.allows("ep", now)
    b.failure("ep", now)
    assert not b.allows("ep", now + 1)
    assert b.allows("other", now + 1)  # one dead endpoint does not stop the others
    assert b.open_count(now + 1) == 1
    assert b.allows("ep", now + 31)  # the half-open probe
    assert not b.allows("ep", now + 31)  # only one at a time
    b.failure("ep", now + 32)
    assert not b.allows("ep", now + 33)
    assert b.allows("ep", now + 63)
    b.success("ep")
    assert b.allows("ep", now + 63) and b.allows("ep", now + 63)
