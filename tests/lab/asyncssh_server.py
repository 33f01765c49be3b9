"""An AsyncSSH server for the test lab: the lab's third SSH server implementation.

Usage: python3 asyncssh_server.py HOST_KEY AUTHORIZED_KEYS USER

Listens on 127.0.0.1 on a port the kernel picks and prints "listening on 127.0.0.1:PORT"
once it accepts connections. Only USER may log in, only with a key in AUTHORIZED_KEYS; no
shells or commands, only direct-tcpip channels (ssh -L / -W), to any address. Logs at
AsyncSSH's full debug level to stderr, so the messages each connection received show.
"""

import asyncio
import logging
import sys

import asyncssh


class LabServer(asyncssh.SSHServer):
    def __init__(self, authorized_keys, user):
        self._authorized_keys = authorized_keys
        self._user = user
        self._conn = None

    def connection_made(self, conn):
        self._conn = conn

    def begin_auth(self, username):
        # Only the lab user gets the authorized keys; anyone else has no way in.
        if username == self._user:
            self._conn.set_authorized_keys(self._authorized_keys)
        return True

    def password_auth_supported(self):
        return False

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        return True


async def serve(host_key, authorized_keys, user):
    keys = asyncssh.read_authorized_keys(authorized_keys)
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        server_factory=lambda: LabServer(keys, user),
        allow_pty=False,
        agent_forwarding=False,
        x11_forwarding=False,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_closed()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncssh.set_debug_level(2)
    print(f"asyncssh {asyncssh.__version__}", file=sys.stderr, flush=True)
    asyncio.run(serve(*sys.argv[1:]))


if __name__ == "__main__":
    main()
