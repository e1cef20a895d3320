"""max.connections: past the limit a new connection is closed at once with a log line, the
connections already held keep working, and room frees up when clients leave."""

import socket
import struct

from clients import api_versions_v0, connection_closed, raw_request, recv_frame

LIMIT = 20


def answers_api_versions(s: socket.socket) -> bool:
    try:
        s.sendall(raw_request(18, 0, 1))
        frame = recv_frame(s)
        return struct.unpack(">ih", frame[:6]) == (1, 0)
    except (ConnectionError, OSError):
        return False


def test_connections_past_the_limit_are_refused(broker_factory):
    b = broker_factory(env={"GREGOR_MAX_CONNECTIONS": str(LIMIT)})
    socks = [socket.create_connection(("127.0.0.1", b.port), timeout=10) for _ in range(3 * LIMIT)]
    try:
        served = [s for s in socks if answers_api_versions(s)]
        refused = [s for s in socks if s not in served]
        assert 0 < len(served) <= LIMIT, f"{len(served)} connections served with max.connections={LIMIT}"
        assert len(refused) >= 2 * LIMIT
        assert all(connection_closed(s, timeout_s=5) for s in refused[:5])
        assert all(answers_api_versions(s) for s in served), "held connections must keep working"
        assert "max.connections reached" in b.log_text()
    finally:
        for s in socks:
            s.close()
    # Once the clients are gone there is room again.
    for _ in range(50):
        try:
            if api_versions_v0(b.port)["error"] == 0:
                break
        except (ConnectionError, OSError):
            pass
    assert api_versions_v0(b.port)["error"] == 0
    assert b.proc.poll() is None
