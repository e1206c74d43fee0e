/*
** frames.h — the fast path of a /pull-updates body: canonical PageData frames.
**
** A page frame is ``varint(len) PageData`` (spec §2: writeDelimitedTo framing). Servers
** write PageData as ``08 varint(page_id)`` (omitted when 0, proto3) then
** ``12 varint(page_size) <page bytes>``. tdb_scan_page_frames finds, from the start of
** buf, the run of complete frames in exactly that shape, so Python handles a chunk of
** pages with one call instead of a protobuf decode per page.
**
** RULES
**   (1) It stops at the first frame that is incomplete (more bytes needed) or not in the
**       canonical shape: other field order, unknown fields, a page of another size, a
**       length prefix over page_size + 32 or not minimal, a page_id of 0xFFFFFFFE or
**       more. It never rejects: the caller decodes that frame with the general parser,
**       which accepts what protobuf allows and raises the precise error otherwise, so
**       the fast path changes no verdict.
**   (2) For each frame found: page_ids[i] (0-based, as on the wire) and offsets[i], the
**       offset in buf of its page bytes. At most max_frames; *consumed = bytes of buf the
**       frames found cover. Returns the number found.
**   (3) Reads only buf[0, len); no allocation; thread-safe.
*/
#ifndef TDB_FRAMES_H
#define TDB_FRAMES_H
#include <stdint.h>
#include <stddef.h>

/* cdef-begin */
uint32_t tdb_scan_page_frames(const uint8_t *buf, size_t len, uint32_t page_size,
                              uint32_t *page_ids, uint32_t *offsets, uint32_t max_frames,
                              size_t *consumed);
/* cdef-end */

#endif
