/*
** wal_index.h — a pull committed into a WAL replica the way SQLite's own writer commits:
** frames appended to "<P>-wal", then the wal-index ("-shm") updated as
** https://www.sqlite.org/walformat.html specifies; plus the lookups the VFS needs to tell
** a checkpoint's pulled pages from its local ones. Spec: the header comment of
** wal_index.c. Driven by turso_dbapi/storage/wal_writer.py through a private pragma.
*/
#ifndef TDB_WAL_INDEX_H
#define TDB_WAL_INDEX_H
#include <stdint.h>
#include <stddef.h>

/* cdef-begin */
#define TDB_WI_OK 0
#define TDB_WI_EMOVED 1   /* the wal-index is not at the frame / salts the caller planned on */
#define TDB_WI_EIO 2      /* the -wal file could not be opened, written or synced; sys_errno */
#define TDB_WI_EARG 3     /* bad page size, page number or count */
#define TDB_WI_ECORRUPT 4 /* the wal-index header copies differ or a hash block is full */
#define TDB_WI_ENOJOB 5   /* no job has this token (run already, or never submitted) */
#define TDB_WI_ESHM 6     /* xShmMap failed: the database is not in WAL mode */

#define TDB_WI_READ 1   /* job: report the wal-index state */
#define TDB_WI_APPEND 2 /* job: append frames as one commit */

typedef struct tdb_wi_state {
  uint32_t mx_frame;    /* frames of committed transactions (SQLite's mxFrame) */
  uint32_t n_page;      /* database size in pages after the last commit */
  uint32_t n_backfill;  /* frames already copied into the database file */
  uint32_t salt1;       /* the WAL's salts, as the WAL header spells them */
  uint32_t salt2;
  uint32_t page_size;
  uint32_t big_end;     /* checksums over big-endian words */
  uint32_t i_change;
} tdb_wi_state;

typedef struct tdb_wi_job {
  int op;                   /* TDB_WI_READ or TDB_WI_APPEND */
  const char *wal_path;     /* "<P>-wal" (APPEND) */
  uint32_t expect_mx;       /* APPEND: mxFrame and salts the plan was made against */
  uint32_t expect_salt1;
  uint32_t expect_salt2;
  uint32_t new_salt2;       /* APPEND into an empty WAL: salt-2 of the fresh header */
  const uint32_t *pgno;     /* APPEND: n page numbers and n page images end to end */
  const uint8_t *pages;     /*   (with src_off: only the pages whose src_off is -1, in order) */
  const int64_t *src_off;   /* APPEND, optional: page i is read from src_fd at src_off[i] (>= 0) */
  int src_fd;
  uint32_t n;
  uint32_t db_size;         /* APPEND: pages of the database after the commit */
  uint32_t page_size;       /* APPEND: the database's (an empty wal-index records none) */
  tdb_wi_state state;       /* out: READ: the state; APPEND: the state after the commit */
  uint32_t first_frame;     /* out (APPEND): frame number of pages[0] */
  int rc;                   /* out: TDB_WI_* */
  int sys_errno;            /* out: errno of an EIO */
} tdb_wi_job;

/* Register a job; returns its token (never 0). The job runs when "PRAGMA tdb_wal_job=<token>"
** is prepared on a connection to the replica (vfs.c rule (17)), once. */
uint64_t tdb_wi_submit(tdb_wi_job *job);
/* Forget a job that did not run (returns 1 when it was still registered). */
int tdb_wi_withdraw(uint64_t token);
/* cdef-end */

/* C only: vfs.c hands over the main database file's shm methods. */
typedef int (*tdb_wi_map_fn)(void *file, int region, int size, int extend, void volatile **pp);
typedef void (*tdb_wi_barrier_fn)(void *file);
typedef struct tdb_wi_shm {
  void *file;
  tdb_wi_map_fn map;
  tdb_wi_barrier_fn barrier;
} tdb_wi_shm;

/* Run the job of `token` against this shm (SQLite code; the job's rc says more). */
int tdb_wi_run(uint64_t token, const tdb_wi_shm *shm);

/* A checkpoint's view of the synced frames (rule (8) of wal_index.c). */
typedef struct tdb_wi_ckpt tdb_wi_ckpt;
tdb_wi_ckpt *tdb_wi_ckpt_begin(const tdb_wi_shm *shm, const char *db_path, uint32_t page_size);
#define TDB_WI_CKPT_LOCAL 0    /* a local frame: the local layer */
#define TDB_WI_CKPT_SYNCED 1   /* a pulled frame: the synced layer */
#define TDB_WI_CKPT_SHADOWED 2 /* local, and *synced is the page's synced version to keep */
int tdb_wi_ckpt_classify(tdb_wi_ckpt *c, const tdb_wi_shm *shm, uint32_t pgno, const uint8_t *page,
                         const uint8_t **synced);
void tdb_wi_ckpt_end(tdb_wi_ckpt *c);

#endif
