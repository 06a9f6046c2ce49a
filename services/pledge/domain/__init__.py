"""The pure domain of the pledge processor: campaign state, ``decide`` and ``evolve``.

A package of four modules along the domain's seams, re-exported here (import from
``services.pledge.domain``): :mod:`.state` (the state, its snapshot, the policy, the command
union, the constants the others share), :mod:`.rules` (one decision function per command),
:mod:`.decisions` (``decide`` and its hot-path twins: idempotency, dispatch, stamping; the
deadline timer) and :mod:`.fold` (``evolve``, ``replay``). ``decide`` and ``evolve`` read and
write the same state: :func:`.state.set_terms` is the one writer of its private slots, and
the unit tests hold decisions and fold together (a state folded from the decided events
equals a replay of them).

No I/O, no clock, no randomness: the processor passes ``now`` in, and the state is exactly the
fold of ``evolve`` over the campaign's own event stream (``replay``), so a processor that
crashed resumes with the very state it had. A business refusal is an event
(``PledgeRejected`` with a stable :class:`~schemas.RejectionReason` code), never an exception;
exceptions here mean a bug in the caller (wrong campaign, events out of order).

Public API: :class:`CampaignState` (with JSON-safe ``to_snapshot``/``from_snapshot``),
:class:`Policy`, :func:`decide` (stamped envelopes) and its hot-path twin
:func:`decide_with_bodies` (envelopes plus their canonical dicts, ready for
``schemas.canonical.dumps``) and :func:`decide_encoded` (also their canonical bytes),
:func:`evolve`, :func:`replay`, :func:`deadline_close`.

Representation choices the rest of the system relies on:

* **Idempotency.** Every event's ``causation_id`` (the command id) is remembered for
  :data:`DEDUP_HORIZON` after its event (folded from the events' ``occurred_at``, so replay
  forgets exactly what the live state forgot); a command seen again within it yields no event.
  The horizon is 7 days, past the API's 24 h idempotency window (inside it a retry is answered
  from Redis and never reaches the log). A ``MakePledge`` whose command id was already decided
  for *another* pledge id (or for another kind of command) within the horizon is not a retry
  but a reused Idempotency-Key whose API record was lost: it is refused, visibly, with
  ``idempotency_key_reused`` under a causation id of its own (``<command id>:reused-<16 hex of
  its fingerprint>``), so event ids stay unique and a redelivery of it yields nothing. The
  command id -> pledge id of every pledge decision is folded from the log for this, and
  forgotten with the command id. Forgetting a command id never allows a second effect: a
  pledge id is remembered for the campaign's life (below), cancelling a cancelled pledge or
  launching a launched campaign is refused, closing a closed one yields nothing - an older
  duplicate can at most add a refusal event.
* **Pledge ids.** A pledge id seen before - accepted, cancelled, or refused for a reason other
  than ``tenant_mismatch`` - yields no event, whatever the command id. Campaign ids are
  tenant-qualified (:mod:`schemas.tenancy`), so another tenant cannot even name this
  campaign's pledge ids.
* **Refusals of non-pledge commands** travel as ``PledgeRejected`` too (the contract's only
  refusal event; the API waits for an event caused by its command): a refused
  ``LaunchCampaign`` or ``CloseCampaign`` carries ``pledge_id = command_id``; a launch refusal
  has ``backer_id = creator_id`` and ``amount = goal``, reasons ``already_launched`` /
  ``deadline_in_past``. ``evolve`` records a refused pledge id only for the reasons a
  ``MakePledge`` alone can get (:data:`FINAL_PLEDGE_REFUSALS`), so these never poison a
  pledge id.
* **An unlaunched campaign's stream** holds the refusals of commands sent to it (a pledge gets
  ``campaign_not_found``, at seq 1, 2, ...): ``CampaignLaunched`` is seq 1 of every campaign
  that received no command before its launch, and otherwise the first event after those
  refusals. Consumers fold by seq and must not assume the launch is seq 1.
* **Cancelling** an unknown (or refused) pledge is ``pledge_not_found`` whatever the campaign's
  state, so that code never marks a pledge id as used.
* **Closing**: closing a closed (or never launched) campaign yields nothing;
  ``CloseCampaign(reason='deadline')`` before the deadline yields nothing (the processor's
  timer, :func:`deadline_close`, closes at the deadline); any ``CloseCampaign`` other than
  ``platform_suspended`` received at or after the deadline of a still-open campaign closes it
  as the deadline would (the outcome was fixed at the deadline); a close from another tenant
  is refused with ``tenant_mismatch``.
"""

from services.pledge.domain.decisions import (
    deadline_causation_id,
    deadline_close,
    decide,
    decide_encoded,
    decide_with_bodies,
)
from services.pledge.domain.fold import evolve, replay

# Kept importable from here: tests pin its fast path.
from services.pledge.domain.rules import pledge_made as _pledge_made  # noqa: F401
from services.pledge.domain.state import (
    DEDUP_HORIZON,
    FINAL_PLEDGE_REFUSALS,
    UNKNOWN_BACKER,
    CampaignState,
    Command,
    OutOfOrderEvent,
    PledgeRecord,
    PledgeStatus,
    Policy,
)

__all__ = [
    "DEDUP_HORIZON",
    "FINAL_PLEDGE_REFUSALS",
    "UNKNOWN_BACKER",
    "CampaignState",
    "Command",
    "OutOfOrderEvent",
    "PledgeRecord",
    "PledgeStatus",
    "Policy",
    "deadline_causation_id",
    "deadline_close",
    "decide",
    "decide_encoded",
    "decide_with_bodies",
    "evolve",
    "replay",
]
