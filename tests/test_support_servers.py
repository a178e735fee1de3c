"""The test servers survive a port taken between choosing it and starting on it: free
ports are only free when asked, and a full suite starts dozens of servers."""

from __future__ import annotations

import socket
from pathlib import Path

from support import RedisServer


def test_a_redis_server_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = RedisServer(tmp_path, extra_args=("--cluster-port", str(taken)))
        server.port = taken
        server.start()
        try:
            assert server.port != taken
            assert server.url == f"redis://127.0.0.1:{server.port}/0"
            with server.client() as client:
                assert client.ping()
                assert client.config_get("cluster-port")["cluster-port"] != str(taken)
        finally:
            server.stop()
