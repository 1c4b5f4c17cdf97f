"""Hosts: what their agents report (`reports`: inventories through the device ledger,
heart-beats, the sweep that marks silent hosts down), heart-beats held in memory and
written in batches (`heartbeats`), what servers use of a host (`usage`), operators'
device taints (`taints`), and what the admin views read of the fleet (`views`)."""
