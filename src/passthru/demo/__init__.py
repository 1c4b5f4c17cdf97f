"""`passthru demo`: a newcomer's first run.

A real controller and real agents — this machine's own devices and simulated hosts of
real hardware shapes — walked through the seed wiki's use cases with the passthru CLI.
`hosts` says which hosts take part and how each is configured, `cluster` runs their
processes, `shell` runs and prints the commands, `outcome` checks what they did, and
`script` holds the use cases.
"""
