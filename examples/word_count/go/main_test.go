package main

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

var ctx = context.Background()

func harness(t *testing.T) *wallaroo.Harness {
	t.Helper()
	h, err := wallaroo.NewHarness(steps()...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func lines(text ...string) []wallaroo.Message {
	var ms []wallaroo.Message
	for _, l := range text {
		ms = append(ms, wallaroo.Message{Payload: []byte(l)})
	}
	return ms
}

func payloads(ms []wallaroo.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Payload))
	}
	return out
}

// word is word_count.py's regular expression, applied to the ASCII-lowered
// line, as Python's bytes.lower() does.
var word = regexp.MustCompile(`[a-z']+`)

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func TestSplitFindsTheWordsThePythonRunnerFinds(t *testing.T) {
	cases := []string{
		"Don't stop, well-known HELLO-World!",
		"Numbers 12 and 3000 end words: a1b",
		"  leading and trailing  ",
		"",
		"caf\xc3\xa9 na\xefve \xff\xfe bytes", // non-ASCII ends a word
		"it's o'clock'' '",
		"ÀÉÎ upper non-ASCII stays",
	}
	h := harness(t)
	for _, c := range cases {
		out, err := h.Run(ctx, "split", lines(c)...)
		if err != nil {
			t.Fatal(err)
		}
		want := word.FindAllString(asciiLower(c), -1)
		if got := payloads(out); !slices.Equal(got, want) {
			t.Errorf("split(%q) = %q, want %q", c, got, want)
		}
	}
}

func TestTheStepsCountEachWordInOrder(t *testing.T) {
	h := harness(t)
	h.BatchSize = 3
	out, err := h.Pipeline(ctx, []string{"split", "key-word", "count-word"},
		lines("The cat", "the HAT, the end", "cat's cat")...)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"the 1", "cat 1", "the 2", "hat 1", "the 3", "end 1", "cat's 1", "cat 2"}
	if got := payloads(out); !slices.Equal(got, want) {
		t.Fatalf("outputs %q, want %q", got, want)
	}
	for _, m := range out {
		if w, _, _ := strings.Cut(string(m.Payload), " "); w != string(m.Key) {
			t.Fatalf("output %q has key %q", m.Payload, m.Key)
		}
	}
	n, ok, err := wallaroo.StateOf[uint64](h, "count-word", []byte("the"))
	if !ok || err != nil || n != 3 {
		t.Fatalf("state of the: %d %v %v", n, ok, err)
	}
}

func TestTheCountCodecRoundTrips(t *testing.T) {
	for _, n := range []uint64{0, 1, 127, 128, 1 << 40} {
		b, _ := countCodec.Append(nil, n)
		if got, err := countCodec.Decode(b); err != nil || got != n {
			t.Errorf("%d: %d %v", n, got, err)
		}
	}
	if _, err := countCodec.Decode([]byte{0x80}); err == nil {
		t.Error("a truncated varint decodes")
	}
	if _, err := countCodec.Decode([]byte{1, 2}); err == nil {
		t.Error("trailing bytes decode")
	}
}
