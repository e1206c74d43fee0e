/*
** pagestore.c — the page store of a lazily read database (one "replica" P).
**
** FILES (P is the path SQLite opens; all three live side by side)
**   P            SYNCED layer: pages exactly as of the pinned remote version, sparse.
**                Page n (1-based) sits at offset (n-1)*page_size. Also the file SQLite
**                locks and whose "-shm" the default VFS maps (vfs.c delegates those).
**   P-tdblocal   LOCAL layer: pages SQLite wrote (checkpoints, commits), same offsets,
**                sparse. Reads see local over synced.
**   P-tdbmap     the sidecar, mmap(MAP_SHARED) by every process that opens P:
**                  offset  0  8 bytes  magic "TDBMAP\0\1"
**                          8  u32      format (TDB_STORE_FORMAT)
**                         12  u32      page size
**                         16  u64      remote size: bytes of the synced version
**                         24  u64      logical size: what xFileSize reports
**                         32  32 bytes identity (Python: sha256 of URL + version)
**                         64  u32      apply flag (13): nonzero while a pull switches
**                                      the synced layer (0 in sidecars of older builds)
**                       4096  u32[2] per page n at 4096 + 8*(n-1):
**                             [0] synced CRC32C, [1] local CRC32C
**                A CRC word of 0 means "absent"; a real CRC of 0 is stored as 1 and
**                compared the same way (crc_tag). Native byte order: the sidecar is a
**                cache of this machine, not an interchange format.
**   The sidecar only grows (posix_fallocate never shrinks, so two processes growing
**   it at once cannot lose entries); each process reserves one address range for it
**   up front, so the mapping never moves under a reader.
**
** RULES (DESIGN.md 2.3; tagged in the code)
**   (1) The logical size (header) is the size SQLite sees: the remote size, raised
**       by local writes, set by truncation. Never the sparse file's size.
**   (2) A page inside the logical size that is absent and cannot be fetched gives
**       SQLITE_IOERR_READ; nothing is cached about the failure, so a retry refetches.
**   (3) Only bytes past the logical end are zero-filled, with SQLITE_IOERR_SHORT_READ.
**   (5) Writes go to the local layer; a partial-page write first reads the whole page
**       (fetching it if needed). Truncation makes the cut pages local (zero).
**       Fetched pages go into the synced layer only where it is absent, so they can
**       never overwrite local data (a different file) nor a page already stored.
**   (6) A page past the remote size that is not local reads as zeros (a hole),
**       without any network call; put_synced refuses such pages.
**   (7) A page's CRC is checked on its FIRST read in this process (per-process
**       verified bit), not on every hit. A synced page that fails is dropped (entry
**       set to 0) and fetched again: a torn write heals. A local page that fails
**       gives SQLITE_IOERR_DATA (there is no other copy).
**   (8) Order of a store: page bytes first, then the CRC word (release store); a
**       reader that sees the CRC therefore sees the bytes. The store mutex is never
**       held while Python runs.
**   (9) The hit path (present + verified) is two atomic loads and one pread.
**   (13) The apply flag (header offset 64) is set by a puller under SQLite's EXCLUSIVE
**       lock before it switches the synced layer and cleared when the switch is
**       complete (msync'd both times). Every process maps it, so the VFS checks it with
**       one load when a connection takes its SHARED lock (vfs.c rule (13)); it is a
**       hint for speed, the authority is the sync metadata's pending pull.
**   (14) A miss whose Python callback failed sets a thread-local "Python failed"
**       mark along with the SQLITE_IOERR_READ it returns; the VFS clears the mark at
**       the start of each read transaction, and Python takes it (tdb_take_py_failure)
**       to decide whether the I/O error SQLite raised has a cause kept on the Python
**       side. Only error paths touch it: the hit path stays (9).
**   (15) tdb_store_first_local scans the shared map for the local layer's first page, so
**       pull() can refuse to run over local changes without a Python call per page.
**   (16) A local entry whose page reads as all zeros (a hole of P-tdblocal: nothing was
**       ever written there) yet does not match is a bogus entry (garbage in the sidecar),
**       not data: it is cleared and the synced layer answers (a damaged synced entry is
**       then dropped and re-fetched, (7)). A real local page is never all zeros with a
**       CRC other than the zero page's: pages are written before their CRC (8).
**   (17) tdb_store_forget_unchanged_local clears the local entry of a page that holds no
**       change: bytes equal to the synced page (a transaction that spilled pages to the
**       file and rolled back wrote the old bytes back), a bogus entry (16), or a page past
**       both the remote and the logical end. A compare-and-swap on the entry keeps a write
**       that raced with the check.
**   (18) tdb_store_drop_local sets every local CRC word to 0 (and clears this process's
**       verified bits): the local layer is set aside in one call, under SQLite's
**       EXCLUSIVE lock, by a pull that rebases local changes (sync/rebase.py). The
**       page bytes stay in P-tdblocal but are absent; the next write of a page makes it
**       local again. Durable with tdb_store_sync (msync of the map).
**   (19) tdb_store_put_synced_many is put_synced for a batch (a pull's chunk of pages):
**       one lock, one pwritev per run of consecutive pages (the page bytes of the run,
**       then each page's CRC word: (8) holds per run), the same answer per page. Every
**       8 MiB it writes, it starts the kernel's writeback of the synced layer without
**       waiting (sync_file_range, Linux), so the fsync that ends a bootstrap or an apply
**       has little left to do. Durability is still only what tdb_store_sync promises.
**
**   (21) A write is two steps (page bytes, then the CRC word (8)), so a process killed
**       between them leaves a local page whose bytes are newer than its CRC. SQLite
**       writes the database file only while a rollback journal holding the old image is
**       hot (or from the WAL at a checkpoint, which is redone), and rolls it back before
**       its first read under a lock; the one read it makes with no lock at all is the
**       header pre-read at open (bytes 0-99 of page 1, used for the page size and read
**       again under the lock). tdb_store_read_unlocked, the VFS's xRead until the file
**       was first locked, serves a local page failing its CRC as it is (not marked
**       verified, the entry kept): the open succeeds, the rollback rewrites the page and
**       its CRC, and a page still failing under a lock is (7)'s IOERR_DATA.
**
**   (22) Flushes. tdb_store_sync flushes all three files (a pull's apply, a bootstrap);
**       tdb_store_sync_parts flushes the parts it is asked for, and with
**       TDB_SYNC_DIRTY_ONLY only those this process wrote since their last flush: the
**       VFS's xSync (an SQLite commit) uses it, so a commit in rollback mode costs one
**       fdatasync of the local layer and one msync of the sidecar, not also one of the
**       synced layer (which a commit never writes) and one of P through the default VFS
**       (the same file: lazy files never write P through it). Dirty bits are per process
**       (each process flushes what it wrote before SQLite deletes its journal) and are
**       set after the bytes and entries they cover, and cleared before the flush: a write
**       racing a flush keeps its bit, or is covered by it. Flushes of one store are
**       serialised (sync_mu), so an xSync that finds its bits taken by another thread's
**       flush waits for that flush to end. Fills (put_synced without overwrite: pages
**       fetched on a miss) mark nothing: such a page heals itself through (7) - lost
**       bytes fail the CRC and are fetched again at the pinned revision, a lost entry
**       reads as absent. Overwrites (a pull's pages, a checkpoint's backfill) mark the
**       synced layer; every change of an entry or of the header except a fill marks the
**       sidecar. When both the local layer and the sidecar are to be flushed, the sidecar's
**       msync runs on a short-lived helper thread beside the local layer's fdatasync
**       (measured: ~0.1 ms less per commit, the disk serves two concurrent flushes about
**       as fast as one); both end before the call returns. Counters count every flush
**       issued (tests pin them).
**
**   (20) WAL replicas: tdb_store_backfill_synced: a checkpoint's write of a pulled page goes
**       to the synced layer (and clears the page's local entry); vfs.c rule (18) decides.
**       The synced size grows as pulled pages arrive that way (tdb_store_raise_remote_size:
**       never the logical size, which old snapshots read); a pull never changes either.
**
**   (18) A read-only store (tdb_store_open_readonly: a replica opened with readonly=true,
**       maybe on a read-only filesystem) opens its three files O_RDONLY and maps the
**       sidecar PROT_READ; nothing is ever written: put_synced, writes, truncation,
**       drop, the apply flag and the size are refused (SQLite, opened mode=ro, never
**       writes), and a page failing its CRC check reads as absent without its entry
**       being cleared. A writable open of the same path in this process while it is
**       open gets TDB_E_INUSE; a read-only open of a store open writable shares it.
**
**   (23) tdb_store_exclusive_holder: whether a connection of any process (this one's
**       included) holds SQLite's EXCLUSIVE lock on P (a write lock over its SHARED range,
**       os_unix.c), asked with an open-file-description probe of P's own descriptor: an OFD
**       read lock conflicts with every write lock there, a traditional one of this very
**       process included (fcntl(2)). One syscall, where reading /proc/locks costs 7-15 ms;
**       never a new descriptor of P (closing it would drop this process's POSIX locks).
**
** LIMITATIONS
**   64-bit only (address-space reservation). Page size is fixed per store (VACUUM to
**   another page size is not supported). Not fork-safe: reopen in the child.
**   A store's file descriptors close when Python released it and no lazy file is
**   open; opening P in the same process without the VFS while a store is open would
**   share POSIX locks with it (as with any second descriptor of a SQLite file).
*/
#define _GNU_SOURCE
#include "pagestore.h"
#include "checksum.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static const uint8_t MAGIC[8] = {'T', 'D', 'B', 'M', 'A', 'P', 0, 1};

#define OFF_FORMAT 8
#define OFF_PAGE_SIZE 12
#define OFF_REMOTE 16
#define OFF_LOGICAL 24
#define OFF_IDENTITY 32
#define OFF_APPLY 64

/* Per-process bits (flags[pgno-1]). */
#define F_SYNCED_OK 1
#define F_LOCAL_OK 2
#define F_PREFETCHED 4

#define GROW_PAGES (128u * 1024u) /* sidecar grows by 1 MiB of entries */

struct tdb_store {
    struct tdb_store *next;
    char *path;
    int refs; /* Python's reference + one per open lazy file; under g_mu */
    uint32_t page_size;
    int fd_synced, fd_local, fd_map;
    uint8_t *map;          /* reserved mapping of P-tdbmap */
    size_t map_reserved;   /* bytes */
    uint32_t max_pages;    /* entries the reservation covers */
    uint64_t map_cap;      /* entries backed by the file, as last seen (atomic) */
    uint8_t *flags;        /* per-process bits, max_pages bytes (anonymous, lazy) */
    void *py_handle;
    uint32_t zero_crc;     /* crc_tag of an all-zero page */
    pthread_mutex_t mu;    /* growth of the sidecar and stores of entries */
    int readonly;          /* (18) */
    uint64_t unflushed;    /* (19) bytes put_synced_many wrote since it last started writeback */
    uint32_t dirty;        /* (22) DIRTY_* bits: parts written since their last flush (atomic) */
    pthread_mutex_t sync_mu; /* (22) one flush of this store at a time */
    tdb_store_counters c;  /* updated with relaxed atomics */
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static tdb_store *g_stores;
static __thread int t_py_failed; /* (14) */

#define CNT(s, f, n) __atomic_fetch_add(&(s)->c.f, (n), __ATOMIC_RELAXED)

/* (22) parts written since their last flush (same bits as TDB_SYNC_*) */
#define DIRTY_LOCAL TDB_SYNC_LOCAL
#define DIRTY_SYNCED TDB_SYNC_SYNCED
#define DIRTY_MAP TDB_SYNC_MAP
#define DIRTY_ALL (DIRTY_LOCAL | DIRTY_SYNCED | DIRTY_MAP)
/* After the bytes and entries it covers (release): a flush that takes the bit covers them. */
#define MARK(s, bits) __atomic_or_fetch(&(s)->dirty, (uint32_t)(bits), __ATOMIC_RELEASE)

static uint32_t crc_tag(uint32_t crc) { return crc ? crc : 1; }
static void raise_logical(tdb_store *s, uint64_t end);

static uint64_t hdr_u64(tdb_store *s, size_t off) {
    return __atomic_load_n((uint64_t *)(s->map + off), __ATOMIC_ACQUIRE);
}
static void hdr_set_u64(tdb_store *s, size_t off, uint64_t v) {
    __atomic_store_n((uint64_t *)(s->map + off), v, __ATOMIC_RELEASE);
}

static uint64_t remote_pages(tdb_store *s) {
    return (hdr_u64(s, OFF_REMOTE) + s->page_size - 1) / s->page_size;
}

/* Is the entry of pgno backed by the sidecar file? Another process may have grown it. */
static int covered(tdb_store *s, uint32_t pgno) {
    if (pgno == 0 || pgno > s->max_pages) return 0;
    if (pgno <= __atomic_load_n(&s->map_cap, __ATOMIC_ACQUIRE)) return 1;
    struct stat st;
    if (fstat(s->fd_map, &st) != 0 || st.st_size < TDB_MAP_HEADER) return 0;
    uint64_t cap = ((uint64_t)st.st_size - TDB_MAP_HEADER) / 8;
    if (cap > s->max_pages) cap = s->max_pages;
    __atomic_store_n(&s->map_cap, cap, __ATOMIC_RELEASE);
    return pgno <= cap;
}

/* Under s->mu. Returns 0, or an SQLite code. */
static int ensure_cap(tdb_store *s, uint32_t pgno) {
    if (covered(s, pgno)) return 0;
    if (pgno > s->max_pages) return TDB_SQLITE_FULL;
    uint64_t cap = ((uint64_t)pgno + GROW_PAGES - 1) / GROW_PAGES * GROW_PAGES;
    if (cap > s->max_pages) cap = s->max_pages;
    if (posix_fallocate(s->fd_map, 0, (off_t)(TDB_MAP_HEADER + cap * 8)) != 0)
        return TDB_SQLITE_FULL;
    __atomic_store_n(&s->map_cap, cap, __ATOMIC_RELEASE);
    return 0;
}

static uint32_t *entry(tdb_store *s, uint32_t pgno) {
    return (uint32_t *)(s->map + TDB_MAP_HEADER) + 2 * (size_t)(pgno - 1);
}
static uint32_t synced_crc(tdb_store *s, uint32_t pgno) {
    return covered(s, pgno) ? __atomic_load_n(&entry(s, pgno)[0], __ATOMIC_ACQUIRE) : 0;
}
static uint32_t local_crc(tdb_store *s, uint32_t pgno) {
    return covered(s, pgno) ? __atomic_load_n(&entry(s, pgno)[1], __ATOMIC_ACQUIRE) : 0;
}
static uint8_t flags_of(tdb_store *s, uint32_t pgno) {
    return pgno && pgno <= s->max_pages ? __atomic_load_n(&s->flags[pgno - 1], __ATOMIC_RELAXED) : 0;
}

static int pread_full(int fd, uint8_t *buf, size_t n, off_t off, size_t *got) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, off + (off_t)done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

static int pwrite_full(int fd, const uint8_t *buf, size_t n, off_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, buf + done, n - done, off + (off_t)done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

/* ---------------------------------------------------------------- open/close */

static char *suffixed(const char *path, const char *suffix) {
    size_t a = strlen(path), b = strlen(suffix);
    char *z = malloc(a + b + 1);
    if (z) {
        memcpy(z, path, a);
        memcpy(z + a, suffix, b + 1);
    }
    return z;
}

static int open_rw(const char *path) { return open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644); }
static int open_ro(const char *path) { return open(path, O_RDONLY | O_CLOEXEC); }

static void store_free(tdb_store *s) {
    if (s->map) munmap(s->map, s->map_reserved);
    if (s->flags) munmap(s->flags, s->max_pages);
    if (s->fd_synced >= 0) close(s->fd_synced);
    if (s->fd_local >= 0) close(s->fd_local);
    if (s->fd_map >= 0) close(s->fd_map);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->sync_mu);
    free(s->path);
    free(s);
}

/* Create or check the sidecar header, under an exclusive flock so two processes
** opening a fresh replica at once agree. */
static int init_header(int fd, uint32_t page_size, uint64_t remote_size, const uint8_t *identity,
                       int readonly) {
    int rc = TDB_OK;
    if (flock(fd, readonly ? LOCK_SH : LOCK_EX) != 0) return TDB_E_IO;
    struct stat st;
    uint8_t hdr[64];
    if (fstat(fd, &st) != 0) {
        rc = TDB_E_IO;
    } else if (st.st_size < TDB_MAP_HEADER && readonly) {
        rc = TDB_E_MISMATCH; /* (18) never initialised: nothing to read */
    } else if (st.st_size < TDB_MAP_HEADER) {
        memset(hdr, 0, sizeof hdr);
        memcpy(hdr, MAGIC, 8);
        uint32_t fmt = TDB_STORE_FORMAT;
        memcpy(hdr + OFF_FORMAT, &fmt, 4);
        memcpy(hdr + OFF_PAGE_SIZE, &page_size, 4);
        memcpy(hdr + OFF_REMOTE, &remote_size, 8);
        memcpy(hdr + OFF_LOGICAL, &remote_size, 8);
        memcpy(hdr + OFF_IDENTITY, identity, TDB_IDENTITY_LEN);
        if (posix_fallocate(fd, 0, TDB_MAP_HEADER) != 0 || pwrite_full(fd, hdr, sizeof hdr, 0) != 0)
            rc = TDB_E_IO;
    } else {
        size_t got;
        uint32_t fmt, ps;
        if (pread_full(fd, hdr, sizeof hdr, 0, &got) != 0 || got != sizeof hdr) {
            rc = TDB_E_IO;
        } else {
            memcpy(&fmt, hdr + OFF_FORMAT, 4);
            memcpy(&ps, hdr + OFF_PAGE_SIZE, 4);
            if (memcmp(hdr, MAGIC, 8) != 0 || fmt != TDB_STORE_FORMAT || ps != page_size ||
                memcmp(hdr + OFF_IDENTITY, identity, TDB_IDENTITY_LEN) != 0)
                rc = TDB_E_MISMATCH;
        }
    }
    flock(fd, LOCK_UN);
    return rc;
}

static tdb_store *store_open(const char *path, uint32_t page_size, uint64_t remote_size,
                             const uint8_t *identity, void *py_handle, int readonly, int *err,
                             int *sys_errno) {
    *err = TDB_OK;
    *sys_errno = 0;
    if (!path || !*path || page_size < 512 || page_size > 65536 || (page_size & (page_size - 1))) {
        *err = TDB_E_ARG;
        return NULL;
    }
    pthread_mutex_lock(&g_mu);
    for (tdb_store *s = g_stores; s; s = s->next) {
        if (strcmp(s->path, path) == 0) {
            if (s->page_size != page_size ||
                memcmp(s->map + OFF_IDENTITY, identity, TDB_IDENTITY_LEN) != 0 ||
                (s->readonly && !readonly)) { /* (18) */
                *err = TDB_E_INUSE;
                pthread_mutex_unlock(&g_mu);
                return NULL;
            }
            s->refs++;
            pthread_mutex_unlock(&g_mu);
            return s;
        }
    }
    tdb_store *s = calloc(1, sizeof *s);
    char *zl = suffixed(path, "-tdblocal"), *zm = suffixed(path, "-tdbmap");
    if (!s || !zl || !zm) {
        free(s);
        free(zl);
        free(zm);
        pthread_mutex_unlock(&g_mu);
        *err = TDB_E_IO;
        *sys_errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->sync_mu, NULL);
    s->fd_synced = s->fd_local = s->fd_map = -1;
    s->path = strdup(path);
    s->page_size = page_size;
    s->py_handle = py_handle;
    s->refs = 1;
    s->readonly = readonly;
    int (*open_file)(const char *) = readonly ? open_ro : open_rw; /* (18) */
    s->fd_synced = open_file(path);
    s->fd_local = open_file(zl);
    s->fd_map = open_file(zm);
    free(zl);
    free(zm);
    if (!s->path || s->fd_synced < 0 || s->fd_local < 0 || s->fd_map < 0) goto io_error;
    *err = init_header(s->fd_map, page_size, remote_size, identity, readonly);
    if (*err != TDB_OK) goto fail;
    {
        uint64_t rp = (remote_size + page_size - 1) / page_size;
        uint64_t maxp = rp * 4 > (1u << 24) ? rp * 4 : (1u << 24);
        if (maxp > 0xFFFFFFFEu) maxp = 0xFFFFFFFEu;
        s->max_pages = (uint32_t)maxp;
    }
    s->map_reserved = TDB_MAP_HEADER + (size_t)s->max_pages * 8;
    s->map = mmap(NULL, s->map_reserved, readonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED,
                  s->fd_map, 0);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        goto io_error;
    }
    s->flags = mmap(NULL, s->max_pages, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->flags == MAP_FAILED) {
        s->flags = NULL;
        goto io_error;
    }
    {
        uint8_t *zero = calloc(1, page_size);
        if (!zero) goto io_error;
        s->zero_crc = crc_tag(tdb_crc32c(0, zero, page_size));
        free(zero);
    }
    covered(s, 1); /* learn the current capacity */
    s->next = g_stores;
    g_stores = s;
    pthread_mutex_unlock(&g_mu);
    return s;
io_error:
    *err = TDB_E_IO;
    *sys_errno = errno;
fail:
    store_free(s);
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

tdb_store *tdb_store_open(const char *path, uint32_t page_size, uint64_t remote_size,
                          const uint8_t *identity, void *py_handle, int *err, int *sys_errno) {
    return store_open(path, page_size, remote_size, identity, py_handle, 0, err, sys_errno);
}

tdb_store *tdb_store_open_readonly(const char *path, uint32_t page_size, uint64_t remote_size,
                                   const uint8_t *identity, void *py_handle, int *err,
                                   int *sys_errno) {
    return store_open(path, page_size, remote_size, identity, py_handle, 1, err, sys_errno);
}

int tdb_store_readonly(tdb_store *s) { return s->readonly; }

tdb_store *tdb_store_lookup(const char *path) {
    tdb_store *found = NULL;
    pthread_mutex_lock(&g_mu);
    for (tdb_store *s = g_stores; s; s = s->next) {
        if (strcmp(s->path, path) == 0) {
            s->refs++;
            found = s;
            break;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return found;
}

int tdb_store_refs(tdb_store *s) {
    pthread_mutex_lock(&g_mu);
    int n = s->refs;
    pthread_mutex_unlock(&g_mu);
    return n;
}

void tdb_store_release(tdb_store *s) {
    if (!s) return;
    pthread_mutex_lock(&g_mu);
    if (--s->refs == 0) {
        tdb_store **pp = &g_stores;
        while (*pp && *pp != s) pp = &(*pp)->next;
        if (*pp) *pp = s->next;
        store_free(s);
    }
    pthread_mutex_unlock(&g_mu);
}

/* ---------------------------------------------------------------- accessors */

uint32_t tdb_store_page_size(tdb_store *s) { return s->page_size; }
const char *tdb_store_path(tdb_store *s) { return s->path; }
int tdb_store_exclusive_holder(tdb_store *s) { /* (23) */
#ifdef F_OFD_GETLK
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0x40000000 + 2; /* SQLite's SHARED_FIRST (PENDING_BYTE + 2) */
    fl.l_len = 510;              /* its SHARED_SIZE */
    if (fcntl(s->fd_synced, F_OFD_GETLK, &fl) != 0) return -1;
    if (fl.l_type == F_UNLCK) return 0;
    return fl.l_pid > 0 ? fl.l_pid : -1; /* -1: held, by an OFD lock (no pid) */
#else
    (void)s;
    return -1; /* unknown: the caller asks /proc/locks */
#endif
}
void *tdb_store_py_handle(tdb_store *s) { return s->py_handle; }
uint64_t tdb_store_remote_size(tdb_store *s) { return hdr_u64(s, OFF_REMOTE); }
uint64_t tdb_store_logical_size(tdb_store *s) { return hdr_u64(s, OFF_LOGICAL); } /* (1) */
uint32_t tdb_store_max_pages(tdb_store *s) { return s->max_pages; }

void tdb_store_set_remote_size(tdb_store *s, uint64_t size) {
    /* For a new synced revision (sync engine, under SQLite's EXCLUSIVE lock): the
    ** synced layer now has `size` bytes and SQLite sees that size. */
    if (s->readonly) return; /* (18) */
    pthread_mutex_lock(&s->mu);
    hdr_set_u64(s, OFF_REMOTE, size);
    hdr_set_u64(s, OFF_LOGICAL, size);
    MARK(s, DIRTY_MAP); /* (22) */
    pthread_mutex_unlock(&s->mu);
}

int tdb_store_page_state(tdb_store *s, uint32_t pgno) {
    int st = 0;
    uint8_t f = flags_of(s, pgno);
    if (synced_crc(s, pgno)) st |= TDB_PG_SYNCED;
    if (local_crc(s, pgno)) st |= TDB_PG_LOCAL;
    if (f & F_PREFETCHED) st |= TDB_PG_PREFETCHED;
    if (f & (F_SYNCED_OK | F_LOCAL_OK)) st |= TDB_PG_VERIFIED;
    return st;
}

uint32_t tdb_store_first_absent(tdb_store *s, uint32_t from_pgno, uint32_t to_pgno) {
    uint64_t rp = remote_pages(s);
    if (to_pgno > rp) to_pgno = (uint32_t)rp;
    for (uint32_t p = from_pgno ? from_pgno : 1; p && p <= to_pgno; p++)
        if (!synced_crc(s, p) && !local_crc(s, p)) return p;
    return 0;
}

uint32_t tdb_store_first_local(tdb_store *s, uint32_t from_pgno, uint32_t to_pgno) { /* (15) */
    covered(s, s->max_pages); /* refresh map_cap: another process may have grown the map */
    uint64_t cap = __atomic_load_n(&s->map_cap, __ATOMIC_ACQUIRE);
    if (to_pgno == 0 || to_pgno > cap) to_pgno = (uint32_t)cap;
    for (uint32_t p = from_pgno ? from_pgno : 1; p && p <= to_pgno; p++)
        if (local_crc(s, p)) return p;
    return 0;
}

void tdb_store_get_counters(tdb_store *s, tdb_store_counters *out) {
    out->hits = __atomic_load_n(&s->c.hits, __ATOMIC_RELAXED);
    out->misses = __atomic_load_n(&s->c.misses, __ATOMIC_RELAXED);
    out->pages_read = __atomic_load_n(&s->c.pages_read, __ATOMIC_RELAXED);
    out->crc_failures = __atomic_load_n(&s->c.crc_failures, __ATOMIC_RELAXED);
    out->prefetched = __atomic_load_n(&s->c.prefetched, __ATOMIC_RELAXED);
    out->prefetch_used = __atomic_load_n(&s->c.prefetch_used, __ATOMIC_RELAXED);
    out->local_writes = __atomic_load_n(&s->c.local_writes, __ATOMIC_RELAXED);
    out->local_syncs = __atomic_load_n(&s->c.local_syncs, __ATOMIC_RELAXED);
    out->synced_syncs = __atomic_load_n(&s->c.synced_syncs, __ATOMIC_RELAXED);
    out->map_syncs = __atomic_load_n(&s->c.map_syncs, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- synced layer */

int tdb_store_put_synced(tdb_store *s, uint32_t pgno, const uint8_t *buf, int overwrite,
                         int prefetched) {
    /* Returns 1 when stored, 0 when kept (already present), -1 refused/failed. */
    if (s->readonly) return -1; /* (18) */
    if (pgno == 0 || pgno > remote_pages(s)) return -1; /* (6) */
    int rc = 1;
    pthread_mutex_lock(&s->mu);
    if (ensure_cap(s, pgno) != 0) {
        rc = -1;
    } else if (!overwrite && __atomic_load_n(&entry(s, pgno)[0], __ATOMIC_ACQUIRE)) {
        rc = 0; /* (5) only absent slots are filled */
    } else if (pwrite_full(s->fd_synced, buf, s->page_size, (off_t)(pgno - 1) * s->page_size) != 0) {
        rc = -1;
    } else {
        uint32_t crc = crc_tag(tdb_crc32c(0, buf, s->page_size));
        __atomic_store_n(&entry(s, pgno)[0], crc, __ATOMIC_RELEASE); /* (8) bytes, then CRC */
        /* Bytes this process just wrote need no first-read check. */
        __atomic_or_fetch(&s->flags[pgno - 1], F_SYNCED_OK, __ATOMIC_RELAXED);
        if (prefetched) {
            __atomic_or_fetch(&s->flags[pgno - 1], F_PREFETCHED, __ATOMIC_RELAXED);
            CNT(s, prefetched, 1);
        }
        if (overwrite) MARK(s, DIRTY_SYNCED | DIRTY_MAP); /* (22) a fill heals itself: no mark */
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* (20) A checkpoint of a WAL replica writes a pulled page (wal_index.c rule (8)): it is
** the synced version, so it goes to the synced layer (the synced size grows to hold it),
** and the page holds no local change any more. Returns an SQLite code. */
void tdb_store_raise_remote_size(tdb_store *s, uint64_t size) {
    if (s->readonly) return;
    pthread_mutex_lock(&s->mu);
    if (hdr_u64(s, OFF_REMOTE) < size) {
        hdr_set_u64(s, OFF_REMOTE, size);
        MARK(s, DIRTY_MAP); /* (22) */
    }
    pthread_mutex_unlock(&s->mu);
}

int tdb_store_backfill_synced(tdb_store *s, uint32_t pgno, const uint8_t *buf) {
    if (s->readonly) return TDB_SQLITE_READONLY;
    uint64_t end = (uint64_t)pgno * s->page_size;
    tdb_store_raise_remote_size(s, end);
    if (tdb_store_put_synced(s, pgno, buf, 1, 0) != 1) return TDB_SQLITE_IOERR_WRITE;
    if (covered(s, pgno)) {
        __atomic_store_n(&entry(s, pgno)[1], 0, __ATOMIC_RELEASE);
        __atomic_and_fetch(&s->flags[pgno - 1], (uint8_t)~F_LOCAL_OK, __ATOMIC_RELAXED);
    }
    raise_logical(s, end);
    MARK(s, DIRTY_MAP); /* (22) the put marked the synced layer */
    return TDB_SQLITE_OK;
}

/* Write iov[0, cnt) at off, whole (retrying short writes). 0, or -1. */
static int pwritev_full(int fd, struct iovec *iov, int cnt, off_t off) {
    while (cnt > 0) {
        ssize_t r = pwritev(fd, iov, cnt, off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        off += r;
        while (cnt > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

#define RUN_MAX 64 /* pages per pwritev (well under IOV_MAX) */
#define WRITEBACK_EVERY (8u << 20) /* (19) bytes between two starts of writeback */

/* (19) Start writing the synced layer's dirty pages to disk now, without waiting: a
** bootstrap's final fsync then finds most of them written (the disk works while the
** network does). Linux only; elsewhere the final fsync does it all. Under s->mu. */
static void start_writeback(tdb_store *s, uint64_t bytes) {
    s->unflushed += bytes;
    if (s->unflushed < WRITEBACK_EVERY) return;
    s->unflushed = 0;
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
    (void)sync_file_range(s->fd_synced, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
}

int tdb_store_put_synced_many(tdb_store *s, const uint8_t *buf, const uint32_t *pgnos,
                              const uint32_t *offsets, uint32_t n, int overwrite) { /* (19) */
    if (s->readonly) return 0; /* (18) */
    uint64_t limit = remote_pages(s);
    struct iovec iov[RUN_MAX];
    uint32_t run[RUN_MAX]; /* indexes into pgnos of the run's pages */
    uint32_t i = 0;
    pthread_mutex_lock(&s->mu);
    while (i < n) {
        uint32_t first = pgnos[i];
        if (first == 0 || first > limit || ensure_cap(s, first) != 0) break; /* (6) */
        if (!overwrite && __atomic_load_n(&entry(s, first)[0], __ATOMIC_ACQUIRE)) {
            i++; /* (5) kept */
            continue;
        }
        /* The run: following pages numbered first+1, first+2, ... that are to be written. */
        int cnt = 0;
        while (cnt < RUN_MAX && i + cnt < n && pgnos[i + cnt] == first + (uint32_t)cnt
               && pgnos[i + cnt] <= limit && ensure_cap(s, pgnos[i + cnt]) == 0
               && (overwrite || !__atomic_load_n(&entry(s, pgnos[i + cnt])[0], __ATOMIC_ACQUIRE))) {
            iov[cnt].iov_base = (void *)(buf + offsets[i + cnt]);
            iov[cnt].iov_len = s->page_size;
            run[cnt] = i + cnt;
            cnt++;
        }
        if (pwritev_full(s->fd_synced, iov, cnt, (off_t)(first - 1) * s->page_size) != 0) break;
        start_writeback(s, (uint64_t)cnt * s->page_size);
        for (int k = 0; k < cnt; k++) { /* (8) bytes, then CRC */
            uint32_t pgno = pgnos[run[k]];
            uint32_t crc = crc_tag(tdb_crc32c(0, buf + offsets[run[k]], s->page_size));
            __atomic_store_n(&entry(s, pgno)[0], crc, __ATOMIC_RELEASE);
            __atomic_or_fetch(&s->flags[pgno - 1], F_SYNCED_OK, __ATOMIC_RELAXED);
        }
        if (overwrite) MARK(s, DIRTY_SYNCED | DIRTY_MAP); /* (22) */
        i += (uint32_t)cnt;
    }
    pthread_mutex_unlock(&s->mu);
    return (int)i;
}

uint32_t tdb_store_drop_local(tdb_store *s) { /* (18) */
    covered(s, s->max_pages); /* refresh map_cap: another process may have grown the map */
    uint64_t cap = __atomic_load_n(&s->map_cap, __ATOMIC_ACQUIRE);
    uint32_t n = 0;
    for (uint32_t p = 1; p && p <= cap; p++) {
        if (__atomic_load_n(&entry(s, p)[1], __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&entry(s, p)[1], 0, __ATOMIC_RELEASE);
            n++;
        }
        if (s->flags[p - 1] & F_LOCAL_OK)
            __atomic_and_fetch(&s->flags[p - 1], (uint8_t)~F_LOCAL_OK, __ATOMIC_RELAXED);
    }
    if (n) MARK(s, DIRTY_MAP); /* (22) */
    return n;
}

int tdb_store_drop_synced(tdb_store *s, uint32_t pgno) {
    if (s->readonly || !covered(s, pgno)) return 0; /* (18) */
    __atomic_store_n(&entry(s, pgno)[0], 0, __ATOMIC_RELEASE);
    __atomic_and_fetch(&s->flags[pgno - 1], (uint8_t)~(F_SYNCED_OK | F_PREFETCHED), __ATOMIC_RELAXED);
    MARK(s, DIRTY_MAP); /* (22) */
    return 1;
}

/* ---------------------------------------------------------------- reads */

enum { PG_READY = 0, PG_ABSENT = 1 };

static int all_zero(const uint8_t *p, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* Copy bytes [a, b) of page pgno into dst. Returns PG_READY, PG_ABSENT (fetch it),
** or an SQLite error code (> 1). */
static int page_copy(tdb_store *s, uint32_t pgno, uint8_t *dst, uint32_t a, uint32_t b, int unlocked) {
    const uint32_t ps = s->page_size;
    const off_t base = (off_t)(pgno - 1) * ps;
    size_t got;
    uint8_t f = flags_of(s, pgno);
    uint32_t lc = local_crc(s, pgno);
    if (lc) {
        if (f & F_LOCAL_OK) { /* (9) */
            if (pread_full(s->fd_local, dst, b - a, base + a, &got) != 0) return TDB_SQLITE_IOERR_READ;
            if (got < b - a) memset(dst + got, 0, b - a - got); /* sparse tail of a truncation */
            return PG_READY;
        }
        uint8_t *page = (a == 0 && b == ps) ? dst : malloc(ps);
        if (!page) return TDB_SQLITE_IOERR_NOMEM;
        int rc = PG_READY;
        if (pread_full(s->fd_local, page, ps, base, &got) != 0) {
            rc = TDB_SQLITE_IOERR_READ;
        } else {
            if (got < ps) memset(page + got, 0, ps - got);
            int bad = crc_tag(tdb_crc32c(0, page, ps)) != lc;
            if (bad && unlocked) {
                if (page != dst) memcpy(dst, page + a, b - a); /* (21) as it is, not verified */
            } else if (bad) {
                if (all_zero(page, ps) && !s->readonly) { /* (16) nothing was written there: a bogus entry */
                    CNT(s, crc_failures, 1);
                    __atomic_compare_exchange_n(&entry(s, pgno)[1], &lc, 0, 0, __ATOMIC_ACQ_REL,
                                                __ATOMIC_RELAXED);
                    if (page != dst) free(page);
                    return page_copy(s, pgno, dst, a, b, unlocked); /* now the synced layer answers */
                }
                rc = TDB_SQLITE_IOERR_DATA; /* (7) local data has no other copy */
            } else {
                __atomic_or_fetch(&s->flags[pgno - 1], F_LOCAL_OK, __ATOMIC_RELAXED);
                if (page != dst) memcpy(dst, page + a, b - a);
            }
        }
        if (page != dst) free(page);
        return rc;
    }
    uint32_t sc = synced_crc(s, pgno);
    if (sc) {
        if (f & F_PREFETCHED) { /* first read of a readahead page: it was not wasted */
            if (__atomic_fetch_and(&s->flags[pgno - 1], (uint8_t)~F_PREFETCHED, __ATOMIC_RELAXED) & F_PREFETCHED)
                CNT(s, prefetch_used, 1);
        }
        if (f & F_SYNCED_OK) { /* (9) */
            if (pread_full(s->fd_synced, dst, b - a, base + a, &got) != 0) return TDB_SQLITE_IOERR_READ;
            if (got == b - a) return PG_READY;
            /* the file lost the bytes: fall through to the check, which drops the page */
        }
        uint8_t *page = (a == 0 && b == ps) ? dst : malloc(ps);
        if (!page) return TDB_SQLITE_IOERR_NOMEM;
        int rc = PG_READY;
        if (pread_full(s->fd_synced, page, ps, base, &got) != 0) {
            rc = TDB_SQLITE_IOERR_READ;
        } else if (got != ps || crc_tag(tdb_crc32c(0, page, ps)) != sc) {
            /* (7) torn or damaged: forget it and fetch it again */
            CNT(s, crc_failures, 1);
            if (!s->readonly) /* (18) a read-only store keeps the entry: the page reads absent */
                __atomic_compare_exchange_n(&entry(s, pgno)[0], &sc, 0, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED);
            __atomic_and_fetch(&s->flags[pgno - 1], (uint8_t)~F_SYNCED_OK, __ATOMIC_RELAXED);
            rc = PG_ABSENT;
        } else {
            __atomic_or_fetch(&s->flags[pgno - 1], F_SYNCED_OK, __ATOMIC_RELAXED);
            if (page != dst) memcpy(dst, page + a, b - a);
        }
        if (page != dst) free(page);
        return rc;
    }
    if (pgno > remote_pages(s)) { /* (6) a hole: no network */
        memset(dst, 0, b - a);
        return PG_READY;
    }
    return PG_ABSENT;
}

static int page_absent(tdb_store *s, uint32_t pgno) {
    return !local_crc(s, pgno) && !synced_crc(s, pgno) && pgno <= remote_pages(s);
}

static int store_read(tdb_store *s, uint64_t conn_id, uint8_t *buf, int amt, int64_t off, int unlocked) {
    const uint32_t ps = s->page_size;
    const uint64_t logical = hdr_u64(s, OFF_LOGICAL);
    int short_read = 0, called = 0;
    if (amt <= 0) return TDB_SQLITE_OK;
    uint64_t end = (uint64_t)off + (uint64_t)amt;
    if (end > logical) { /* (3) */
        uint64_t keep = (uint64_t)off < logical ? logical - (uint64_t)off : 0;
        memset(buf + keep, 0, (size_t)(end - off - keep));
        end = (uint64_t)off + keep;
        short_read = 1;
    }
    if (end > (uint64_t)off) {
        uint32_t first = (uint32_t)((uint64_t)off / ps) + 1;
        uint32_t last = (uint32_t)((end - 1) / ps) + 1;
        /* One callback for the whole run of absent pages of this read. */
        uint32_t lo = 0, hi = 0;
        for (uint32_t p = first; p <= last; p++) {
            if (page_absent(s, p)) {
                if (!lo) lo = p;
                hi = p;
            }
        }
        if (lo) {
            CNT(s, misses, 1);
            called = 1;
            tdb_py_miss(s->py_handle, conn_id, lo, hi - lo + 1);
        }
        for (uint32_t p = first; p <= last; p++) {
            uint64_t pstart = (uint64_t)(p - 1) * ps;
            uint32_t a = (uint64_t)off > pstart ? (uint32_t)((uint64_t)off - pstart) : 0;
            uint32_t b = end < pstart + ps ? (uint32_t)(end - pstart) : ps;
            uint8_t *dst = buf + (pstart + a - (uint64_t)off);
            int rc = page_copy(s, p, dst, a, b, unlocked);
            if (rc == PG_ABSENT) {
                /* still absent (fetch failed) or dropped by its CRC check: one more try */
                CNT(s, misses, 1);
                called = 1;
                if (tdb_py_miss(s->py_handle, conn_id, p, 1) != 0) {
                    t_py_failed = 1; /* (14) */
                    return TDB_SQLITE_IOERR_READ; /* (2) */
                }
                rc = page_copy(s, p, dst, a, b, unlocked);
                if (rc == PG_ABSENT) return TDB_SQLITE_IOERR_READ; /* (2) */
            }
            if (rc != PG_READY) return rc;
        }
        CNT(s, pages_read, last - first + 1);
    }
    if (!called) CNT(s, hits, 1);
    return short_read ? TDB_SQLITE_IOERR_SHORT_READ : TDB_SQLITE_OK;
}

int tdb_store_read(tdb_store *s, uint64_t conn_id, uint8_t *buf, int amt, int64_t off) {
    return store_read(s, conn_id, buf, amt, off, 0);
}

int tdb_store_read_unlocked(tdb_store *s, uint64_t conn_id, uint8_t *buf, int amt, int64_t off) {
    return store_read(s, conn_id, buf, amt, off, 1); /* (21) */
}

int tdb_store_read_page(tdb_store *s, uint32_t pgno, uint8_t *out) {
    /* Python-side read of one page as SQLite would see it; no network (0 when absent). */
    int rc = page_copy(s, pgno, out, 0, s->page_size, 0);
    return rc == PG_READY ? 1 : (rc == PG_ABSENT ? 0 : -rc);
}

/* (20) The synced layer's page alone (WAL replicas: the version a pull reverts a local page
** to); 1 read, 0 absent or failing its CRC (never dropped here: the miss path does that). */
int tdb_store_read_synced(tdb_store *s, uint32_t pgno, uint8_t *out) {
    uint32_t sc = synced_crc(s, pgno);
    size_t got;
    if (!sc) return 0;
    if (pread_full(s->fd_synced, out, s->page_size, (off_t)(pgno - 1) * s->page_size, &got) != 0)
        return -TDB_SQLITE_IOERR_READ;
    return got == s->page_size && crc_tag(tdb_crc32c(0, out, s->page_size)) == sc;
}

/* ---------------------------------------------------------------- writes */

static void raise_logical(tdb_store *s, uint64_t end) {
    uint64_t cur = hdr_u64(s, OFF_LOGICAL);
    while (end > cur && !__atomic_compare_exchange_n((uint64_t *)(s->map + OFF_LOGICAL), &cur, end, 0,
                                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

int tdb_store_write(tdb_store *s, uint64_t conn_id, const uint8_t *buf, int amt, int64_t off) {
    const uint32_t ps = s->page_size;
    if (s->readonly) return TDB_SQLITE_READONLY; /* (18) */
    if (amt <= 0) return TDB_SQLITE_OK;
    uint64_t end = (uint64_t)off + (uint64_t)amt;
    uint32_t first = (uint32_t)((uint64_t)off / ps) + 1;
    uint32_t last = (uint32_t)((end - 1) / ps) + 1;
    uint8_t *tmp = NULL;
    int rc = TDB_SQLITE_OK;
    for (uint32_t p = first; p <= last && rc == TDB_SQLITE_OK; p++) {
        uint64_t pstart = (uint64_t)(p - 1) * ps;
        uint32_t a = (uint64_t)off > pstart ? (uint32_t)((uint64_t)off - pstart) : 0;
        uint32_t b = end < pstart + ps ? (uint32_t)(end - pstart) : ps;
        const uint8_t *src = buf + (pstart + a - (uint64_t)off);
        if (a != 0 || b != ps) { /* (5) read-modify-write */
            if (!tmp && !(tmp = malloc(ps))) return TDB_SQLITE_IOERR_NOMEM;
            if (pstart >= hdr_u64(s, OFF_LOGICAL)) {
                memset(tmp, 0, ps);
            } else {
                rc = tdb_store_read(s, conn_id, tmp, (int)ps, (int64_t)pstart);
                if (rc == TDB_SQLITE_IOERR_SHORT_READ) rc = TDB_SQLITE_OK; /* zero-filled tail */
                if (rc != TDB_SQLITE_OK) break;
            }
            memcpy(tmp + a, src, b - a);
            src = tmp;
        }
        pthread_mutex_lock(&s->mu);
        if (ensure_cap(s, p) != 0) {
            rc = TDB_SQLITE_FULL;
        } else if (pwrite_full(s->fd_local, src, ps, (off_t)pstart) != 0) {
            rc = TDB_SQLITE_IOERR_WRITE;
        } else {
            uint32_t crc = crc_tag(tdb_crc32c(0, src, ps));
            __atomic_store_n(&entry(s, p)[1], crc, __ATOMIC_RELEASE); /* (8) */
            __atomic_or_fetch(&s->flags[p - 1], F_LOCAL_OK, __ATOMIC_RELAXED);
            CNT(s, local_writes, 1);
        }
        pthread_mutex_unlock(&s->mu);
    }
    free(tmp);
    if (rc == TDB_SQLITE_OK) raise_logical(s, end); /* (1) */
    MARK(s, DIRTY_LOCAL | DIRTY_MAP); /* (22) even a failed write may have changed bytes */
    return rc;
}

int tdb_store_truncate(tdb_store *s, int64_t size) {
    if (s->readonly) return TDB_SQLITE_READONLY; /* (18) */
    /* (5) pages past the new end become local zero pages, so a later growth of the
    ** file reads zeros there, as with a real file, and never the old synced bytes. */
    const uint32_t ps = s->page_size;
    uint64_t old = hdr_u64(s, OFF_LOGICAL);
    uint64_t keep_pages = ((uint64_t)size + ps - 1) / ps;
    uint64_t old_pages = (old + ps - 1) / ps;
    int rc = TDB_SQLITE_OK;
    pthread_mutex_lock(&s->mu);
    struct stat st;
    if (fstat(s->fd_local, &st) == 0 && (uint64_t)st.st_size > keep_pages * ps &&
        ftruncate(s->fd_local, (off_t)(keep_pages * ps)) != 0)
        rc = TDB_SQLITE_IOERR_TRUNCATE;
    for (uint64_t p = keep_pages + 1; rc == TDB_SQLITE_OK && p <= old_pages; p++) {
        if (ensure_cap(s, (uint32_t)p) != 0) {
            rc = TDB_SQLITE_FULL;
            break;
        }
        __atomic_store_n(&entry(s, (uint32_t)p)[1], s->zero_crc, __ATOMIC_RELEASE);
        __atomic_or_fetch(&s->flags[p - 1], F_LOCAL_OK, __ATOMIC_RELAXED);
    }
    if (rc == TDB_SQLITE_OK) hdr_set_u64(s, OFF_LOGICAL, (uint64_t)size); /* (1) */
    MARK(s, DIRTY_LOCAL | DIRTY_MAP); /* (22) */
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* (22) the sidecar's flush, on a helper thread while the caller flushes the local layer */
static void *msync_map(void *arg) {
    tdb_store *s = arg;
    uint64_t cap = __atomic_load_n(&s->map_cap, __ATOMIC_ACQUIRE);
    return msync(s->map, TDB_MAP_HEADER + cap * 8, MS_SYNC) != 0 ? (void *)1 : NULL;
}

int tdb_store_sync(tdb_store *s) { return tdb_store_sync_parts(s, DIRTY_ALL); }

/* (22) Flush the parts in `flags` (all of them, or with TDB_SYNC_DIRTY_ONLY those this
** process wrote since their last flush). Their order does not matter: what relies on them
** (SQLite deleting its journal, a new sync metadata file) happens after this returns. */
int tdb_store_sync_parts(tdb_store *s, int flags) {
    if (s->readonly) return TDB_SQLITE_OK; /* (18) nothing was written */
    uint32_t want = (uint32_t)flags & DIRTY_ALL;
    pthread_mutex_lock(&s->sync_mu);
    /* Taken before the flush: a write that lands during it sets its bit again. */
    uint32_t had = __atomic_fetch_and(&s->dirty, ~want, __ATOMIC_ACQ_REL);
    if (flags & TDB_SYNC_DIRTY_ONLY) want &= had;
    if (flags & TDB_SYNC_FORGET) __atomic_and_fetch(&s->dirty, want, __ATOMIC_ACQ_REL);
    uint32_t failed = 0;
    pthread_t helper;
    /* The sidecar beside the layers: the disk serves concurrent flushes about as one. */
    int parallel = (want & DIRTY_MAP) && (want & (DIRTY_LOCAL | DIRTY_SYNCED)) &&
                   pthread_create(&helper, NULL, msync_map, s) == 0;
    if (want & DIRTY_LOCAL) {
        CNT(s, local_syncs, 1);
        if (fdatasync(s->fd_local) != 0) failed |= DIRTY_LOCAL;
    }
    if (want & DIRTY_SYNCED) {
        CNT(s, synced_syncs, 1);
        if (fdatasync(s->fd_synced) != 0) failed |= DIRTY_SYNCED;
    }
    if (want & DIRTY_MAP) {
        void *res = NULL;
        CNT(s, map_syncs, 1);
        if (parallel)
            pthread_join(helper, &res);
        else
            res = msync_map(s);
        if (res) failed |= DIRTY_MAP;
    }
    if (failed) MARK(s, failed); /* still to flush */
    pthread_mutex_unlock(&s->sync_mu);
    return failed ? TDB_SQLITE_IOERR_FSYNC : TDB_SQLITE_OK;
}

/* ---------------------------------------------------------------- (17) unchanged local pages */

/* Read a whole page of fd (zeros past its end). 0, or -1 on an I/O error. */
static int read_whole(int fd, uint8_t *buf, uint32_t ps, off_t off) {
    size_t got;
    if (pread_full(fd, buf, ps, off, &got) != 0) return -1;
    if (got < ps) memset(buf + got, 0, ps - got);
    return 0;
}

int tdb_store_forget_unchanged_local(tdb_store *s, uint32_t pgno) {
    /* 1 when pgno holds no local change (any local entry is cleared), 0 when it does,
    ** -1 on an I/O error. (17) */
    const uint32_t ps = s->page_size;
    uint32_t lc = local_crc(s, pgno);
    if (!lc) return 1;
    if (s->readonly) return 0; /* (18) */
    uint8_t *mine = malloc(ps), *theirs = malloc(ps);
    int rc = 0;
    if (!mine || !theirs) {
        rc = -1;
        goto done;
    }
    const off_t base = (off_t)(pgno - 1) * ps;
    if (read_whole(s->fd_local, mine, ps, base) != 0) {
        rc = -1;
        goto done;
    }
    uint64_t rp = remote_pages(s), lp = (hdr_u64(s, OFF_LOGICAL) + ps - 1) / ps;
    int same = 0;
    if (crc_tag(tdb_crc32c(0, mine, ps)) != lc) {
        same = all_zero(mine, ps); /* (16) a bogus entry; otherwise damaged local data: kept */
    } else if (pgno > rp && pgno > lp) {
        same = 1; /* past both ends (a rolled-back growth): never read */
    } else {
        uint32_t sc = synced_crc(s, pgno);
        if (sc) {
            same = read_whole(s->fd_synced, theirs, ps, base) == 0 &&
                   crc_tag(tdb_crc32c(0, theirs, ps)) == sc && memcmp(mine, theirs, ps) == 0;
        } else if (pgno > rp) {
            same = all_zero(mine, ps); /* a hole past the remote end reads as zeros (6) */
        }
    }
    if (same) {
        /* Only if nobody wrote the page meanwhile: a new write changed the entry. */
        if (__atomic_compare_exchange_n(&entry(s, pgno)[1], &lc, 0, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            __atomic_and_fetch(&s->flags[pgno - 1], (uint8_t)~F_LOCAL_OK, __ATOMIC_RELAXED);
            MARK(s, DIRTY_MAP); /* (22) */
            rc = 1;
        }
    }
done:
    free(mine);
    free(theirs);
    return rc;
}

/* ---------------------------------------------------------------- apply flag (13), (14) */

int tdb_store_applying(tdb_store *s) {
    return __atomic_load_n((uint32_t *)(s->map + OFF_APPLY), __ATOMIC_ACQUIRE) != 0;
}

int tdb_store_set_applying(tdb_store *s, int on) {
    if (s->readonly) return TDB_SQLITE_READONLY; /* (18) */
    __atomic_store_n((uint32_t *)(s->map + OFF_APPLY), on ? 1u : 0u, __ATOMIC_RELEASE);
    return msync(s->map, TDB_MAP_HEADER, MS_SYNC) == 0 ? TDB_SQLITE_OK : TDB_SQLITE_IOERR_FSYNC;
}

void tdb_set_py_failure(void) { t_py_failed = 1; }
void tdb_clear_py_failure(void) { t_py_failed = 0; }

int tdb_take_py_failure(void) {
    int was = t_py_failed;
    t_py_failed = 0;
    return was;
}
