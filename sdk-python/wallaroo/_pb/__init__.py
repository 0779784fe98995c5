"""Generated protocol buffer classes for protocol/wallaroo.proto.

``wallaroo_pb2`` is produced by ``tools/gen_pb.sh`` and committed; do not
edit it by hand. It is internal: the public API never exposes these classes
except through ``wallaroo._core`` and ``wallaroo.testing``.
"""
