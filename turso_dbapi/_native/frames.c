/* frames.c — canonical PageData frames of a /pull-updates body; rules in frames.h. */
#include "frames.h"

#define FRAME_SLACK 32 /* as sync_wire._PAGE_FRAME_SLACK: a page frame's bytes beyond the page */
#define MAX_PAGE_ID 0xFFFFFFFEu /* sync_wire.MAX_DB_PAGES: ids at or past it are refused */

/* A minimal varint of at most max_bytes in [p, end): its length, or 0 (truncated, too long,
** or not minimal: a trailing 0x00 byte; the general parser decides those). */
static size_t varint(const uint8_t *p, const uint8_t *end, size_t max_bytes, uint64_t *out) {
    uint64_t v = 0;
    for (size_t i = 0; i < max_bytes && p + i < end; i++) {
        v |= (uint64_t)(p[i] & 0x7F) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (i > 0 && p[i] == 0) return 0;
            *out = v;
            return i + 1;
        }
    }
    return 0;
}

uint32_t tdb_scan_page_frames(const uint8_t *buf, size_t len, uint32_t page_size,
                              uint32_t *page_ids, uint32_t *offsets, uint32_t max_frames,
                              size_t *consumed) {
    const uint8_t *end = buf + len, *p = buf;
    uint32_t n = 0;
    while (n < max_frames && p < end) {
        uint64_t flen, id = 0, plen;
        size_t k = varint(p, end, 3, &flen);
        if (!k || flen > (uint64_t)page_size + FRAME_SLACK) break;
        const uint8_t *body = p + k;
        if ((size_t)(end - body) < flen) break; /* incomplete: wait for more bytes */
        const uint8_t *fend = body + flen, *q = body;
        if (q < fend && *q == 0x08) { /* field 1, varint: page_id */
            k = varint(q + 1, fend, 5, &id);
            if (!k || id >= MAX_PAGE_ID) break;
            q += 1 + k;
        }
        if (q >= fend || *q != 0x12) break; /* field 2, bytes: the page */
        k = varint(q + 1, fend, 3, &plen);
        if (!k || plen != page_size) break;
        q += 1 + k;
        if ((size_t)(fend - q) != plen) break;
        page_ids[n] = (uint32_t)id;
        offsets[n] = (uint32_t)(q - buf);
        n++;
        p = fend;
    }
    *consumed = (size_t)(p - buf);
    return n;
}
