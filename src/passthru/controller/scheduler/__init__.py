"""The scheduler: an in-memory index of the fleet's pools, placement over it, and durable
claims in the store. Its weighers are named in `controller.enums`."""

from passthru.controller.scheduler.index import HostIndex, UnknownHostError
from passthru.controller.scheduler.placement import NoValidHostError, Placement, place, place_many

__all__ = ["HostIndex", "NoValidHostError", "Placement", "UnknownHostError", "place",
           "place_many"]
