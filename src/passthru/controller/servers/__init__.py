"""Servers: booting them (`boot`: rows and PCI requests; `launch`: one transaction with
the scheduler's claim), power actions with Nova's rules (`power`), giving back what a
server holds and failing it (`release`), builds that fail or stall (`reschedule`), and
reading them for the API (`views`)."""
