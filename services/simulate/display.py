"""What the simulation shows: the live panel (rich) and the closing table per campaign."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from schemas.money import currency_exponent
from services.simulate.driver import Driver

__all__ = ["CampaignRow", "live_panel", "money", "summary_table"]


def money(amount_minor: int, currency: str) -> str:
    """``1234`` EUR -> ``12.34 EUR``; exact, from the currency's ISO 4217 exponent."""
    exponent = currency_exponent(currency)
    if exponent == 0:
        return f"{amount_minor:,} {currency}"
    sign = "-" if amount_minor < 0 else ""
    whole, part = divmod(abs(amount_minor), 10**exponent)
    return f"{sign}{whole:,}.{part:0{exponent}d} {currency}"


def live_panel(driver: Driver, now: float, duration: float) -> RenderableType:
    """The running figures: requests/s, accepted/refused, goals, closes, settlements."""
    t = driver.tally
    elapsed = max(0.0, now - t.started) if t.started else 0.0
    n = len(driver.scenario.campaigns)
    refused = ", ".join(f"{r} {c}" for r, c in t.refused.most_common(3)) or "-"
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_row("elapsed", f"{min(elapsed, duration):5.1f} s of {duration:.0f} s")
    table.add_row("pledges/s", f"{t.rate(now):7.1f}   ({t.requests} requests sent)")
    table.add_row("accepted", f"{len(t.accepted)}   pending {len(t.pending)}")
    table.add_row("refused", f"{sum(t.refused.values())}   ({refused})")
    table.add_row(
        "invalid", f"{sum(t.invalid.values())} answered as expected   retries {t.replayed}"
    )
    table.add_row("cancelled", f"{t.cancelled}   (refused {sum(t.cancel_refused.values())})")
    table.add_row("goals reached", f"{len(t.goals_reached)} / {n}")
    table.add_row("closed", f"{len(t.closed)} / {n}   ({t.called_off} called off by the creator)")
    settled = f"{len(t.settled)} / {n}" if t.settlement_available is not False else "-"
    table.add_row("settled", settled)
    if driver.receiver is not None:
        table.add_row(
            "webhooks",
            f"{driver.receiver.delivered} verified   {len(driver.receiver.unverified)} failed",
        )
    if t.unexpected:
        table.add_row("[red]unexpected", f"[red]{len(t.unexpected)}: {t.unexpected[-1]}")
    return Panel(table, title=f"pledgeflow simulate · run {driver.scenario.run_id}")


@dataclass(frozen=True)
class CampaignRow:
    """One line of the closing table, read back from the API (and the receiver, mailpit)."""

    campaign_id: str
    kind: str
    outcome: str
    goal: str
    total: str
    pledges: int
    payout: str
    webhooks: int | None
    emails: int | None


def summary_table(rows: list[CampaignRow]) -> RenderableType:
    table = Table(title="campaigns, read back from the API")
    for name, justify in (
        ("campaign", "left"), ("kind", "left"), ("outcome", "left"), ("goal", "right"),
        ("total", "right"), ("pledges", "right"), ("payout", "right"),
        ("webhooks", "right"), ("e-mails", "right"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=name == "campaign")  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r.campaign_id, r.kind, r.outcome, r.goal, r.total, str(r.pledges), r.payout,
            "—" if r.webhooks is None else str(r.webhooks),
            "—" if r.emails is None else str(r.emails),
        )  # fmt: skip
    return Group(table)
