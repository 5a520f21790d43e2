"""rproxy.net.router: the routing tables in one object, written by the cluster manager and read
by the data path; listeners hear when a slot changes owner."""

from __future__ import annotations

from rproxy.core import errors
from rproxy.core.request import REPLY, new_request
from rproxy.net.backend import BackendConnection
from rproxy.net.reactor import Reactor
from rproxy.net.router import Router
from tests.shell.harness import RecordingOwner


class Listener:
    def __init__(self) -> None:
        self.calls = 0

    def on_map_changed(self) -> None:
        self.calls += 1


def conn(port: int, reactor: Reactor) -> BackendConnection:
    return BackendConnection(("127.0.0.1", port), RecordingOwner(), reactor, max_pending=100)


def test_point_updates_in_place_and_tells_listeners():
    reactor = Reactor()
    router = Router()
    table = router.slot_conn  # what a session holds
    a, b = conn(1, reactor), conn(2, reactor)
    listener = Listener()
    router.subscribe(listener)
    router.point(7, a)
    assert table[7] is a and router.map_epoch == 1 and listener.calls == 1
    router.point(7, a)  # no change: nobody is told
    assert router.map_epoch == 1 and listener.calls == 1
    router.point(7, b)
    assert table[7] is b and router.map_epoch == 2 and listener.calls == 2
    router.unsubscribe(listener)
    router.point(7, a)
    assert listener.calls == 2


def test_replace_swaps_a_connection_everywhere():
    reactor = Reactor()
    router = Router()
    old, new = conn(1, reactor), conn(2, reactor)
    router.slot_conn[0:3] = [old, old, None]
    router.masters = [old]
    router.replace(old, new)
    assert router.slot_conn[0:3] == [new, new, None] and router.masters == [new]


def test_route_without_a_connection_answers_the_right_error():
    router = Router(read_from="replica")
    req = new_request(None, b"*1\r\n$4\r\nPING\r\n", slot=5, readonly=True)
    router.route(req)
    assert req[REPLY] == errors.NO_TOPOLOGY  # no map yet
    router.has_map = True
    for readonly, error in ((False, errors.CLUSTER_DOWN_UNCOVERED),
                            (True, errors.CLUSTER_DOWN_UNCOVERED)):  # owner None: a part
        req = new_request(None, b"", slot=5, readonly=readonly)
        router.route(req)
        assert req[REPLY] == error
    assert router.no_conn_error(readonly=True) == errors.NO_HEALTHY_REPLICA


def test_reads_follow_read_from():
    plain = Router()
    assert plain.read_conn is plain.slot_conn
    replicas = Router(read_from="prefer-replica")
    assert replicas.read_conn is not replicas.slot_conn
