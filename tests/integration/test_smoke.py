from __future__ import annotations

from tests.support import node_client


def test_get_set_through_proxy_lands_on_owning_master(r, cluster) -> None:
    assert r.set("smoke:{a}", b"1")
    assert r.get("smoke:{a}") == b"1"
    slot = int(node_client(cluster.masters()[0])
               .execute_command("CLUSTER", "KEYSLOT", "smoke:{a}"))
    owner = cluster.master_of_slot(slot)
    assert node_client(owner).get("smoke:{a}") == b"1"
