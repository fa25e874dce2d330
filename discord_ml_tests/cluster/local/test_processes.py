"""Process-level helpers of the local backend."""

from __future__ import annotations

import socket

from discord_ml.cluster.local.processes import LOCALHOST, free_ports


def test_free_ports_are_distinct_bindable_and_never_an_excluded_one() -> None:
    # Ports handed out earlier but not yet bound (a head's Ray Client server starts late) are excluded.
    given = free_ports(200)
    ports = free_ports(50, exclude=given)
    assert len(set(ports)) == 50 and not set(ports) & set(given)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOCALHOST, port))
