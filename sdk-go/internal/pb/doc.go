// Package pb holds the code protoc-gen-go generates from
// protocol/wallaroo.proto (package wallaroo.v1), the wire contract between
// wallaroo-engine and runner programs.
//
// Regenerate it with sdk-go/tools/gen_pb.sh after every change to the
// schema; TestGeneratedCodeIsCurrent fails while it is stale.
package pb

//go:generate ../../tools/gen_pb.sh
