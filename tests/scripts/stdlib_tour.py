"""A script written for the stdlib ``sqlite3``; tests run it as-is and with the import
swapped for ``import turso_dbapi as sqlite3`` and compare everything it prints."""

import datetime
import decimal
import sqlite3
import sys
import threading

out = []


def p(*args):
    out.append(" ".join(repr(a) for a in args))


con = sqlite3.connect(":memory:", detect_types=sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES)
p(type(con).__mro__[-2].__name__, isinstance(con, sqlite3.Connection))
con.execute("create table t(id integer primary key, name text unique, score real, data blob, d date)")
with con:
    con.executemany(
        "insert into t(name, score, data, d) values (?, ?, ?, ?)",
        [(f"n{i}", i * 1.5, sqlite3.Binary(bytes([i])), datetime.date(2020, 1, 1 + i)) for i in range(10)],
    )
p(con.total_changes, con.in_transaction)
cur = con.execute("select * from t where id > ? order by id", (7,))
p([d[0] for d in cur.description], cur.fetchall())
cur = con.execute("select d as \"d [date]\", count(*) from t group by d order by d limit 2")
p(cur.fetchall())

# transactions
con.execute("insert into t(name) values ('tx')")
p(con.in_transaction)
con.rollback()
p(con.execute("select count(*) from t").fetchone())
con.isolation_level = None
con.execute("begin")
con.execute("insert into t(name) values ('tx2')")
con.execute("commit")
p(con.execute("select count(*) from t").fetchone(), con.isolation_level)
con.isolation_level = "DEFERRED"

# errors
for sql, args in [
    ("insert into t(name) values (?)", ("n1",)),
    ("select * from nope", ()),
    ("select ?", (1, 2)),
    ("selec 1", ()),
]:
    try:
        con.execute(sql, args)
    except sqlite3.Error as e:
        p(type(e).__name__, str(e), getattr(e, "sqlite_errorname", None))
con.rollback()

# row factories
con.row_factory = sqlite3.Row
r = con.execute("select id, name from t order by id limit 1").fetchone()
p(r.keys(), tuple(r), r["name"], dict(r))
con.row_factory = lambda c, row: {d[0]: v for d, v in zip(c.description, row)}
p(con.execute("select id, score from t order by id limit 2").fetchall())
con.row_factory = None

# adapters / converters
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


sqlite3.register_adapter(Point, lambda pt: f"{pt.x};{pt.y}")
sqlite3.register_converter("point", lambda b: tuple(map(float, b.split(b";"))))
sqlite3.register_adapter(decimal.Decimal, str)
con.execute("create table pts(p point, dec text)")
con.execute("insert into pts values (?, ?)", (Point(1, 2), decimal.Decimal("1.10")))
p(con.execute("select p, dec from pts").fetchall())

# user functions, aggregates, collations
con.create_function("rev", 1, lambda s: s[::-1] if s else s, deterministic=True)


class Concat:
    def __init__(self):
        self.parts = []

    def step(self, v):
        self.parts.append(str(v))

    def finalize(self):
        return ",".join(self.parts)


con.create_aggregate("concat", 1, Concat)
con.create_collation("backwards", lambda a, b: (a < b) - (a > b))
p(con.execute("select rev(name) from t order by id limit 3").fetchall())
p(con.execute("select concat(id) from t where id < 5").fetchone())
p(con.execute("select name from t order by name collate backwards limit 3").fetchall())
if sys.version_info >= (3, 11):

    class WinSum:
        def __init__(self):
            self.total = 0

        def step(self, v):
            self.total += v

        def inverse(self, v):
            self.total -= v

        def value(self):
            return self.total

        def finalize(self):
            return self.total

    con.create_window_function("winsum", 1, WinSum)
    p(con.execute(
        "select id, winsum(id) over (order by id rows between 1 preceding and current row) from t limit 4"
    ).fetchall())

# authorizer, trace, progress
seen = []
con.set_trace_callback(seen.append)
con.execute("select 42").fetchone()
con.set_trace_callback(None)
p(seen)
con.set_authorizer(lambda action, a1, a2, db, src: sqlite3.SQLITE_DENY if a1 == "pts" else sqlite3.SQLITE_OK)
try:
    con.execute("select * from pts")
except sqlite3.DatabaseError as e:
    p(type(e).__name__, str(e))
con.set_authorizer(lambda *args: sqlite3.SQLITE_OK)  # None clears only on 3.11+
calls = [0]
con.set_progress_handler(lambda: calls.__setitem__(0, calls[0] + 1) or 0, 10)
con.execute("select count(*) from t, t as t2").fetchone()
con.set_progress_handler(None, 0)
p(calls[0] > 0)

# executescript, iterdump, backup
con.executescript("create table s(x); insert into s values (1); insert into s values (2);")
con.commit()
dump = list(con.iterdump())
p(len(dump), dump[:3])
dst = sqlite3.connect(":memory:")
con.backup(dst)
p(dst.execute("select count(*) from t").fetchone(), type(dst).__name__)
back = sqlite3.connect(":memory:")
dst.execute("insert into s values (3)")
dst.commit()
dst.backup(back)
p(back.execute("select sum(x) from s").fetchone())

# blobs and serialize (3.11+)
if sys.version_info >= (3, 11):
    con.execute("create table b(x blob)")
    con.execute("insert into b values (zeroblob(16))")
    con.commit()
    with con.blobopen("b", "x", 1) as blob:
        blob.write(b"hello")
        blob.seek(0)
        p(blob.read(5), len(blob))
    data = con.serialize()
    clone = sqlite3.connect(":memory:")
    clone.deserialize(data)
    p(clone.execute("select count(*) from t").fetchone())

# threads
errs = []


def worker():
    try:
        con.execute("select 1")
    except sqlite3.ProgrammingError as e:
        errs.append(type(e).__name__)


th = threading.Thread(target=worker)
th.start()
th.join()
p(errs)
shared = sqlite3.connect(":memory:", check_same_thread=False)
res = []
th = threading.Thread(target=lambda: res.append(shared.execute("select 7").fetchone()))
th.start()
th.join()
p(res)

# misuse
cur = con.cursor()
cur.close()
for action in (lambda: cur.execute("select 1"), lambda: con.execute("select 1", 5)):
    try:
        action()
    except Exception as e:  # noqa: BLE001 - report whichever class sqlite3 raises
        p(type(e).__name__)
con.close()
try:
    con.execute("select 1")
except sqlite3.ProgrammingError as e:
    p(type(e).__name__, str(e))
p(sqlite3.complete_statement("select 1;"), sqlite3.complete_statement("select 1"))
p(sqlite3.apilevel, sqlite3.paramstyle, sqlite3.threadsafety in (0, 1, 3))
print("\n".join(out))
