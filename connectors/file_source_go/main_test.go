package main

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

var ctx = context.Background()

// write makes a file in a temporary directory and returns its path.
func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// frames is a file of length-framed records.
func frames(records ...string) []byte {
	var out []byte
	for _, r := range records {
		out = binary.BigEndian.AppendUint32(out, uint32(len(r)))
		out = append(out, r...)
	}
	return out
}

// readAll opens a file as the source does and returns its records, its
// next id at the end, and the warnings.
func readAll(t *testing.T, data []byte, framing string, skip uint64) (records []string, nextID uint64, warnings []string) {
	t.Helper()
	r, err := openRecords(write(t, "in", data), framing, func(m string) { warnings = append(warnings, m) })
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	if err := r.skip(skip); err != nil {
		t.Fatal(err)
	}
	for {
		record, ok, err := r.read()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return records, r.nextID, warnings
		}
		records = append(records, string(record))
		r.nextID++
	}
}

func TestALineIsARecordWithoutItsNewlineAndTheCarriageReturnBeforeIt(t *testing.T) {
	cases := []struct {
		file string
		want []string
	}{
		{"alpha\nbeta\r\n\nlast without newline", []string{"alpha", "beta", "", "last without newline"}},
		{"", nil},
		{"\n", []string{""}},
		{"\r\n\r\n", []string{"", ""}},
		{"one\n", []string{"one"}},
		{"a lone \r stays\n", []string{"a lone \r stays"}},
		{"a last \r without newline stays\r", []string{"a last \r without newline stays\r"}},
		{"only one \r goes\r\r\n", []string{"only one \r goes\r"}},
		{"binary \x00\xff\n", []string{"binary \x00\xff"}},
	}
	for _, c := range cases {
		got, _, warnings := readAll(t, []byte(c.file), "line", 0)
		if !slices.Equal(got, c.want) || warnings != nil {
			t.Errorf("%q: records %q (warnings %q), want %q", c.file, got, warnings, c.want)
		}
	}
}

func TestALineLongerThanTheReadBufferIsOneRecord(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	got, _, _ := readAll(t, []byte(long+"\nshort\n"), "line", 0)
	if len(got) != 2 || got[0] != long || got[1] != "short" {
		t.Fatalf("%d records", len(got))
	}
}

func TestLengthFramingReadsABigEndianLengthThenTheBytes(t *testing.T) {
	got, _, warnings := readAll(t, frames("a1", "", "a\n3", "\r\n"), "length", 0)
	if want := []string{"a1", "", "a\n3", "\r\n"}; !slices.Equal(got, want) || warnings != nil {
		t.Fatalf("records %q (warnings %q), want %q", got, warnings, want)
	}
}

func TestAFileEndingInsideAFrameEndsAfterItsLastWholeFrame(t *testing.T) {
	cases := []struct {
		name string
		file []byte
		want []string
		warn string
	}{
		{"inside a body", append(frames("x"), 0, 0, 0, 10, 'a', 'b', 'c'), []string{"x"}, "the file ends inside a frame (7 bytes ignored)"},
		{"inside a length", append(frames("x", "yz"), 0, 0), []string{"x", "yz"}, "the file ends inside a frame (2 bytes ignored)"},
		{"before any frame", []byte{0, 0, 1}, nil, "the file ends inside a frame (3 bytes ignored)"},
		{"a huge length", []byte{0xff, 0xff, 0xff, 0xff, 'a'}, nil, "the file ends inside a frame (5 bytes ignored)"},
	}
	for _, c := range cases {
		got, _, warnings := readAll(t, c.file, "length", 0)
		if !slices.Equal(got, c.want) || len(warnings) != 1 || !strings.HasSuffix(warnings[0], ": "+c.warn) {
			t.Errorf("%s: records %q, warnings %q; want %q and %q", c.name, got, warnings, c.want, c.warn)
		}
	}
}

func TestSkipStartsAfterTheRecordsTheEngineHas(t *testing.T) {
	file := []byte("1\n2\n3\n4\n5")
	cases := []struct {
		skip   uint64
		want   []string
		nextID uint64 // after the last record
	}{
		{0, []string{"1", "2", "3", "4", "5"}, 6},
		{2, []string{"3", "4", "5"}, 6},
		{5, nil, 6},
		// The engine has more than the file holds (it was cut): nothing
		// to send, and the ids go on from the engine's position.
		{9, nil, 10},
	}
	for _, c := range cases {
		got, nextID, _ := readAll(t, file, "line", c.skip)
		if !slices.Equal(got, c.want) || nextID != c.nextID {
			t.Errorf("skip %d: records %q, next id %d; want %q, %d", c.skip, got, nextID, c.want, c.nextID)
		}
	}
	got, _, _ := readAll(t, frames("a", "b", "c"), "length", 1)
	if !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("length framing, skip 1: %q", got)
	}
}

func TestEveryRecordIsANewSlice(t *testing.T) {
	// The SDK keeps payloads until the engine acknowledges them.
	r, err := openRecords(write(t, "in", []byte("first\nsecond\n")), "line", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	first, _, _ := r.read()
	r.read()
	if string(first) != "first" {
		t.Fatalf("the first record became %q", first)
	}
}

// item is a SourceItem in a comparable form.
type item struct {
	stream  string
	id      uint64
	payload string
	end     bool
}

func items(t *testing.T, got []wallaroo.SourceItem) []item {
	t.Helper()
	var out []item
	for _, it := range got {
		if !it.End && it.EventTime == 0 {
			t.Errorf("message %d of %q has no event time", it.ID, it.Stream)
		}
		out = append(out, item{it.Stream, it.ID, string(it.Payload), it.End})
	}
	return out
}

// openSource makes the source of files (name, contents) in line framing
// and opens every stream after resume[name].
func openSource(t *testing.T, resume map[string]uint64, files ...string) *fileSource {
	t.Helper()
	var fs []file
	for i := 0; i < len(files); i += 2 {
		fs = append(fs, file{name: files[i], path: write(t, "f", []byte(files[i+1]))})
	}
	s := newFileSource(fs, "line")
	specs, err := s.Streams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range specs {
		if spec.ResumeHint != 0 {
			t.Errorf("stream %q has a resume hint", spec.Name)
		}
		if err := s.Open(ctx, spec.Name, resume[spec.Name]); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { s.Close(ctx) })
	return s
}

func TestStreamsAreTheFilesInOrder(t *testing.T) {
	s := newFileSource([]file{{"b", "/b"}, {"a", "/a"}}, "line")
	specs, _ := s.Streams(ctx)
	if want := []wallaroo.StreamSpec{{Name: "b"}, {Name: "a"}}; !slices.Equal(specs, want) {
		t.Fatalf("%+v", specs)
	}
}

func TestPollGivesAtMostMaxMessagesFileAfterFileAndEndsEachStream(t *testing.T) {
	s := openSource(t, nil, "first", "a1\na2\na3\n", "second", "b1\n")
	var got [][]item
	for range 4 {
		batch, err := s.Poll(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, items(t, batch))
	}
	want := [][]item{
		{{"first", 1, "a1", false}, {"first", 2, "a2", false}},
		// An end costs no credit: the next file goes on in the same poll.
		{{"first", 3, "a3", false}, {"first", 0, "", true}, {"second", 1, "b1", false}},
		{{"second", 0, "", true}},
		nil, // every stream has ended
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("polls gave\n%v\nwant\n%v", got, want)
	}
}

func TestOpenSkipsTheRecordsUpToResumeAfter(t *testing.T) {
	s := openSource(t, map[string]uint64{"f": 5}, "f", "1\n2\n3\n4\n5\n6\n7\n")
	batch, err := s.Poll(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []item{{"f", 6, "6", false}, {"f", 7, "7", false}, {"f", 0, "", true}}
	if got := items(t, batch); !slices.Equal(got, want) {
		t.Fatalf("%v", got)
	}
}

func TestAStreamTheEngineHasWhollyOnlyEnds(t *testing.T) {
	s := openSource(t, map[string]uint64{"f": 2}, "f", "1\n2\n")
	batch, _ := s.Poll(ctx, 100)
	if got := items(t, batch); !slices.Equal(got, []item{{"f", 0, "", true}}) {
		t.Fatalf("%v", got)
	}
}

func TestOpenFailsForAFileThatIsGone(t *testing.T) {
	s := newFileSource([]file{{"f", filepath.Join(t.TempDir(), "gone")}}, "line")
	if err := s.Open(ctx, "f", 0); err == nil {
		t.Fatal("no error")
	}
}

func TestTheCommandLineIsFileSourcePys(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"TOKEN_VAR": "secret"}
	getenv := func(k string) string { return env[k] }
	ok := []struct {
		args []string
		want config
	}{
		{[]string{a}, config{framing: "line", files: []file{{a, a}}}},
		{[]string{a, "--framing", "length", b}, config{framing: "length", files: []file{{a, a}, {b, b}}}},
		{[]string{"--name=x", a, "--name", "y", b, "--fram=length"}, config{framing: "length", files: []file{{"x", a}, {"y", b}}}},
		{[]string{"--connect", "tcp://127.0.0.1:7300", "--token-env", "TOKEN_VAR", a},
			config{framing: "line", files: []file{{a, a}}, connect: "tcp://127.0.0.1:7300", tokenEnv: "TOKEN_VAR"}},
		{[]string{"--co", "ipc:///tmp/x", "--t", "TOKEN_VAR", "--", a},
			config{framing: "line", files: []file{{a, a}}, connect: "ipc:///tmp/x", tokenEnv: "TOKEN_VAR"}},
		{[]string{"--name", "-5", a}, config{framing: "line", files: []file{{"-5", a}}}},
	}
	for _, c := range ok {
		got, err := parseArgs(c.args, getenv)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if got.framing != c.want.framing || !slices.Equal(got.files, c.want.files) ||
			got.connect != c.want.connect || got.tokenEnv != c.want.tokenEnv {
			t.Errorf("%q: %+v, want %+v", c.args, *got, c.want)
		}
	}
	bad := []struct {
		args []string
		want string
	}{
		{nil, "the following arguments are required: FILE"},
		{[]string{"--framing", "lines", a}, "argument --framing: invalid choice: 'lines' (choose from 'line', 'length')"},
		{[]string{a, "--framing"}, "argument --framing: expected one argument"},
		{[]string{"--name", "--framing", "line", a}, "argument --name: expected one argument"},
		{[]string{"--name", "x", a, b}, "1 --name for 2 files: give one per file"},
		{[]string{"--name", "x", "--name", "x", a, b}, "two files have the same stream name"},
		{[]string{a, a}, "two files have the same stream name"},
		{[]string{"--name", "", a}, "a stream name cannot be empty"},
		{[]string{"--connect", "tcp://127.0.0.1:7300", a}, "--connect and --token-env go together"},
		{[]string{"--token-env", "TOKEN_VAR", a}, "--connect and --token-env go together"},
		{[]string{"--connect", "tcp://127.0.0.1:7300", "--token-env", "UNSET_VAR", a}, "--token-env UNSET_VAR: that variable is not set"},
		{[]string{dir}, dir + ": not a readable file"},
		{[]string{filepath.Join(dir, "missing")}, filepath.Join(dir, "missing") + ": not a readable file"},
		{[]string{a, "--bogus", "-q"}, "unrecognized arguments: --bogus -q"},
		{[]string{"--token", "TOKEN_VAR", a}, "--connect and --token-env go together"}, // a prefix of --token-env
		{[]string{"--na=x", "--nam=y", a}, "2 --name for 1 files: give one per file"},
	}
	for _, c := range bad {
		_, err := parseArgs(c.args, getenv)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: error %v, want %q", c.args, err, c.want)
		}
	}
	for _, args := range [][]string{{"-h"}, {a, "--help"}, {"--he"}} {
		if _, err := parseArgs(args, getenv); err != errHelp {
			t.Errorf("%q: %v, want help", args, err)
		}
	}
}
