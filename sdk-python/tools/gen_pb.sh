#!/bin/sh
# Regenerate wallaroo/_pb/wallaroo_pb2.py from protocol/wallaroo.proto.
#
# The generated module is committed so that installing the SDK needs no
# protoc; tests/test_pb_generated.py fails when the committed file differs
# from what this script produces, so run it after every change to the schema.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sdk=$(dirname "$here")
root=$(dirname "$sdk")
protoc -I "$root/protocol" --python_out="$sdk/wallaroo/_pb" "$root/protocol/wallaroo.proto"
