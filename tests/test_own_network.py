"""own_network (tests/daemons.py), the one way daemon tests get their ports: the test's thread
and what it starts in a network namespace of its own, where no other process can bind."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.daemons import SHARED_NETWORK, free_port, in_own_network

# Held from import (collection) to the end of the run: a port another process holds on the
# machine's shared loopback while the tests below run.
_TAKEN = socket.socket()
_TAKEN.bind(("127.0.0.1", 0))
_TAKEN.listen(1)
TAKEN_PORT: int = _TAKEN.getsockname()[1]
_SEEN: list[int] = []


def _network_of(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_own_network_is_the_tests_alone(own_network: None) -> None:
    """A port taken on the shared loopback is free here; the thread and its children are in a
    namespace that is not the shared one, holding only lo, up."""
    assert in_own_network()
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", TAKEN_PORT))  # EADDRINUSE if this were the shared namespace
    child = subprocess.run(
        ["sh", "-c", "readlink /proc/self/ns/net; ip -o link show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert child[0] == os.readlink("/proc/thread-self/ns/net")
    assert [line.split()[1] for line in child[1:]] == ["lo:"]
    assert "UP" in child[1].split()[2], child[1]
    assert free_port() > 0
    _SEEN.append(_network_of("thread-self"))


def test_the_thread_is_back_in_the_shared_network_after_it() -> None:
    """The fixture's teardown put the thread back (a later test would otherwise run in a
    namespace whose lo nobody else can reach); free_port refuses to pick a port here."""
    assert _SEEN and _SEEN[0] != SHARED_NETWORK
    assert _network_of("thread-self") == SHARED_NETWORK
    assert not in_own_network()
    with pytest.raises(AssertionError, match="outside own_network"):
        free_port()
