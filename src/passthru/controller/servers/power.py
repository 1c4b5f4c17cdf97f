"""Stopping, starting and rebooting servers, with Nova's rules.

A request checks the server's state against the action's rule and leaves the action in the
server's `task_state`; the host's agent finds it among its orders (a power order) and
answers (`orders.powered`). Stop and start keep the status until the answer (ACTIVE while
powering off, SHUTOFF while powering on); a reboot shows REBOOT or HARD_REBOOT meanwhile. A
failed change goes back to the status before it — ACTIVE for a reboot, even a hard one of a
SHUTOFF server: the power state the agent reports in the same round puts a server whose
domain did not come up back to SHUTOFF. Devices stay held throughout, as in Nova: a SHUTOFF
server keeps what it holds until it is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from passthru.controller.enums import EventKind
from passthru.controller.store.events import record
from passthru.controller.store.models import ServerRow, ServerStatus
from passthru.controller.store.wakeups import wake
from passthru.errors import ConflictError, NotFoundError
from passthru.pci.work import PowerAction


@dataclass(frozen=True, slots=True)
class PowerRule:
    """When an action may be asked (`statuses`, with one of `pending` in the task state),
    the status it shows until answered (None: unchanged), and the status it ends in, or
    goes back to when it fails."""

    statuses: frozenset[ServerStatus]
    pending: frozenset[PowerAction | None]
    during: ServerStatus | None
    done: ServerStatus
    failed: ServerStatus


_IDLE: frozenset[PowerAction | None] = frozenset({None})
RULES: dict[PowerAction, PowerRule] = {
    PowerAction.STOP: PowerRule(frozenset({ServerStatus.ACTIVE}), _IDLE, None,
                                ServerStatus.SHUTOFF, ServerStatus.ACTIVE),
    PowerAction.START: PowerRule(frozenset({ServerStatus.SHUTOFF}), _IDLE, None,
                                 ServerStatus.ACTIVE, ServerStatus.SHUTOFF),
    PowerAction.REBOOT: PowerRule(frozenset({ServerStatus.ACTIVE}), _IDLE, ServerStatus.REBOOT,
                                  ServerStatus.ACTIVE, ServerStatus.ACTIVE),
    # As Nova: a hard reboot also rescues a server stuck in a soft one.
    PowerAction.HARD_REBOOT: PowerRule(
        frozenset({ServerStatus.ACTIVE, ServerStatus.SHUTOFF, ServerStatus.REBOOT}),
        frozenset({None, PowerAction.REBOOT}), ServerStatus.HARD_REBOOT,
        ServerStatus.ACTIVE, ServerStatus.ACTIVE),
}

#: Nova's names for a pending action (`OS-EXT-STS:task_state`).
TASK_STATES: dict[PowerAction, str] = {
    PowerAction.STOP: "powering-off",
    PowerAction.START: "powering-on",
    PowerAction.REBOOT: "rebooting",
    PowerAction.HARD_REBOOT: "rebooting_hard",
}

#: The statuses of a server whose domain is defined on its host.
PLACED = frozenset({ServerStatus.ACTIVE, ServerStatus.SHUTOFF, ServerStatus.REBOOT,
                    ServerStatus.HARD_REBOOT})


def pending_action(server: ServerRow) -> PowerAction | None:
    return PowerAction(server.task_state) if server.task_state else None


def allowed_actions(status: ServerStatus, pending: PowerAction | None) -> list[PowerAction]:
    return [action for action, rule in RULES.items()
            if status in rule.statuses and pending in rule.pending]


def describe_state(server: ServerRow) -> str:
    pending = pending_action(server)
    return f"{server.status} ({TASK_STATES[pending]})" if pending else str(server.status)


def request_power(session: Session, server: ServerRow, action: PowerAction) -> None:
    """Ask the server's host for `action`; ConflictError when the server's state does not
    allow it, naming what it does allow."""
    # Locked, as a delete and the agent's answers lock it: the state checked is the one
    # changed.
    session.refresh(server, with_for_update=True)
    if server.status is ServerStatus.DELETED:
        raise NotFoundError(f"no server {server.uuid}: it was deleted meanwhile")
    rule = RULES[action]
    pending = pending_action(server)
    if server.status not in rule.statuses or pending not in rule.pending:
        allowed = ", ".join(allowed_actions(server.status, pending)) or "none but delete"
        needs = " or ".join(sorted(rule.statuses))
        raise ConflictError(
            f"server {server.name} is {describe_state(server)}: {action} needs it {needs} "
            f"with no other power change pending; allowed now: {allowed}")
    server.task_state = str(action)
    wake(session, server.host.name if server.host else None)
    if rule.during is not None:
        server.status = rule.during
    record(session, EventKind.POWER_REQUESTED, server=server.uuid,
           host=server.host.name if server.host else None,
           message=f"{action} of server {server.name} asked")
