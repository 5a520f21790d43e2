from __future__ import annotations


def test_get_set_through_proxy_lands_on_owning_master(r, cluster) -> None:
    assert r.set("smoke:{a}", b"1")
    assert r.get("smoke:{a}") == b"1"
    slot = int(cluster.masters()[0].client().execute_command("CLUSTER", "KEYSLOT", "smoke:{a}"))
    owner = cluster.master_of_slot(slot)
    assert owner.client().get("smoke:{a}") == b"1"
