"""The scheduler: an in-memory index of the fleet's pools, placement over it, and durable
claims in the store."""

from passthru.controller.scheduler.index import HostIndex, UnknownHostError
from passthru.controller.scheduler.placement import NoValidHostError, Placement, place, place_many
from passthru.controller.scheduler.weighers import Weigher

__all__ = ["HostIndex", "NoValidHostError", "Placement", "UnknownHostError", "Weigher", "place",
           "place_many"]
