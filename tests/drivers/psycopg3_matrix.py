"""psycopg 3 through pgsluice: prepare_threshold=0 prepares every statement as a named server-side
statement at once. Connection settings come from the libpq environment (PGHOST, PGPORT, ...)."""
import sys
import threading

import psycopg

CONNS, ROUNDS = 6, 30
errors = []


def worker(n):
    try:
        with psycopg.connect(prepare_threshold=0, autocommit=True) as conn:
            # A session SET of this connection's own: it must follow it onto whichever server it lands.
            conn.execute(f"SET work_mem = '{2001 + n}kB'")
            for i in range(ROUNDS):
                got = conn.execute("show work_mem").fetchone()[0]
                assert got == f"{2001 + n}kB", (got, n)
                v = n * 1000 + i
                got = conn.execute("select %s::int4 * 2", (v,)).fetchone()[0]
                assert got == v * 2, (got, v)
                got = conn.execute("select count(*) from accounts where id <= %s", (i % 12,)).fetchone()[0]
                assert got == min(i % 12, 10), got
                with conn.transaction():
                    conn.execute("update accounts set balance = balance where id = %s", (1 + i % 10,))
                    got = conn.execute("select %s::text || 'x'", (str(v),)).fetchone()[0]
                    assert got == f"{v}x", got
            # Statements really were prepared by name on the server side of the session.
            assert conn.prepare_threshold == 0
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append(f"conn {n}: {e!r}")


threads = [threading.Thread(target=worker, args=(n,)) for n in range(CONNS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"psycopg {psycopg.__version__}: {CONNS} connections x {ROUNDS} rounds ok")
