"""The auditor's verify+fold engine: exact fast path, chain rules, and a fold equal to the
domain's ``evolve``."""

from __future__ import annotations

import orjson
import pytest

from schemas.canonical import chain_hash, dumps
from services.audit.engine import PartitionAuditor, PartitionResult
from services.audit.fold import FINAL_REFUSALS
from services.pledge.domain import FINAL_PLEDGE_REFUSALS, replay
from tests.support.history import History, generate_history, restamp_chain


@pytest.fixture(scope="module")
def history() -> History:
    return generate_history(campaigns=12, seed=5)


def audit(lines: list[bytes], *, holdback: bool = False) -> PartitionResult:
    auditor = PartitionAuditor(0, holdback=holdback)
    auditor.feed(lines, 0)
    return auditor.finish()


def test_a_generated_history_is_clean(history: History) -> None:
    result = audit(history.lines)
    assert result.events == len(history.envelopes)
    assert not result.findings and not result.rule_counts


def test_fold_equals_the_domain_replay(history: History) -> None:
    summaries = audit(history.lines).summaries
    assert set(summaries) == set(history.states)
    for campaign_id, expected in history.states.items():
        state = replay(campaign_id, history.of(campaign_id))
        got = summaries[campaign_id]
        assert (got["status"], got["outcome"], got["total_minor"], got["pledges"]) == (
            state.status, state.outcome, state.total_minor, state.pledge_count,
        )  # fmt: skip
        assert got["last_seq"] == state.seq == expected.seq
        assert got["goal_reached"] == (state.goal_reached_at is not None)


def test_outcomes_cover_funded_failed_cancelled(history: History) -> None:
    assert {"funded", "failed", "cancelled"} <= set(history.outcomes.values())


def test_final_refusals_match_the_domain() -> None:
    assert {str(r) for r in FINAL_PLEDGE_REFUSALS} == FINAL_REFUSALS


def test_a_non_canonical_but_authentic_line_is_accepted(history: History) -> None:
    lines = history.lines
    raw = orjson.loads(lines[0])
    lines[0] = orjson.dumps(raw, option=orjson.OPT_INDENT_2)  # other whitespace, same content
    assert b"\n" in lines[0]
    lines[0] = lines[0].replace(b"\n", b" ")
    assert not audit(lines).findings


def test_every_single_byte_flip_of_a_line_is_detected(history: History) -> None:
    lines = history.lines
    target = next(i for i, x in enumerate(lines) if b'"PledgeMade"' in x)
    for position in range(0, len(lines[target]), 7):
        tampered = list(lines)
        line = tampered[target]
        tampered[target] = line[:position] + bytes([line[position] ^ 0x04]) + line[position + 1 :]
        result = audit(tampered)
        assert result.findings, position
        first = result.findings[0]
        assert first.ordinal == target, (position, first)
        assert first.rule in {"hash_intact", "well_formed", "seq_gapless", "prev_hash_links"}


def test_the_hash_member_moved_into_the_payload_is_rejected(history: History) -> None:
    lines = history.lines
    target = next(i for i, x in enumerate(lines) if b'"PledgeMade"' in x)
    line = lines[target]
    at = line.find(b',"hash":"')
    member = line[at : at + 74]
    body = line[:at] + line[at + 74 :]
    inside = body.find(b',"pledge_id"')
    lines[target] = body[:inside] + member + body[inside:]
    result = audit(lines)
    assert result.findings and result.findings[0].ordinal == target
    assert result.findings[0].rule == "well_formed"


def test_a_recomputed_hash_still_breaks_the_next_link(history: History) -> None:
    lines = history.lines
    raws = [orjson.loads(x) for x in lines]
    target = next(i for i, r in enumerate(raws) if r["event_type"] == "PledgeMade")
    raw = raws[target]
    raw["payload"]["amount"]["amount_minor"] += 100
    body = {k: v for k, v in raw.items() if k != "hash"}
    raw["hash"] = chain_hash(raw["prev_hash"], dumps(body))
    lines[target] = dumps(raw)
    result = audit(lines)
    first = result.findings[0]
    assert first.rule == "prev_hash_links"
    assert first.campaign_id == raw["campaign_id"] and first.seq == raw["seq"] + 1


def test_out_of_order_events_are_held_back_when_reading_kafka(history: History) -> None:
    lines = history.lines
    # Move every GoalReached to the very end, as a fetch of its own topic could.
    goals = [x for x in lines if b'"GoalReached"' in x]
    reordered = [x for x in lines if b'"GoalReached"' not in x] + goals
    assert audit(reordered).findings
    held = audit(reordered, holdback=True)
    assert not held.findings
    assert held.summaries == audit(lines).summaries


def test_a_gap_that_never_fills_is_named_when_reading_kafka(history: History) -> None:
    lines = history.lines
    target = next(i for i, x in enumerate(lines) if b'"PledgeMade"' in x)
    missing = orjson.loads(lines[target])
    result = audit(lines[:target] + lines[target + 1 :], holdback=True)
    first = result.findings[0]
    assert first.rule == "seq_gapless"
    assert (first.campaign_id, first.seq) == (missing["campaign_id"], missing["seq"] + 1)


def _rechained(lines: list[bytes], campaign_id: str, stream: str, edit: object) -> list[bytes]:
    """The log with one chain edited by ``edit(list_of_raw)`` and re-stamped (a writer bug,
    not tampering: the hashes are right)."""
    raws = [orjson.loads(x) for x in lines]
    chain = [r for r in raws if r["campaign_id"] == campaign_id and r["stream"] == stream]
    edit(chain)  # type: ignore[operator]
    rest = [r for r in raws if not (r["campaign_id"] == campaign_id and r["stream"] == stream)]
    return [dumps(r) for r in list(restamp_chain(chain)) + rest]


def _first_rule(lines: list[bytes]) -> tuple[str, str | None, int | None]:
    result = audit(lines)
    assert result.findings, "expected a finding"
    first = result.findings[0]
    return first.rule, first.event_type, first.seq


def test_a_second_goal_reached_is_named(history: History) -> None:
    cid = next(c for c, s in history.states.items() if s.goal_reached_at is not None)

    def twice(chain: list[dict[str, object]]) -> None:
        i = next(i for i, r in enumerate(chain) if r["event_type"] == "GoalReached")
        chain.insert(i + 2, dict(chain[i]))

    assert _first_rule(_rechained(history.lines, cid, "campaign", twice))[0] == "goal_reached_once"


def test_a_missing_goal_reached_is_named(history: History) -> None:
    cid = next(c for c, s in history.states.items() if s.goal_reached_at is not None)

    def drop(chain: list[dict[str, object]]) -> None:
        i = next(i for i, r in enumerate(chain) if r["event_type"] == "GoalReached")
        del chain[i]

    rule, _, _ = _first_rule(_rechained(history.lines, cid, "campaign", drop))
    assert rule == "goal_reached_consistent"


def test_a_wrong_close_outcome_is_named(history: History) -> None:
    cid = next(c for c, s in history.states.items() if s.outcome == "failed")

    def funded(chain: list[dict[str, object]]) -> None:
        closed = next(r for r in chain if r["event_type"] == "CampaignClosed")
        closed["payload"] = dict(closed["payload"], outcome="funded")  # type: ignore[call-overload]

    rule, event_type, _ = _first_rule(_rechained(history.lines, cid, "campaign", funded))
    assert (rule, event_type) == ("close_outcome", "CampaignClosed")


def test_a_redelivered_event_is_named_when_reading_kafka(history: History) -> None:
    lines = history.lines
    target = next(i for i, x in enumerate(lines) if b'"PledgeMade"' in x)
    twice = orjson.loads(lines[target])
    result = audit([*lines[: target + 3], lines[target], *lines[target + 3 :]], holdback=True)
    first = result.findings[0]
    assert first.rule == "seq_gapless" and "duplicate" in first.detail
    assert (first.campaign_id, first.seq, first.ordinal) == (
        twice["campaign_id"], twice["seq"], target + 3,
    )  # fmt: skip


def test_a_held_back_event_delivered_twice_is_named_once(history: History) -> None:
    lines = history.lines
    goal = next(x for x in lines if b'"GoalReached"' in x)
    reordered = [x for x in lines if x != goal] + [goal, goal]
    result = audit(reordered, holdback=True)
    assert [f.rule for f in result.findings] == ["seq_gapless"]
    assert "duplicate" in result.findings[0].detail
    assert result.summaries == audit(lines).summaries
