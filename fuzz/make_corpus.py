#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: real protocol exchanges (what libpq, JDBC and
PostgreSQL send), the reference config and auth file, a pgbouncer.ini and console commands. Run from
fuzz/; the output is committed, so rerun only to change the seeds.

The `real_*` seeds are not written here: they are bytes captured between psql 15 / pgbench 15 and
PostgreSQL 15 (scram-sha-256 auth; `select 1`, `pgbench -M extended` and `-M prepared`, `\\copy`), split into
the startup packet, the login messages and the streams after login, with the same header bytes as here."""
import base64, hashlib, hmac, os, struct

ROOT = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def msg(tag, body=b""):
    return tag + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def startup(params, version=196608):
    body = struct.pack("!I", version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


# --- startup ---------------------------------------------------------------------------------------
psql = [("user", "app"), ("database", "app"), ("application_name", "psql"), ("client_encoding", "UTF8")]
write("startup", "psql", startup(psql))
write("startup", "ssl_then_startup", struct.pack("!II", 8, 80877103) + startup(psql))
write("startup", "gssenc", struct.pack("!II", 8, 80877104))
write("startup", "cancel", struct.pack("!IIII", 16, 80877102, 4242, 0x12345678))
write("startup", "jdbc", startup([("user", "app"), ("database", "app"), ("client_encoding", "UTF8"),
                                  ("DateStyle", "ISO"), ("TimeZone", "UTC"), ("extra_float_digits", "2")]))
write("startup", "protocol_3_2", startup(psql + [("_pq_.test", "1")], 196610))
write("startup", "options", startup([("user", "app"), ("options", "-c search_path=app --statement_timeout=5s")]))


# --- client streams --------------------------------------------------------------------------------
def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(types)) + b"".join(struct.pack("!I", t) for t in types))


def bind(portal, stmt, params=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    return msg(b"B", body + struct.pack("!H", 0))


describe_portal = msg(b"D", b"P\0")
execute = msg(b"E", b"\0" + struct.pack("!I", 0))
sync = msg(b"S")
flush = msg(b"H")
query = lambda sql: msg(b"Q", cstr(sql))

# libpq PQprepare + PQexecPrepared twice, pipelined; tokio-postgres' unnamed statements; JDBC's pattern.
prepared = (parse("s1", "select $1::int", [23]) + msg(b"D", b"Ss1\0") + sync
            + bind("", "s1", [b"1"]) + describe_portal + execute + sync
            + bind("", "s1", [b"2"]) + describe_portal + execute + sync)
unnamed = parse("", "select 1") + bind("", "") + describe_portal + execute + sync
jdbc = (parse("S_1", "BEGIN") + bind("", "S_1") + execute + parse("", "insert into t values ($1)", [23])
        + bind("", "", [b"7"]) + describe_portal + execute + sync + query("COMMIT"))
simple = query("begin") + query("select 1; select 2") + query("deallocate s1") + query("DISCARD ALL")
copy_in = query("copy t from stdin") + msg(b"d", b"1\n2\n") + msg(b"c") + bind("", "s1") + execute + sync
close = parse("s2", "select now()") + flush + msg(b"C", b"Ss2\0") + msg(b"C", b"P\0") + sync + msg(b"X")
for name, stream in [("prepared", prepared), ("unnamed", unnamed), ("jdbc", jdbc), ("simple", simple),
                     ("copy_in", copy_in), ("close", close)]:
    write("frontend", name, bytes([2, 0x5a]) + stream)   # max_prepared_statements 2, chunking seed
    write("frontend", name + "_off", bytes([0, 0x11]) + stream)  # rewriting off

# --- client and server together --------------------------------------------------------------------
def ready(status=b"I"):
    return msg(b"Z", status)


def row_description():
    return msg(b"T", struct.pack("!H", 1) + cstr("int4") + struct.pack("!IHIhiH", 0, 0, 23, 4, -1, 0))


def data_row(v):
    return msg(b"D", struct.pack("!Hi", 1, len(v)) + v)


def error(code, message, routine=b"exec_simple_query"):
    return msg(b"E", b"SERROR\0VERROR\0C" + code + b"\0M" + message + b"\0R" + routine + b"\0\0")


complete = lambda tag: msg(b"C", cstr(tag))
server_prepared = (msg(b"1") + msg(b"t", struct.pack("!HI", 1, 23)) + row_description() + ready()
                   + msg(b"2") + row_description() + data_row(b"1") + complete("SELECT 1") + ready()
                   + msg(b"2") + row_description() + data_row(b"2") + complete("SELECT 1") + ready())
stale = (msg(b"2") + error(b"0A000", b"cached plan must not change result type", b"RevalidateCachedQuery")
         + ready())
server_copy = msg(b"G", b"\0" + struct.pack("!H", 0)) + complete("COPY 2") + ready() + msg(b"2") + complete("SELECT 0") + ready()
failed = error(b"42601", b"syntax error") + ready(b"E") + ready() + ready()
notice = msg(b"N", b"SNOTICE\0C00000\0Mhi\0\0") + msg(b"S", cstr("TimeZone") + cstr("UTC")) + msg(b"A", struct.pack("!I", 1) + cstr("ch") + cstr(""))
for name, client, server in [("prepared", prepared, server_prepared),
                             ("stale_plan", prepared + bind("", "s1", [b"3"]) + describe_portal + execute + sync, server_prepared + stale),
                             ("copy_in", copy_in, server_copy),
                             ("error_mid_pipeline", simple + unnamed, failed + notice + msg(b"1") + msg(b"2") + row_description() + complete("SELECT 1") + ready()),
                             ("rewriting_off", jdbc, msg(b"1") + msg(b"2") + complete("BEGIN") + ready(b"T"))]:
    opts = 0 if name == "rewriting_off" else 3
    write("backend", name, bytes([opts, 0x33]) + struct.pack("!H", len(client)) + client + server)

# --- SCRAM -----------------------------------------------------------------------------------------
# RFC 7677's example exchange, and what pgsluice's own client sends.
cf = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
cfinal = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
write("scram", "server_raw", bytes([2]) + cf + b"\0" + cfinal)          # app_scram, raw messages
write("scram", "server_nonce", bytes([4 | 1]) + b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL\0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
write("scram", "server_authzid", bytes([0]) + b"y,a=app,n=app,r=abc\0c=eSxhPWFwcCw=,r=abc,p=AAAA")
write("scram", "genuine_unchanged", bytes([8]) + b"\xff\0")
write("scram", "genuine_patched", bytes([8]) + b"\x05\0Zm9v")
write("scram", "client_side", bytes([12]) + b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096\0v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
write("scram", "client_side_suffix", bytes([12]) + b"3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096\0e=invalid-proof")

# --- password and SASL messages --------------------------------------------------------------------
salt = bytes([1, 2, 3, 4])
def md5_response(password, user, salt):
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()
write("password", "cleartext", salt + msg(b"p", cstr("app-secret")))
write("password", "md5", salt + msg(b"p", cstr(md5_response("app-secret", "app", salt))))
write("password", "md5_wrong", salt + msg(b"p", cstr(md5_response("other", "app", salt))))
sasl_first = b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"
write("password", "sasl_initial", salt + msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(sasl_first)) + sasl_first)
      + msg(b"p", cfinal))
write("password", "sasl_no_data", salt + msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", -1)))

# --- configs, auth file, console -------------------------------------------------------------------
with open(os.path.join(ROOT, "..", "conf", "pgsluice.toml")) as f:
    write("config_toml", "reference", f.read())
write("config_toml", "minimal", '[pgsluice]\nlisten_port = 6433\npool_mode = "session"\nauth_type = "trust"\n\n'
      '[databases]\napp = { host = "db1", port = 5433, dbname = "app_prod", user = "svc", password = "pw", pool_size = 5 }\n'
      '"*" = { host = "127.0.0.1" }\n\n[users]\nreport = { pool_mode = "statement", max_user_connections = 3 }\n')
write("pgbouncer_ini", "typical", """[databases]
app = host=127.0.0.1 port=5432 dbname=app pool_size=20 reserve_pool=5
analytics = host=10.0.0.2 dbname=dw user=report password='s3cr et' pool_mode=session
* = host=127.0.0.1

[users]
report = pool_mode=statement max_user_connections=4

[pgbouncer]
listen_addr = *
listen_port = 6432
auth_type = md5
auth_file = /etc/pgbouncer/userlist.txt
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid
admin_users = postgres
stats_users = stats, monitor
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 30
reserve_pool_size = 5
reserve_pool_timeout = 3
server_reset_query = DISCARD ALL
server_idle_timeout = 600
ignore_startup_parameters = extra_float_digits,options
max_prepared_statements = 100
;unix_socket_dir = /tmp
""")
write("pgbouncer_ini", "minimal", "[pgbouncer]\nauth_type = trust\n[databases]\ndb = host=localhost\n")
with open(os.path.join(ROOT, "..", "conf", "userlist.txt")) as f:
    write("auth_file", "reference", f.read())
write("auth_file", "quotes", '"we""ird" "pa""ss"\n# comment\n"md5user" "md5A0B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5"\n')
for i, cmd in enumerate(["SHOW POOLS;", "show stats_totals", "SET default_pool_size = 30", "set query_wait_timeout='5'",
                         "KILL app", "SHUTDOWN WAIT_FOR_CLIENTS;", "RELOAD", "PAUSE \"app\"", ";", "SET max_client_conn=abc",
                         "SET listen_port = 7000", "SET server_reset_query = 'DISCARD ALL'"]):
    write("console", f"command_{i:02}", cmd + "\0")

# --- statement texts for session_state (first byte: standard_conforming_strings off when odd) ---------
for i, sql in enumerate(["set work_mem = '1MB'", "select 1; SET LOCAL x = 1; reset all", "select pg_advisory_lock(1)",
                         "create temp table t (x int)", "select * into temporary t from x", "declare c cursor with hold for select 1",
                         "select $$ set $$, $a$ ; $a$, E'\\' set', 'it''s'; listen ch", "/* /* nested */ set */ select set_config('a','b',false)",
                         "prepare p as select 1", "select \"pg_temp\".f()", "update t set x = 1 -- reset"]):
    write("sql", f"statement_{i:02}", chr(i % 2) + sql)
