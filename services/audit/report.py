"""What the auditor prints: the replay table and a campaign statement (json, csv, md)."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.table import Table

from schemas.money import CURRENCY_EXPONENTS
from services.audit.engine import Finding
from services.audit.fold import AMOUNT, BACKER, ENDED_SEQ, MADE_SEQ, STATUS, TIER, CampaignFold

__all__ = ["FORMATS", "render_statement", "replay_table", "statement"]

FORMATS = ("json", "csv", "md")


def money(minor: int | None, currency: str | None) -> str:
    """``1,234.50 EUR`` (``-`` when unknown)."""
    if minor is None or currency is None:
        return "-"
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exponent)
    text = f"{whole:,}" + (f".{frac:0{exponent}d}" if exponent else "")
    return f"{sign}{text} {currency}"


def replay_table(summaries: dict[str, dict[str, Any]], *, limit: int | None = None) -> Table:
    """One row per campaign: status, goal, total, pledges, outcome, settlement totals."""
    table = Table(title=f"Campaigns ({len(summaries)})")
    columns = ("campaign", "status", "goal", "total", "pledges", "outcome", "captured", "fees",
               "commission", "payout")  # fmt: skip
    for column in columns:
        left = column in ("campaign", "status", "outcome")
        table.add_column(column, justify="left" if left else "right")
    for i, s in enumerate(summaries.values()):
        if limit is not None and i >= limit:
            table.caption = f"... {len(summaries) - limit} more (use --json for all)"
            break
        cur = s["currency"]
        table.add_row(
            s["campaign_id"],
            s["status"],
            money(s["goal_minor"], cur),
            money(s["total_minor"], cur),
            str(s["pledges"]),
            s["outcome"] or "-",
            money(s["captured_minor"], cur) if s["captured_count"] else "-",
            money(s["fees_minor"], cur) if s["captured_count"] else "-",
            money(s["commission_minor"], cur),
            money(s["payout_minor"], cur),
        )
    return table


def statement(fold: CampaignFold, findings: list[Finding]) -> dict[str, Any]:
    """A campaign statement for creators and auditors: pledges, cancellations, settlement
    (captures, failures, releases, refunds, fees), payout and the ledger."""
    cur = fold.currency
    pledges = [
        {
            "pledge_id": pid,
            "backer_id": p[BACKER],
            "amount_minor": p[AMOUNT],
            "tier_id": p[TIER],
            "status": p[STATUS],
            "seq": p[MADE_SEQ],
            "ended_seq": p[ENDED_SEQ],
        }
        for pid, p in fold.pledges.items()
    ]
    settlement = [
        {
            "event_type": e.event_type,
            "pledge_id": e.pledge_id,
            "amount_minor": e.amount_minor,
            "fee_minor": e.fee_minor,
            "currency": e.currency,
            "seq": e.seq,
        }
        for e in fold.settlement
    ]
    summary = fold.summary()
    settled = fold.settled
    ledger: list[dict[str, Any]] = []
    if settled is not None:
        gross = settled["gross"]["amount_minor"]
        lines = [
            ("backers (captured, net of refunds)", gross, 0),
            ("platform commission", 0, settled["commission"]["amount_minor"]),
            ("payment processing fees", 0, settled["fees"]["amount_minor"]),
            ("creator payout", 0, settled["payout"]["amount_minor"]),
        ]
        ledger = [{"account": a, "debit_minor": d, "credit_minor": c} for a, d, c in lines]
    return {
        "campaign_id": fold.campaign_id,
        "currency": cur,
        "status": fold.status,
        "outcome": fold.outcome,
        "close_reason": fold.close_reason,
        "funding_model": fold.funding_model,
        "settlement_mode": fold.settlement_mode,
        "commission_bps": fold.commission_bps,
        "goal_minor": fold.goal_minor,
        "totals": {
            "pledged_minor": fold.total_minor,
            "active_pledges": fold.pledge_count,
            "cancelled_pledges": fold.cancelled_count,
            "cancelled_minor": fold.cancelled_minor,
            "refused": fold.rejected_count,
            "captured_count": summary["captured_count"],
            "captured_minor": summary["captured_minor"],
            "refunded_minor": summary["refunded_minor"],
            "fees_minor": summary["fees_minor"],
            "commission_minor": summary["commission_minor"],
            "payout_minor": summary["payout_minor"],
        },
        "pledges": pledges,
        "cancellations": [p for p in pledges if p["status"] == "cancelled"],
        "settlement": settlement,
        "ledger": {
            "entries": ledger,
            "debits_minor": None if settled is None else settled.get("ledger_debits_minor"),
            "credits_minor": None if settled is None else settled.get("ledger_credits_minor"),
        },
        "last_seq": dict(fold.seqs),
        "findings": [f.as_dict() for f in findings if f.campaign_id == fold.campaign_id],
    }


def render_statement(data: dict[str, Any], fmt: str) -> str:
    """The statement as ``json`` (indented), ``csv`` (one row per item) or ``md``."""
    if fmt == "json":
        import orjson

        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        return _csv(data)
    return _markdown(data)


def _csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "ref", "kind", "status", "amount_minor", "fee_minor", "seq"])
    cur = data["currency"]
    for name, value in data["totals"].items():
        writer.writerow(["total", name, cur if name.endswith("_minor") else "", "", value, "", ""])
    for p in data["pledges"]:
        writer.writerow(
            ["pledge", p["pledge_id"], p["tier_id"] or "", p["status"], p["amount_minor"], "",
             p["seq"]]
        )  # fmt: skip
    for e in data["settlement"]:
        writer.writerow(
            ["settlement", e["pledge_id"], e["event_type"], "", e["amount_minor"], e["fee_minor"],
             e["seq"]]
        )  # fmt: skip
    for entry in data["ledger"]["entries"]:
        writer.writerow(
            ["ledger", entry["account"], "debit" if entry["debit_minor"] else "credit", "",
             entry["debit_minor"] or entry["credit_minor"], "", ""]
        )  # fmt: skip
    return out.getvalue()


def _markdown(data: dict[str, Any]) -> str:
    cur = data["currency"]
    t = data["totals"]
    lines = [
        f"# Campaign statement — {data['campaign_id']}",
        "",
        f"- status: **{data['status']}**, outcome: **{data['outcome'] or '-'}**"
        f" ({data['close_reason'] or 'open'})",
        f"- funding model: {data['funding_model']}, settlement: {data['settlement_mode']}, "
        f"commission: {data['commission_bps']} bps",
        f"- goal: {money(data['goal_minor'], cur)}, pledged: {money(t['pledged_minor'], cur)} "
        f"from {t['active_pledges']} pledges ({t['cancelled_pledges']} cancelled for "
        f"{money(t['cancelled_minor'], cur)}, {t['refused']} refused)",
        f"- captured: {money(t['captured_minor'], cur)} ({t['captured_count']}), refunded: "
        f"{money(t['refunded_minor'], cur)}, fees: {money(t['fees_minor'], cur)}, commission: "
        f"{money(t['commission_minor'], cur)}, payout: {money(t['payout_minor'], cur)}",
        "",
        "## Pledges",
        "",
        "| pledge | backer | tier | amount | status | seq |",
        "|---|---|---|---:|---|---:|",
    ]
    lines += [
        f"| {p['pledge_id']} | {p['backer_id']} | {p['tier_id'] or '-'} | "
        f"{money(p['amount_minor'], cur)} | {p['status']} | {p['seq']} |"
        for p in data["pledges"]
    ]
    lines += ["", "## Settlement", "", "| event | pledge | amount | fee | seq |",
              "|---|---|---:|---:|---:|"]  # fmt: skip
    lines += [
        f"| {e['event_type']} | {e['pledge_id']} | {money(e['amount_minor'], e['currency'])} | "
        f"{money(e['fee_minor'], e['currency'])} | {e['seq']} |"
        for e in data["settlement"]
    ]
    lines += ["", "## Ledger", "", "| account | debit | credit |", "|---|---:|---:|"]
    lines += [
        f"| {e['account']} | {money(e['debit_minor'], cur)} | {money(e['credit_minor'], cur)} |"
        for e in data["ledger"]["entries"]
    ]
    if data["findings"]:
        lines += ["", "## Findings", ""]
        lines += [f"- `{f['rule']}` seq {f['seq']}: {f['detail']}" for f in data["findings"]]
    return "\n".join(lines) + "\n"
