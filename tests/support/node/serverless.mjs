// @tursodatabase/serverless (native API and its libsql-client "compat" API) against the
// reference server: prints one JSON object of what it saw. Env: URL, TOKEN.
import { connect } from "@tursodatabase/serverless";
import { createClient } from "@tursodatabase/serverless/compat";

const out = {};
const enc = (v) =>
  typeof v === "bigint" ? { bigint: v.toString() }
  : v instanceof Uint8Array || ArrayBuffer.isView(v) ? { blob: Array.from(v) }
  : v instanceof ArrayBuffer ? { blob: Array.from(new Uint8Array(v)) }
  : v === Infinity ? { float: "Infinity" }
  : v;
const rowOf = (r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, enc(v)]));
async function err(fn) {
  try { await fn(); return null; } catch (e) { return { code: e.code, message: e.message }; }
}

const conn = connect({ url: process.env.URL, authToken: process.env.TOKEN });
await conn.exec("CREATE TABLE s(id INTEGER PRIMARY KEY, big INTEGER, b BLOB, f REAL, t TEXT); " +
                "CREATE INDEX s_t ON s(t)");
const ins = await conn.prepare("INSERT INTO s(big, b, f, t) VALUES (?, ?, ?, ?)");
out.run = await ins.run([9007199254740993n, new Uint8Array([0, 1, 255]), 1.5, null]);
const sel = await conn.prepare("SELECT big, b, f, t, 9e999 AS inf FROM s");
out.columns = sel.columns();
out.row = rowOf(await sel.safeIntegers(true).get());
out.all = (await (await conn.prepare("SELECT id FROM s WHERE id > ?")).all([0])).map(rowOf);
out.batch = (await conn.batch(["INSERT INTO s(t) VALUES ('b1')", "INSERT INTO s(t) VALUES ('b2')"]))
  .map((r) => r.rowsAffected);
const count = async (where) =>
  (await (await conn.prepare(`SELECT count(*) AS n FROM s WHERE ${where}`)).get()).n;
out.tx_rollback = await err(() => conn.transaction(async () => {
  await conn.exec("INSERT INTO s(t) VALUES ('tx-rolled-back')");
  throw new Error("roll it back");
})());
out.after_rollback = await count("t = 'tx-rolled-back'");
await conn.transaction(async () => { await conn.exec("INSERT INTO s(t) VALUES ('tx-committed')"); })();
out.after_commit = await count("t = 'tx-committed'");
out.constraint = await err(async () => (await conn.prepare("INSERT INTO s(id) VALUES (1)")).run());
out.syntax = await err(() => conn.prepare("SELEC 1"));
out.wrong_token = await err(() => connect({ url: process.env.URL, authToken: "wrong-token" }).prepare("SELECT 1"));
const c = createClient({ url: process.env.URL, authToken: process.env.TOKEN });
out.compat_batch = (await c.batch(["SELECT 1 AS one", "SELECT count(*) AS n FROM s"], "read")).map((r) => r.rows.length);
const tx = await c.transaction("write");
await tx.execute("INSERT INTO s(t) VALUES ('compat-rolled-back')");
await tx.rollback();
out.compat_after_rollback = await count("t = 'compat-rolled-back'");
await c.executeMultiple("INSERT INTO s(t) VALUES ('m1'); INSERT INTO s(t) VALUES ('m2');");
out.compat_after_multiple = await count("t LIKE 'm_'");
await conn.close();
console.log(JSON.stringify(out));
