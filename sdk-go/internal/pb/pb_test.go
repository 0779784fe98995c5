package pb_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// The committed wallaroo.pb.go must be what protoc makes of the schema now.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc is not installed, so the committed wallaroo.pb.go cannot be " +
			"compared with a fresh one (install protobuf-compiler to run this check)")
	}
	out, err := exec.Command(filepath.Join("..", "..", "tools", "gen_pb.sh"), "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestTheGeneratedCodeHasEveryFrameBody(t *testing.T) {
	od := (&pb.Frame{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	var bodies []string
	for i := range od.Fields().Len() {
		bodies = append(bodies, string(od.Fields().Get(i).Name()))
	}
	want := []string{"hello", "welcome", "refuse", "assign", "ready", "batch",
		"reply", "credit", "heartbeat", "error", "goodbye",
		"open_stream", "stream_opened", "ack", "end_stream", "stream_ended",
		"reconnect", "prepare", "prepared", "commit", "abort", "resolved", "in_doubt"}
	if !slices.Equal(bodies, want) {
		t.Fatalf("bodies %v, want %v", bodies, want)
	}
}

func TestTheGoPackageMatchesTheModulePath(t *testing.T) {
	proto, err := os.ReadFile(filepath.Join("..", "..", "..", "protocol", "wallaroo.proto"))
	if err != nil {
		t.Fatal(err)
	}
	const want = `option go_package = "github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb";`
	if !slices.Contains(strings.Split(string(proto), "\n"), want) {
		t.Fatalf("protocol/wallaroo.proto does not say %s", want)
	}
}
