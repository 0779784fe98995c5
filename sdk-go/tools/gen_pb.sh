#!/bin/sh
# Regenerate internal/pb/wallaroo.pb.go from protocol/wallaroo.proto, or,
# with --check, fail if the committed file differs from what it gives now.
#
# protoc-gen-go is built from the google.golang.org/protobuf version that
# go.mod requires, so the output does not depend on what is installed.
# The committed file records protoc's version too (3.21.12, Debian's
# protobuf-compiler); another protoc may change that one comment line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sdk=$(dirname "$here")
root=$(dirname "$sdk")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$sdk" && go build -o "$tmp/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go)
PATH="$tmp:$PATH" protoc -I "$root/protocol" --go_out="$tmp" --go_opt=paths=source_relative \
    "$root/protocol/wallaroo.proto"
if [ "${1:-}" = "--check" ]; then
    if ! cmp -s "$tmp/wallaroo.pb.go" "$sdk/internal/pb/wallaroo.pb.go"; then
        echo "sdk-go/internal/pb/wallaroo.pb.go is stale: run sdk-go/tools/gen_pb.sh" >&2
        diff "$sdk/internal/pb/wallaroo.pb.go" "$tmp/wallaroo.pb.go" | head -20 >&2 || true
        exit 1
    fi
    echo "sdk-go/internal/pb/wallaroo.pb.go is current"
else
    cp "$tmp/wallaroo.pb.go" "$sdk/internal/pb/wallaroo.pb.go"
fi
