// node-postgres through pgsluice with named queries ({name, text, values}): pg parses each name once
// per connection and binds it afterwards, on whichever server the transaction lands.
const { Client } = require('pg');

const CONNS = 6;
const ROUNDS = 30;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function worker(n) {
  const c = new Client(); // PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE
  await c.connect();
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const v = n * 1000 + i;
      let r = await c.query({ name: 'double', text: 'select $1::int4 * 2 as d', values: [v] });
      check(r.rows[0].d === v * 2, `double ${v}`);
      r = await c.query({ name: 'count', text: 'select count(*)::int4 as n from accounts where id <= $1', values: [i % 12] });
      check(r.rows[0].n === Math.min(i % 12, 10), `count ${i}`);
      await c.query('begin');
      await c.query({ name: 'touch', text: 'update accounts set balance = balance where id = $1', values: [1 + (i % 10)] });
      r = await c.query({ name: 'concat', text: "select $1::text || 'x' as s", values: [String(v)] });
      check(r.rows[0].s === `${v}x`, `concat ${v}`);
      await c.query(i % 2 ? 'commit' : 'rollback');
    }
  } finally {
    await c.end();
  }
}

Promise.all(Array.from({ length: CONNS }, (_, n) => worker(n)))
  .then(() => console.log(`node-postgres: ${CONNS} connections x ${ROUNDS} rounds ok`))
  .catch((e) => {
    console.log(`FAILED: ${e.stack || e}`);
    process.exit(1);
  });
