"""psycopg2 through pgsluice (simple protocol, client-side parameters, explicit transactions)."""
import sys
import threading

import psycopg2

CONNS, ROUNDS = 6, 30
errors = []


def worker(n):
    try:
        conn = psycopg2.connect("")
        cur = conn.cursor()
        for i in range(ROUNDS):
            v = n * 1000 + i
            cur.execute("select %s::int4 * 2", (v,))
            assert cur.fetchone()[0] == v * 2
            cur.execute("update accounts set balance = balance where id = %s", (1 + i % 10,))
            cur.execute("select count(*) from accounts where id <= %s", (i % 12,))
            assert cur.fetchone()[0] == min(i % 12, 10)
            if i % 2:
                conn.commit()
            else:
                conn.rollback()
        conn.close()
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
print(f"psycopg2 {psycopg2.__version__}: {CONNS} connections x {ROUNDS} rounds ok")
