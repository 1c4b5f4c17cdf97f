"""The catalog: what a boot names, each resource's reads and writes with its rules —
`flavors` (and their extra specs), `images` (and their files: `image_files`),
`networks`, `ports`, `pci_flavors`, `keypairs` — with the checks they share (`rules`:
a name is free, no server uses a row deleted), and the flavors every boot reads from
memory (`cache`).

Each module takes a session and raises the error tree's exceptions; the routers
(`controller.api`) open the transaction, call, and render.
"""
