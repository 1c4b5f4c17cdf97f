"""What the controller says to host agents and hears back: their orders, derived from
the servers' state, and what each answer changes (`orders`), kept once per idempotency
key so that a retried answer changes nothing twice (`answers`)."""
