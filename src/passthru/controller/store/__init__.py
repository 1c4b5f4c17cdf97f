"""The store: the tables (`models`) and the one place rows become the core's objects
(`mapping`), engines, sessions and group commit (`db`), the packaged migrations, keyset
pages of every list (`paging`), the event history (`events`), the topic versions replicas
share (`topics`) and the wake-ups that tell agents their orders changed (`wakeups`), the
host as the scheduler and the ledger read it (`stored_host`), and retention.

It is the controller's bottom part: it imports nothing of the rest of the controller
but its settings and vocabularies.
"""
