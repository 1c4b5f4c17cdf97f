"""Simulated hosts: real hardware shapes as sysfs trees and libvirt node XML.

Tests, `passthru demo` and operators' dry runs (`passthru sim`) all build hosts here.
"""

from passthru.sim.config_snippet import host_config_toml
from passthru.sim.nodedev_xml import nodedev_xml
from passthru.sim.profile import Card, HostProfile, SimFunction, Topology, expand
from passthru.sim.profiles import PROFILES, big
from passthru.sim.sysfs_tree import SimRootError, build_sysfs

__all__ = [
    "PROFILES",
    "Card",
    "HostProfile",
    "SimFunction",
    "SimRootError",
    "Topology",
    "big",
    "build_sysfs",
    "expand",
    "host_config_toml",
    "nodedev_xml",
]
