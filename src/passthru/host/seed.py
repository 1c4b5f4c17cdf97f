"""cloud-init's NoCloud seed: an ISO 9660 image labelled `cidata` holding `meta-data` and
`user-data`, which the guest reads from its CD-ROM on first boot.

`meta-data` is written as JSON, which is YAML too: every value is quoted, so a hostname
or key cannot break the document. Names are lower case through Joliet and Rock Ridge, as
cloud-init and the Linux isofs read them (`cloud-localds` writes the same).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

import pycdlib

VOLUME_LABEL = "cidata"


def meta_data(instance_id: str, hostname: str, public_keys: Mapping[str, str]) -> str:
    document: dict[str, object] = {"instance-id": instance_id, "local-hostname": hostname}
    if public_keys:
        document["public-keys"] = [public_keys[name] for name in sorted(public_keys)]
    return json.dumps(document, indent=2) + "\n"


def write_seed_iso(path: Path, instance_id: str, hostname: str,
                   public_keys: Mapping[str, str], user_data: str | None) -> None:
    """Write the seed ISO to `path`; without user-data the guest gets an empty
    `#cloud-config`, which cloud-init reads as "nothing to do"."""
    files = {"meta-data": meta_data(instance_id, hostname, public_keys),
             "user-data": user_data if user_data is not None else "#cloud-config\n"}
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name, text in files.items():
            data = text.encode()
            short = name.replace("-", "").upper()[:8]
            iso.add_fp(io.BytesIO(data), len(data), f"/{short}.;1", rr_name=name,
                       joliet_path=f"/{name}")
        iso.write(str(path))
    finally:
        iso.close()
