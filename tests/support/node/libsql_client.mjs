// @libsql/client against the reference server: prints one JSON object of what it saw.
// Env: URL, TOKEN; SCENARIO = "ops" | "expire" | "replica" (REPLICA = local file path).
import { createClient } from "@libsql/client";

const out = {};
const big = 9007199254740993n; // 2^53 + 1: not a JavaScript number
const enc = (v) =>
  typeof v === "bigint" ? { bigint: v.toString() }
  : v instanceof ArrayBuffer ? { blob: Array.from(new Uint8Array(v)) }
  : v === Infinity ? { float: "Infinity" }
  : v;
const rowsOf = (rs) => rs.rows.map((r) => Array.from(r).map(enc));
async function err(fn) {
  try { await fn(); return null; } catch (e) { return { code: e.code, message: e.message }; }
}

const scenario = process.env.SCENARIO;
if (scenario === "ops") {
  const c = createClient({ url: process.env.URL, authToken: process.env.TOKEN, intMode: "bigint" });
  await c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, big INTEGER, b BLOB, f REAL, s TEXT)");
  const ins = await c.execute({
    sql: "INSERT INTO t(big, b, f, s) VALUES (?, ?, ?, ?)",
    args: [big, new Uint8Array([0, 1, 255]), 1.5, null],
  });
  out.insert = { rowsAffected: ins.rowsAffected, lastInsertRowid: enc(ins.lastInsertRowid) };
  const sel = await c.execute("SELECT big, b, f, s, 9e999 AS inf FROM t");
  out.select = { columns: sel.columns, columnTypes: sel.columnTypes, rows: rowsOf(sel) };
  const named = await c.execute({ sql: "SELECT :a || $b AS ab", args: { a: "x", b: "y" } });
  out.named = rowsOf(named);
  for (const mode of ["write", "read", "deferred"]) {
    const stmts = mode === "read" ? ["SELECT count(*) FROM t", "SELECT 2"]
      : ["INSERT INTO t(s) VALUES ('batch')", "SELECT count(*) FROM t"];
    out["batch_" + mode] = (await c.batch(stmts, mode)).map(rowsOf);
  }
  out.batch_atomic = await err(() => c.batch(["INSERT INTO t(s) VALUES ('lost')", "INSERT INTO t(id) VALUES (1)"], "write"));
  out.after_atomic = rowsOf(await c.execute("SELECT count(*) FROM t WHERE s = 'lost'"));
  const tx = await c.transaction("write");
  await tx.execute("INSERT INTO t(s) VALUES ('tx-rolled-back')");
  out.tx_sees_own = rowsOf(await tx.execute("SELECT count(*) FROM t WHERE s = 'tx-rolled-back'"));
  await tx.rollback();
  out.after_rollback = rowsOf(await c.execute("SELECT count(*) FROM t WHERE s = 'tx-rolled-back'"));
  const tx2 = await c.transaction("write");
  await tx2.execute("INSERT INTO t(s) VALUES ('tx-committed')");
  await tx2.batch(["INSERT INTO t(s) VALUES ('tx-batch')"]);
  await tx2.commit();
  out.after_commit = rowsOf(await c.execute("SELECT count(*) FROM t WHERE s LIKE 'tx-%'"));
  await c.executeMultiple("INSERT INTO t(s) VALUES ('m1'); INSERT INTO t(s) VALUES ('m;2');");
  out.after_multiple = rowsOf(await c.execute("SELECT s FROM t WHERE s LIKE 'm%' ORDER BY id"));
  // two clients' interactive transactions interleave: a reader keeps its snapshot
  const other = createClient({ url: process.env.URL, authToken: process.env.TOKEN, intMode: "bigint" });
  const reader = await other.transaction("read");
  const before = rowsOf(await reader.execute("SELECT count(*) FROM t"));
  const writer = await c.transaction("write");
  await writer.execute("INSERT INTO t(s) VALUES ('interleaved')");
  const during = rowsOf(await reader.execute("SELECT count(*) FROM t"));
  await writer.commit();
  const after = rowsOf(await reader.execute("SELECT count(*) FROM t"));
  reader.close();
  out.interleave = { before, during, after, fresh: rowsOf(await other.execute("SELECT count(*) FROM t")) };
  out.constraint = await err(() => c.execute("INSERT INTO t(id) VALUES (1)"));
  out.syntax = await err(() => c.execute("SELEC 1"));
  const bad = createClient({ url: process.env.URL, authToken: "wrong-token" });
  out.wrong_token = await err(() => bad.execute("SELECT 1"));
  other.close();
  c.close();
} else if (scenario === "expire") {
  const c = createClient({ url: process.env.URL, authToken: process.env.TOKEN });
  await c.execute("CREATE TABLE e(x)");
  const tx = await c.transaction("write");
  await tx.execute("INSERT INTO e VALUES (1)");
  await new Promise((r) => setTimeout(r, Number(process.env.WAIT_MS)));
  out.expired = await err(() => tx.execute("INSERT INTO e VALUES (2)"));
  out.count = rowsOf(await c.execute("SELECT count(*) FROM e"));
  c.close();
} else if (scenario === "ws") {
  const c = createClient({ url: process.env.URL, authToken: process.env.TOKEN, intMode: "bigint" });
  await c.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, v)");
  await c.execute({ sql: "INSERT INTO w(v) VALUES (?)", args: [big] });
  out.big = (await c.execute("SELECT v FROM w")).rows[0].v.toString();
  const tx = await c.transaction("write");
  await tx.execute("INSERT INTO w(v) VALUES ('rolled back')");
  out.in_tx = Number((await tx.execute("SELECT count(*) AS n FROM w")).rows[0].n);
  await tx.rollback();
  out.after_rollback = Number((await c.execute("SELECT count(*) AS n FROM w")).rows[0].n);
  const tx2 = await c.transaction("write");
  await tx2.execute("INSERT INTO w(v) VALUES ('committed')");
  await tx2.commit();
  out.after_commit = Number((await c.execute("SELECT count(*) AS n FROM w")).rows[0].n);
  await c.executeMultiple("INSERT INTO w(v) VALUES (1); INSERT INTO w(v) VALUES (2);");
  out.multiple = Number((await c.execute("SELECT count(*) AS n FROM w")).rows[0].n);
  out.constraint = (await err(() => c.execute("INSERT INTO w(id) VALUES (1)"))).code;
  c.close();
} else if (scenario === "offline") {
  // offline writes push WAL frames (POST /sync/...), which this server refuses clearly
  const c = createClient({ url: "file:" + process.env.REPLICA, syncUrl: process.env.URL,
                           authToken: process.env.TOKEN, offline: true });
  await c.sync();
  await c.execute("INSERT INTO r(v) VALUES ('offline')");
  out.push = await err(() => c.sync());
  c.close();
} else if (scenario === "replica") {
  const c = createClient({
    url: "file:" + process.env.REPLICA, syncUrl: process.env.URL, authToken: process.env.TOKEN,
    intMode: "bigint",
  });
  out.bootstrap = rowsOf(await c.execute("SELECT count(*) FROM r"));
  out.sync = await c.sync();
  out.after_sync = rowsOf(await c.execute("SELECT count(*) FROM r"));
  await c.execute({ sql: "INSERT INTO r(v) VALUES (?)", args: [big] });
  out.read_your_write = rowsOf(await c.execute("SELECT v FROM r ORDER BY id DESC LIMIT 1"));
  const tx = await c.transaction("write");
  await tx.execute("INSERT INTO r(v) VALUES ('in-tx')");
  await tx.commit();
  await c.sync();
  out.final = rowsOf(await c.execute("SELECT count(*) FROM r"));
  c.close();
}
console.log(JSON.stringify(out));
