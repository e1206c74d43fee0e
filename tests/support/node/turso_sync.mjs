// @tursodatabase/sync (Turso sync: bootstrap, pull, push, query partial bootstrap, remote
// writes over /v3/cursor) against the reference server. Env: URL, TOKEN, DIR.
import { connect } from "@tursodatabase/sync";

const out = {};
const opts = (name, extra = {}) => ({ path: `${process.env.DIR}/${name}`, url: process.env.URL,
                                      authToken: process.env.TOKEN, ...extra });
const count = async (db, sql = "SELECT count(*) AS n FROM t") => (await (await db.prepare(sql)).get()).n;

const a = await connect(opts("a.db"));
const b = await connect(opts("b.db"));
out.bootstrap = await count(a);
await a.exec("INSERT INTO t(v) VALUES ('from a')");
await a.push();
out.b_pulled = await b.pull();
out.b_after_pull = await count(b);
out.b_row = (await (await b.prepare("SELECT v FROM t ORDER BY id DESC LIMIT 1")).get()).v;

const q = await connect(opts("q.db", {
  partialSyncExperimental: { bootstrapStrategy: { kind: "query", query: "SELECT v FROM t WHERE id = 7" } },
}));
out.query_row = (await (await q.prepare("SELECT v FROM t WHERE id = 7")).get()).v;
out.query_bootstrap_bytes = (await q.stats()).networkReceivedBytes;
out.query_count = await count(q);  // the rest arrives lazily
out.query_total_bytes = (await q.stats()).networkReceivedBytes;

const r = await connect(opts("r.db", { remoteWritesExperimental: true }));
await r.exec("INSERT INTO t(v) VALUES ('remote write')");
out.remote_write_seen = await count(r, "SELECT count(*) AS n FROM t WHERE v = 'remote write'");
for (const db of [a, b, q, r]) await db.close();
console.log(JSON.stringify(out));
