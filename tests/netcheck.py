"""Which local addresses a TCP port listens on (from /proc/net/tcp{,6}): the bind tests' one check."""

from __future__ import annotations

from pathlib import Path

LOOPBACK_V4 = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def listening(port: int) -> list[tuple[str, str]]:
    """``[(table, hex address)]`` of the sockets in LISTEN state on ``port``."""
    out = []
    for name in ("tcp", "tcp6"):
        path = Path(f"/proc/net/{name}")
        for row in path.read_text().splitlines()[1:] if path.exists() else []:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                out.append((name, local.rsplit(":", 1)[0]))
    return out
