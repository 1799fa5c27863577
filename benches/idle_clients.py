#!/usr/bin/env python3
"""The bench kit's idle_conns.py (same arguments and output), able to open more client connections to one
port than there are ephemeral ports.

From one source address, connections to one address and port cannot outnumber the ephemeral port range
(net.ipv4.ip_local_port_range, 32768-60999 = 28,232 by default). For --n above PER_ADDRESS (20,000) this
wrapper makes idle_conns.py's connections come from 127.0.0.1, 127.0.0.2, ... in turn (all of 127/8 is
the loopback interface on Linux), binding with IP_BIND_ADDRESS_NO_PORT so the port is chosen at connect
time per destination (TIME_WAIT leftovers of an earlier run to another port do not get in the way).
Only for a loopback --host; otherwise it runs idle_conns.py unchanged.

usage: idle_clients.py IDLE_CONNS.PY-ARGUMENTS...   (the kit is BENCH_KIT, default ../../shared/bench)
"""
import argparse
import itertools
import os
import socket
import sys

KIT = os.environ.get("BENCH_KIT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")
sys.path.insert(0, KIT)
sys.dont_write_bytecode = True  # no __pycache__ in the shared kit
import idle_conns  # noqa: E402  (the kit's idle_conns.py)

PER_ADDRESS = int(os.environ.get("IDLE_PER_ADDRESS", 20000))  # overridable to test the spreading with few clients
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--host", default="127.0.0.1")
    known, _ = ap.parse_known_args()
    k = -(-known.n // PER_ADDRESS)
    if k > 1 and known.host.startswith("127."):
        sources = itertools.cycle([f"127.0.0.{i}" for i in range(1, k + 1)])

        def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **_kw):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((next(sources), 0))
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    s.settimeout(timeout)
                s.connect(address)
            except BaseException:
                s.close()
                raise
            return s

        idle_conns.socket.create_connection = create_connection
        print(f"idle_clients.py: {known.n} connections from {k} source addresses "
              f"(127.0.0.1-127.0.0.{k})", file=sys.stderr)
    idle_conns.main()


if __name__ == "__main__":
    main()
