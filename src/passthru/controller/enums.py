"""The controller's vocabularies that clients name too: the kinds of events, the roles
of tokens, the scheduler's weighers, the disk formats of images.

They live apart from the store, the scheduler and the image checks so that the CLI can
offer them as choices (`passthru events --kind`, `token-create --role`, `serve
--weigher`, `image-create --disk-format`) without importing SQLAlchemy, the scheduler's
index or the agents' work types: this module imports only the standard library, and a
test (`tests/cli/test_import_weight.py`) keeps client commands so.
"""

from __future__ import annotations

from enum import StrEnum

#: The disk formats an image may have (qemu-img's names).
DISK_FORMATS = ("qcow2", "raw")


class EventKind(StrEnum):
    """Every kind of event the controller records."""

    SERVER_CREATED = "server-created"
    SERVER_ERROR = "server-error"
    #: A multi-create that no hosts could take whole: none of its servers was kept.
    SERVERS_REFUSED = "servers-refused"
    SERVER_ACTIVE = "server-active"
    SERVER_DELETED = "server-deleted"
    SERVER_DESTROYED = "server-destroyed"
    DESTROY_FAILED = "destroy-failed"
    SERVER_RESCHEDULED = "server-rescheduled"
    POWER_REQUESTED = "power-requested"
    POWER_FAILED = "power-failed"
    SERVER_SHUTOFF = "server-shutoff"
    SERVER_STARTED = "server-started"
    SERVER_REBOOTED = "server-rebooted"
    DEVICE_CLAIMED = "device-claimed"
    DEVICE_ALLOCATED = "device-allocated"
    DEVICE_FREED = "device-freed"
    DEVICE_ADDED = "device-added"
    DEVICE_UPDATED = "device-updated"
    DEVICE_REMOVED = "device-removed"
    DEVICE_MISSING = "device-missing"
    DEVICE_RETURNED = "device-returned"
    #: An alarm: a report shows another card at the address of a device in use.
    DEVICE_IDENTITY_CHANGED = "device-identity-changed"
    DEVICE_TAINTED = "device-tainted"
    DEVICE_CLEARED = "device-cleared"
    HOST_ADDED = "host-added"
    HOST_UP = "host-up"
    HOST_DOWN = "host-down"
    HOST_RESOURCES = "host-resources"
    TOKEN_ISSUED = "token-issued"
    TOKEN_REVOKED = "token-revoked"


class Role(StrEnum):
    """Whom a token speaks for: the operator, a member of one project, or one host's agent."""

    ADMIN = "admin"
    MEMBER = "member"
    AGENT = "agent"


class Weigher(StrEnum):
    """`pack` fills hosts up (fewest free devices first), keeping whole hosts free for big
    VMs; `spread` balances load (most free first). Both weigh by the free count of the
    VM's most selective request."""

    PACK = "pack"
    SPREAD = "spread"

    @property
    def fewest_first(self) -> bool:
        return self is Weigher.PACK
