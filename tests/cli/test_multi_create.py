"""`passthru boot --min-count` that no hosts can take whole: the command fails with the
scheduler's reason, and no server or port is left to clean up."""

from __future__ import annotations

from passthru.errors import NoCapacityError
from tests.cli.runner import as_json, ok, run
from tests.support.live import ServedApp


def test_a_refused_min_count_boot_says_why_and_leaves_nothing(cli_env: ServedApp
                                                                ) -> None:
    ok("passthru pci-flavor-create bigGPU")
    ok("passthru flavor-create m1.gpu")
    ok("passthru flavor-key m1.gpu set pci_passthrough:pci_flavor=1:bigGPU")
    ok("passthru net-create prod --physical-network physnet1 --segmentation-id 100")
    refused = run("passthru boot vm --flavor m1.gpu --min-count 40 --nic net-id=prod")
    assert refused.exit_code == NoCapacityError.exit_code, refused.output
    output = " ".join(refused.output.split())
    assert "none of the 40 servers vm-1 ... vm-40 was created: " in output
    assert "bigGPU" in output
    assert as_json("passthru list") == []
    assert as_json("passthru port-list") == []
