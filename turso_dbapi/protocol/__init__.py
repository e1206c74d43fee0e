"""Wire formats shared by client and server: protobuf, roaring bitmaps, the pull-updates
messages."""
