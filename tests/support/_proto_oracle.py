"""Independent protobuf oracle: the sync messages built with Google's ``protobuf`` runtime.

Built from a descriptor at import time (no protoc needed). Only the tests use it; the
package hand-codes the wire format.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _build():
    fdp = descriptor_pb2.FileDescriptorProto(
        name="turso_sync_oracle.proto", package="oracle", syntax="proto3"
    )

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for num, fname, ftype, extra in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=_F.LABEL_OPTIONAL)
            if ftype == _F.TYPE_MESSAGE:
                f.type_name = ".oracle." + extra
            if extra == "optional":
                f.proto3_optional = True
                m.oneof_decl.add(name="_" + fname)
                f.oneof_index = len(m.oneof_decl) - 1
            if extra == "repeated":
                f.label = _F.LABEL_REPEATED
        return m

    msg(
        "PullUpdatesRequest",
        [
            (1, "encoding", _F.TYPE_INT32, None),
            (2, "server_revision", _F.TYPE_STRING, None),
            (3, "client_revision", _F.TYPE_STRING, None),
            (4, "long_poll_timeout_ms", _F.TYPE_UINT32, None),
            (5, "server_pages_selector", _F.TYPE_BYTES, None),
            (6, "client_pages", _F.TYPE_BYTES, None),
            (7, "server_query_selector", _F.TYPE_STRING, None),
            (8, "stream_kind", _F.TYPE_INT32, None),
        ],
    )
    msg("PageSetRawEncoding", [])
    msg(
        "PageSetZstdEncoding",
        [(1, "level", _F.TYPE_INT32, None), (2, "pages_dict", _F.TYPE_UINT32, "repeated")],
    )
    msg(
        "PullUpdatesResponseHeader",
        [
            (1, "server_revision", _F.TYPE_STRING, None),
            (2, "db_size", _F.TYPE_UINT64, None),
            (3, "raw_encoding", _F.TYPE_MESSAGE, "PageSetRawEncoding"),
            (4, "zstd_encoding", _F.TYPE_MESSAGE, "PageSetZstdEncoding"),
            (5, "stream_kind", _F.TYPE_INT32, None),
            (6, "apply_mode", _F.TYPE_INT32, None),
            (8, "protocol", _F.TYPE_INT32, None),
        ],
    )
    msg(
        "PageData", [(1, "page_id", _F.TYPE_UINT64, None), (2, "encoded_page", _F.TYPE_BYTES, None)]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)

    def cls(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName("oracle." + name))

    return {n: cls(n) for n in ("PullUpdatesRequest", "PullUpdatesResponseHeader", "PageData")}


_CLASSES = _build()
PullUpdatesRequestPB = _CLASSES["PullUpdatesRequest"]
PullUpdatesResponseHeaderPB = _CLASSES["PullUpdatesResponseHeader"]
PageDataPB = _CLASSES["PageData"]
