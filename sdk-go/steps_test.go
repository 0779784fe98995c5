package wallaroo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Step behaviour, through the Harness: the same code the runner runs, with
// the replies encoded and decoded as the engine would see them.

func msgs(key string, payloads ...string) []Message {
	var out []Message
	for i, p := range payloads {
		out = append(out, Message{Key: []byte(key), Payload: []byte(p), EventTime: 1000, StreamID: 1, MessageID: uint64(i + 1)})
	}
	return out
}

func payloads(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Payload))
	}
	return out
}

func harness(t *testing.T, steps ...Step) *Harness {
	t.Helper()
	h, err := NewHarness(steps...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

var ctx = context.Background()

func split() Step {
	return Stateless("split", ComputationFunc(func(_ context.Context, m Message, out Emitter) error {
		for _, w := range bytes.Fields(m.Payload) {
			out.Emit(w)
		}
		return nil
	}))
}

func TestAComputationEmitsZeroOneOrManyOutputsPerEvent(t *testing.T) {
	h := harness(t, split())
	out, err := h.Run(ctx, "split", msgs("k", "a b c", "", "d")...)
	if err != nil {
		t.Fatal(err)
	}
	if got := payloads(out); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("outputs %q", got)
	}
	for _, m := range out {
		if string(m.Key) != "k" || m.EventTime != 1000 || m.StreamID != 1 {
			t.Fatalf("output %+v does not keep the input's key, time and stream", m)
		}
	}
	if out[3].MessageID != 3 {
		t.Fatalf("output %+v does not keep its input's message id", out[3])
	}
}

func TestAnOutputMayTakeAKeyBecomeUnkeyedOrTakeAnEventTime(t *testing.T) {
	h := harness(t, Stateless("route", ComputationFunc(func(_ context.Context, m Message, out Emitter) error {
		out.EmitOutput(Output{Payload: m.Payload, Key: []byte("other"), HasKey: true})
		out.EmitOutput(Output{Payload: m.Payload, HasKey: true}) // unkeyed
		out.EmitOutput(Output{Payload: m.Payload, EventTime: 42})
		out.EmitOutput(Output{}) // an empty payload is a payload
		return nil
	})))
	out, err := h.Run(ctx, "route", msgs("k", "p")...)
	if err != nil {
		t.Fatal(err)
	}
	want := []Message{
		{Key: []byte("other"), Payload: []byte("p"), EventTime: 1000},
		{Key: nil, Payload: []byte("p"), EventTime: 1000},
		{Key: []byte("k"), Payload: []byte("p"), EventTime: 42},
		{Key: []byte("k"), Payload: nil, EventTime: 1000},
	}
	if len(out) != len(want) {
		t.Fatalf("%d outputs, want %d", len(out), len(want))
	}
	for i, w := range want {
		g := out[i]
		if !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Payload, w.Payload) || g.EventTime != w.EventTime {
			t.Errorf("output %d: key %q payload %q time %d, want %q %q %d", i, g.Key, g.Payload, g.EventTime, w.Key, w.Payload, w.EventTime)
		}
	}
}

func TestTheCallerMayReuseItsBufferAfterEmit(t *testing.T) {
	h := harness(t, Stateless("reuse", ComputationFunc(func(_ context.Context, m Message, out Emitter) error {
		buf := []byte("one")
		out.Emit(buf)
		copy(buf, "two")
		out.Emit(buf)
		return nil
	})))
	out, _ := h.Run(ctx, "reuse", msgs("", "x")...)
	if got := payloads(out); !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("outputs %q", got)
	}
}

func TestAnErrorFailsOnlyItsEventAndDropsWhatItEmitted(t *testing.T) {
	h := harness(t, Stateless("parse", ComputationFunc(func(_ context.Context, m Message, out Emitter) error {
		out.Emit([]byte("before"))
		if _, err := strconv.Atoi(string(m.Payload)); err != nil {
			return fmt.Errorf("not a number: %q", m.Payload)
		}
		return nil
	})))
	out, err := h.Run(ctx, "parse", msgs("k1", "1", "x", "2")...)
	var ee *EventErrors
	if !errors.As(err, &ee) {
		t.Fatalf("err %v, want *EventErrors", err)
	}
	if want := []string{`step 'parse' key "k1": error: not a number: "x"`}; !slices.Equal(ee.Errors, want) {
		t.Fatalf("errors %q, want %q", ee.Errors, want)
	}
	if len(out) != 2 {
		t.Fatalf("%d outputs, want the 2 of the events that did not fail", len(out))
	}
}

func TestAPanicInUserCodeIsAnEventErrorNamingTheStepAndKey(t *testing.T) {
	h := harness(t, Stateless("index", ComputationFunc(func(_ context.Context, m Message, out Emitter) error {
		out.Emit([]byte{m.Payload[0], m.Payload[1]})
		return nil
	})))
	out, err := h.Run(ctx, "index", msgs("bob", "ok", "x", "fine")...)
	var ee *EventErrors
	if !errors.As(err, &ee) || len(ee.Errors) != 1 {
		t.Fatalf("err %v", err)
	}
	want := `step 'index' key "bob": panic: runtime error: index out of range [1] with length 1`
	if ee.Errors[0] != want {
		t.Fatalf("error %q, want %q", ee.Errors[0], want)
	}
	if got := payloads(out); !slices.Equal(got, []string{"ok", "fi"}) {
		t.Fatalf("outputs %q", got)
	}
}

func TestALongErrorMessageIsCutAndKeptValidUTF8(t *testing.T) {
	long := strings.Repeat("é", 1500) // 3000 bytes
	h := harness(t, Stateless("long", ComputationFunc(func(context.Context, Message, Emitter) error {
		return errors.New("x" + long)
	})))
	_, err := h.Run(ctx, "long", msgs("\xff", "p")...)
	var ee *EventErrors
	if !errors.As(err, &ee) {
		t.Fatal(err)
	}
	got := ee.Errors[0]
	if !strings.HasPrefix(got, `step 'long' key "\xff": error: xé`) || !strings.HasSuffix(got, "\uFFFD...") {
		t.Fatalf("error %q", got)
	}
}

func TestKeyByGivesEachEventANewKeyAndKeepsItsPayload(t *testing.T) {
	h := harness(t, KeyBy("first-word", KeyFunc(func(_ context.Context, m Message) ([]byte, error) {
		w, _, _ := bytes.Cut(m.Payload, []byte(" "))
		if len(w) == 0 {
			return nil, errors.New("no word")
		}
		return w, nil
	})))
	out, err := h.Run(ctx, "first-word", msgs("old", "alice 5", " ", "bob 1")...)
	var ee *EventErrors
	if !errors.As(err, &ee) || ee.Errors[0] != `step 'first-word' key "old": error: no word` {
		t.Fatalf("err %v", err)
	}
	if len(out) != 2 || string(out[0].Key) != "alice" || string(out[0].Payload) != "alice 5" ||
		string(out[1].Key) != "bob" || out[1].EventTime != 1000 {
		t.Fatalf("outputs %+v", out)
	}
}

// counter is a state step emitting "KEY N" with the key's running count; a
// payload "fail" makes it fail after changing the state, "panic" panics.
func counter() Step {
	return Stateful("count", StateComputationFunc[int](func(_ context.Context, m Message, n *int, out Emitter) error {
		*n++
		switch string(m.Payload) {
		case "fail":
			return errors.New("failing on purpose")
		case "panic":
			panic("panicking on purpose")
		}
		out.Emit(fmt.Appendf(nil, "%s %d", m.Key, *n))
		return nil
	}), JSONCodec[int]())
}

func TestAStateStepKeepsStatePerKeyAcrossBatches(t *testing.T) {
	h := harness(t, counter())
	h.BatchSize = 2
	in := append(msgs("a", "x", "x", "x"), msgs("b", "x")...)
	in = append(in, msgs("a", "x")...)
	out, err := h.Run(ctx, "count", in...)
	if err != nil {
		t.Fatal(err)
	}
	if got := payloads(out); !slices.Equal(got, []string{"a 1", "a 2", "a 3", "b 1", "a 4"}) {
		t.Fatalf("outputs %q", got)
	}
	n, ok, err := StateOf[int](h, "count", []byte("a"))
	if err != nil || !ok || n != 4 {
		t.Fatalf("state of a: %d %v %v", n, ok, err)
	}
	if _, ok := h.State("count", []byte("nobody")); ok {
		t.Fatal("a key never seen has a state")
	}
}

func TestAFailedEventLeavesItsKeysStateAsItWasBeforeIt(t *testing.T) {
	for _, bad := range []string{"fail", "panic"} {
		t.Run(bad, func(t *testing.T) {
			h := harness(t, counter())
			// One batch: a, b, a(bad), a, b(bad), a.
			in := []Message{
				{Key: []byte("a"), Payload: []byte("x")}, {Key: []byte("b"), Payload: []byte("x")},
				{Key: []byte("a"), Payload: []byte(bad)}, {Key: []byte("a"), Payload: []byte("x")},
				{Key: []byte("b"), Payload: []byte(bad)}, {Key: []byte("a"), Payload: []byte("x")},
			}
			out, err := h.Run(ctx, "count", in...)
			var ee *EventErrors
			if !errors.As(err, &ee) || len(ee.Errors) != 2 {
				t.Fatalf("err %v", err)
			}
			if !strings.HasPrefix(ee.Errors[0], `step 'count' key "a": `+map[string]string{"fail": "error", "panic": "panic"}[bad]) {
				t.Fatalf("error %q", ee.Errors[0])
			}
			if got := payloads(out); !slices.Equal(got, []string{"a 1", "b 1", "a 2", "a 3"}) {
				t.Fatalf("outputs %q", got)
			}
			for key, want := range map[string]int{"a": 3, "b": 1} {
				if n, _, _ := StateOf[int](h, "count", []byte(key)); n != want {
					t.Errorf("state of %s: %d, want %d", key, n, want)
				}
			}
		})
	}
}

func TestANewKeyWhoseOnlyEventFailsGetsNoState(t *testing.T) {
	h := harness(t, counter())
	h.Run(ctx, "count", msgs("new", "fail")...)
	if _, ok := h.State("count", []byte("new")); ok {
		t.Fatal("the key has a state")
	}
	out, _ := h.Run(ctx, "count", msgs("new", "fail", "x")...)
	if got := payloads(out); !slices.Equal(got, []string{"new 1"}) {
		t.Fatalf("outputs %q", got)
	}
}

func TestOnlyStatesThatChangedAreSentBack(t *testing.T) {
	type tally struct{ N int }
	var writes int
	h := harness(t, Stateful("max", StateComputationFunc[tally](func(_ context.Context, m Message, s *tally, _ Emitter) error {
		if n, _ := strconv.Atoi(string(m.Payload)); n > s.N {
			s.N = n
		}
		return nil
	}), CodecFuncs[tally]{
		AppendFunc: func(dst []byte, v tally) ([]byte, error) {
			writes++
			return strconv.AppendInt(dst, int64(v.N), 10), nil
		},
		DecodeFunc: func(b []byte) (tally, error) { n, err := strconv.Atoi(string(b)); return tally{n}, err },
	}))
	h.Run(ctx, "max", msgs("k", "5")...)
	before, _ := h.State("max", []byte("k"))
	h.Run(ctx, "max", msgs("k", "3")...) // unchanged: 5
	after, _ := h.State("max", []byte("k"))
	if string(before) != "5" || string(after) != "5" || writes != 2 {
		t.Fatalf("before %q after %q, %d encodings", before, after, writes)
	}
}

func TestInitialStateGivesANewKeysState(t *testing.T) {
	type symbol struct{ Reject bool }
	h := harness(t, Stateful("check", StateComputationFunc[symbol](func(_ context.Context, m Message, s *symbol, out Emitter) error {
		if s.Reject {
			out.Emit(m.Payload)
		}
		return nil
	}), JSONCodec[symbol](), WithInitialState(func() symbol { return symbol{Reject: true} })))
	out, err := h.Run(ctx, "check", msgs("GE", "order")...)
	if err != nil || len(out) != 1 {
		t.Fatalf("outputs %v err %v", out, err)
	}
}

func TestAStateThatCannotBeLoadedFailsItsEventsOnly(t *testing.T) {
	h := harness(t, counter())
	h.Run(ctx, "count", msgs("good", "x")...)
	h.store["count"]["bad"] = []byte("not json")
	in := append(msgs("bad", "x", "x"), msgs("good", "x")...)
	out, err := h.Run(ctx, "count", in...)
	var ee *EventErrors
	if !errors.As(err, &ee) || len(ee.Errors) != 2 || !strings.HasSuffix(ee.Errors[0], "(loading the state)") {
		t.Fatalf("err %v", err)
	}
	if got := payloads(out); !slices.Equal(got, []string{"good 2"}) {
		t.Fatalf("outputs %q", got)
	}
	if v, _ := h.State("count", []byte("bad")); string(v) != "not json" {
		t.Fatalf("the bad state was changed to %q", v)
	}
}

func TestAStateThatCannotBeSavedFailsEveryEventOfItsKey(t *testing.T) {
	h := harness(t, Stateful("save", StateComputationFunc[int](func(_ context.Context, m Message, n *int, out Emitter) error {
		*n++
		out.Emit(m.Payload)
		return nil
	}), CodecFuncs[int]{
		AppendFunc: func(dst []byte, v int) ([]byte, error) {
			if v > 1 {
				return dst, errors.New("too big")
			}
			return strconv.AppendInt(dst, int64(v), 10), nil
		},
		DecodeFunc: func(b []byte) (int, error) { return strconv.Atoi(string(b)) },
	}))
	in := append(msgs("two", "x", "y"), msgs("one", "z")...)
	out, err := h.Run(ctx, "save", in...)
	var ee *EventErrors
	if !errors.As(err, &ee) || len(ee.Errors) != 2 || ee.Errors[1] != `step 'save' key "two": error: too big (saving the state)` {
		t.Fatalf("err %v", err)
	}
	if got := payloads(out); !slices.Equal(got, []string{"z"}) {
		t.Fatalf("outputs %q", got)
	}
	if _, ok := h.State("save", []byte("two")); ok {
		t.Fatal("the key that failed to save has a state")
	}
}

func TestANondeterministicStepHasTheEventThatFailsOnReplayFailedToo(t *testing.T) {
	calls := 0
	h := harness(t, Stateful("flaky", StateComputationFunc[int](func(_ context.Context, m Message, n *int, out Emitter) error {
		calls++
		if string(m.Payload) == "bad" || calls == 3 { // the replay of the first event fails
			return errors.New("boom")
		}
		*n++
		out.Emit(m.Payload)
		return nil
	}), JSONCodec[int]()))
	out, err := h.Run(ctx, "flaky", msgs("k", "first", "bad")...)
	var ee *EventErrors
	if !errors.As(err, &ee) || len(ee.Errors) != 2 || !strings.HasSuffix(ee.Errors[0], "(run again to restore the state)") {
		t.Fatalf("err %v", err)
	}
	if len(out) != 0 {
		t.Fatalf("outputs %q: the first event's outputs must go with its state", payloads(out))
	}
	if _, ok := h.State("flaky", []byte("k")); ok {
		t.Fatal("a state was kept for events that all failed")
	}
}

func TestMapAndFlatMapDecodeAndEncodePayloads(t *testing.T) {
	type reading struct{ C float64 }
	h := harness(t,
		Stateless("to-f", Map(JSONCodec[reading](), StringCodec(), func(_ context.Context, r reading) (string, error) {
			return strconv.FormatFloat(r.C*1.8+32, 'f', 1, 64), nil
		})),
		Stateless("words", FlatMap(StringCodec(), StringCodec(), func(_ context.Context, line string, emit func(string)) error {
			for _, w := range strings.Fields(line) {
				emit(strings.ToUpper(w))
			}
			return nil
		})))
	out, err := h.Run(ctx, "to-f", msgs("", `{"C":100}`, `{"C":-40}`)...)
	if err != nil || !slices.Equal(payloads(out), []string{"212.0", "-40.0"}) {
		t.Fatalf("outputs %q err %v", payloads(out), err)
	}
	out, err = h.Run(ctx, "to-f", msgs("", `not json`)...)
	if err == nil || len(out) != 0 {
		t.Fatalf("a payload that does not decode: outputs %q err %v", payloads(out), err)
	}
	out, err = h.Run(ctx, "words", msgs("", "a b", "c")...)
	if err != nil || !slices.Equal(payloads(out), []string{"A", "B", "C"}) {
		t.Fatalf("outputs %q err %v", payloads(out), err)
	}
}

func TestPipelineChainsStepsAsTheEngineDoes(t *testing.T) {
	h := harness(t, split(),
		KeyBy("self", KeyFunc(func(_ context.Context, m Message) ([]byte, error) { return m.Payload, nil })),
		counter())
	out, err := h.Pipeline(ctx, []string{"split", "self", "count"}, msgs("", "x y x", "y")...)
	if err != nil {
		t.Fatal(err)
	}
	if got := payloads(out); !slices.Equal(got, []string{"x 1", "y 1", "x 2", "y 2"}) {
		t.Fatalf("outputs %q", got)
	}
}

func TestInvalidStepsAreRefused(t *testing.T) {
	cases := map[string][]Step{
		"no name":        {Stateless("", ComputationFunc(nil))},
		"nil":            {Stateless("x", nil)},
		"nil codec":      {Stateful[int]("x", StateComputationFunc[int](nil), nil)},
		"twice":          {split(), split()},
		"not from a New": {{name: "x"}},
	}
	for name, steps := range cases {
		if _, err := NewHarness(steps...); !errors.Is(err, ErrInvalidStep) {
			t.Errorf("%s: err %v, want ErrInvalidStep", name, err)
		}
	}
}

func TestExitCodesMatchThePythonSDK(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{fmt.Errorf("%w: gone", ErrEngineGone), 0},
		{fmt.Errorf("%w: no token", ErrBadEnvironment), 2},
		{ErrRefused, 2},
		{ErrBadVersion, 2},
		{ErrUnknownStep, 1},
		{ErrUnreachable, 1},
		{ErrInvalidStep, 1},
		{context.Canceled, 1},
	}
	for _, c := range cases {
		if got := ExitCode(c.err); got != c.want {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestTheKeyHashIsTheEnginesFNV1a(t *testing.T) {
	// protocol/README.md, section 5.
	cases := []struct {
		key       []byte
		hash      uint64
		partition uint64
	}{
		{[]byte(""), 0xcbf29ce484222325, 805},
		{[]byte("a"), 0xaf63dc4c8601ec8c, 140},
		{[]byte("foobar"), 0x85944171f73967e8, 1000},
		{[]byte{1, 0, 0, 0}, 0xad2aca7747985764, 868},
		{[]byte{2, 0, 0, 0}, 0x8d1ace904a398d17, 279},
		{[]byte{0, 0, 0x10, 0}, 0x4d5bd67f9dfc4685, 645},
	}
	for _, c := range cases {
		if h := fnv1a(c.key); h != c.hash || h%1024 != c.partition {
			t.Errorf("fnv1a(%q) = %#x (partition %d), want %#x (%d)", c.key, h, h%1024, c.hash, c.partition)
		}
	}
}

func TestTheKeyIndexNumbersKeysInOrderAndGrows(t *testing.T) {
	var x keyIndex
	for round := range 2 {
		x.reset(4)
		for i := range 1000 {
			key := []byte(strconv.Itoa(i % 600))
			got, added := x.index(key)
			if got != i%600 || added != (i < 600) {
				t.Fatalf("round %d: index(%q) = %d %v", round, key, got, added)
			}
		}
	}
}
