"""asyncpg through pgsluice, default statement cache: every query is a named prepared statement that
later executions bind, on whichever server they land."""
import asyncio
import sys

import asyncpg

CONNS, ROUNDS = 6, 30


async def init(conn, n):
    # As in a pool's init callback: session settings of this connection, which must stay its own.
    await conn.execute(f"set statement_timeout = {20_001 + n}; set search_path = asyncpg_{n}, public")


async def worker(n):
    conn = await asyncpg.connect()  # libpq environment variables
    await init(conn, n)
    try:
        for i in range(ROUNDS):
            assert await conn.fetchval("show statement_timeout") == f"{20_001 + n}ms"
            assert await conn.fetchval("show search_path") == f"asyncpg_{n}, public"
            v = n * 1000 + i
            assert await conn.fetchval("select $1::int4 * 2", v) == v * 2
            assert await conn.fetchval("select count(*) from accounts where id <= $1", i % 12) == min(i % 12, 10)
            async with conn.transaction():
                await conn.execute("update accounts set balance = balance where id = $1", 1 + i % 10)
                assert await conn.fetchval("select $1::text || 'x'", str(v)) == f"{v}x"
            stmt = await conn.prepare("select $1::int8 + 1")
            assert await stmt.fetchval(v) == v + 1
    finally:
        await conn.close()


async def main():
    results = await asyncio.gather(*(worker(n) for n in range(CONNS)), return_exceptions=True)
    errors = [f"conn {n}: {r!r}" for n, r in enumerate(results) if isinstance(r, BaseException)]
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print(f"asyncpg {asyncpg.__version__}: {CONNS} connections x {ROUNDS} rounds ok")


asyncio.run(main())
