package wallaroo_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

// A word count: split lines into words, key each word by itself, and count
// each word's occurrences in a state step. main would hand the same steps
// to wallaroo.Run; here a Harness runs them in-process, as the engine
// would.
func Example() {
	steps := []wallaroo.Step{
		wallaroo.Stateless("split", wallaroo.ComputationFunc(
			func(ctx context.Context, msg wallaroo.Message, out wallaroo.Emitter) error {
				for _, word := range bytes.Fields(msg.Payload) {
					out.Emit(word)
				}
				return nil
			})),
		wallaroo.KeyBy("key-word", wallaroo.KeyFunc(
			func(ctx context.Context, msg wallaroo.Message) ([]byte, error) {
				return msg.Payload, nil
			})),
		wallaroo.Stateful("count-word", wallaroo.StateComputationFunc[int](
			func(ctx context.Context, msg wallaroo.Message, count *int, out wallaroo.Emitter) error {
				*count++
				out.Emit(fmt.Appendf(nil, "%s %d", msg.Payload, *count))
				return nil
			}), wallaroo.JSONCodec[int]()),
	}

	h, _ := wallaroo.NewHarness(steps...)
	out, _ := h.Pipeline(context.Background(), []string{"split", "key-word", "count-word"},
		wallaroo.Message{Payload: []byte("the cat and the hat")})
	for _, m := range out {
		fmt.Printf("%s (key %s)\n", m.Payload, m.Key)
	}
	// Output:
	// the 1 (key the)
	// cat 1 (key cat)
	// and 1 (key and)
	// the 2 (key the)
	// hat 1 (key hat)
}

// A runner program's main: Run serves the steps to the engine that started
// the process, and ExitCode turns its result into the exit status. Started
// by hand, without the engine's environment, it exits with status 2.
func ExampleRun() {
	steps := []wallaroo.Step{
		wallaroo.Stateless("shout", wallaroo.ComputationFunc(
			func(ctx context.Context, msg wallaroo.Message, out wallaroo.Emitter) error {
				out.Emit(bytes.ToUpper(msg.Payload))
				return nil
			})),
	}
	err := wallaroo.Run(context.Background(), steps,
		wallaroo.WithEnv(map[string]string{}), // as if started by hand
		wallaroo.WithLogOutput(os.Stdout))
	fmt.Println("exit status", wallaroo.ExitCode(err))
	// Output:
	// wallaroo-sdk[?/?]: wallaroo: bad environment: missing environment variables WALLAROO_ENGINE_ADDR, WALLAROO_TOKEN, WALLAROO_PROGRAM, WALLAROO_INSTANCE: this program is meant to be started by wallaroo-engine
	// exit status 2
}

// A stateless step emits zero, one or many outputs per event: here, none
// for a blank line (a filter), one per word otherwise.
func ExampleComputationFunc() {
	split := wallaroo.Stateless("split", wallaroo.ComputationFunc(
		func(ctx context.Context, msg wallaroo.Message, out wallaroo.Emitter) error {
			for _, word := range strings.Fields(string(msg.Payload)) {
				out.Emit([]byte(word))
			}
			return nil
		}))
	h, _ := wallaroo.NewHarness(split)
	out, _ := h.Run(context.Background(), "split",
		wallaroo.Message{Payload: []byte("to be"), MessageID: 1},
		wallaroo.Message{Payload: []byte("   "), MessageID: 2},
		wallaroo.Message{Payload: []byte("or not"), MessageID: 3})
	for _, m := range out {
		fmt.Printf("%s (from message %d)\n", m.Payload, m.MessageID)
	}
	// Output:
	// to (from message 1)
	// be (from message 1)
	// or (from message 3)
	// not (from message 3)
}

// An output keeps the input's key and event time unless EmitOutput says
// otherwise.
func ExampleEmitter() {
	route := wallaroo.Stateless("route", wallaroo.ComputationFunc(
		func(ctx context.Context, msg wallaroo.Message, out wallaroo.Emitter) error {
			out.Emit(msg.Payload) // same key, same time
			out.EmitOutput(wallaroo.Output{Payload: msg.Payload, Key: []byte("audit"), HasKey: true})
			out.EmitOutput(wallaroo.Output{Payload: msg.Payload, HasKey: true}) // unkeyed
			out.EmitOutput(wallaroo.Output{Payload: msg.Payload, EventTime: 1700000000000000})
			return nil
		}))
	h, _ := wallaroo.NewHarness(route)
	out, _ := h.Run(context.Background(), "route",
		wallaroo.Message{Key: []byte("GE"), Payload: []byte("order"), EventTime: 42})
	for _, m := range out {
		fmt.Printf("key %q time %d\n", m.Key, m.EventTime)
	}
	// Output:
	// key "GE" time 42
	// key "audit" time 42
	// key "" time 42
	// key "GE" time 1700000000000000
}

// A key-by step gives each event a new key; its payload goes on unchanged.
func ExampleKeyFunc() {
	byName := wallaroo.KeyBy("by-name", wallaroo.KeyFunc(
		func(ctx context.Context, msg wallaroo.Message) ([]byte, error) {
			name, _, _ := bytes.Cut(msg.Payload, []byte(" "))
			return name, nil
		}))
	h, _ := wallaroo.NewHarness(byName)
	out, _ := h.Run(context.Background(), "by-name", wallaroo.Message{Payload: []byte("alice 5")})
	fmt.Printf("key %q payload %q\n", out[0].Key, out[0].Payload)
	// Output:
	// key "alice" payload "alice 5"
}

// A state step gets the state of the event's key as a *S, changes it in
// place, and the runner sends it back to the engine encoded by the codec.
func ExampleStateful() {
	type total struct{ Sum, Count int }
	add := wallaroo.Stateful("add", wallaroo.StateComputationFunc[total](
		func(ctx context.Context, msg wallaroo.Message, t *total, out wallaroo.Emitter) error {
			n, err := strconv.Atoi(string(msg.Payload))
			if err != nil {
				return err
			}
			t.Sum += n
			t.Count++
			out.Emit(fmt.Appendf(nil, "%s: %d after %d", msg.Key, t.Sum, t.Count))
			return nil
		}), wallaroo.JSONCodec[total]())

	h, _ := wallaroo.NewHarness(add)
	out, _ := h.Run(context.Background(), "add",
		wallaroo.Message{Key: []byte("alice"), Payload: []byte("5")},
		wallaroo.Message{Key: []byte("bob"), Payload: []byte("1")},
		wallaroo.Message{Key: []byte("alice"), Payload: []byte("10")})
	for _, m := range out {
		fmt.Println(string(m.Payload))
	}
	stored, _ := h.State("add", []byte("alice"))
	fmt.Printf("the engine stores %s\n", stored)
	// Output:
	// alice: 5 after 1
	// bob: 1 after 1
	// alice: 15 after 2
	// the engine stores {"Sum":15,"Count":2}
}

// WithInitialState gives a key seen for the first time a state other than
// the zero value. Here a symbol rejects orders until a quote says
// otherwise.
func ExampleWithInitialState() {
	type symbol struct{ Reject bool }
	check := wallaroo.Stateful("check", wallaroo.StateComputationFunc[symbol](
		func(ctx context.Context, msg wallaroo.Message, s *symbol, out wallaroo.Emitter) error {
			switch string(msg.Payload) {
			case "narrow quote":
				s.Reject = false
			case "order":
				if s.Reject {
					out.Emit([]byte("reject " + string(msg.Key)))
				}
			}
			return nil
		}), wallaroo.JSONCodec[symbol](),
		wallaroo.WithInitialState(func() symbol { return symbol{Reject: true} }))
	h, _ := wallaroo.NewHarness(check)
	out, _ := h.Run(context.Background(), "check",
		wallaroo.Message{Key: []byte("GE"), Payload: []byte("order")},
		wallaroo.Message{Key: []byte("IBM"), Payload: []byte("narrow quote")},
		wallaroo.Message{Key: []byte("IBM"), Payload: []byte("order")})
	for _, m := range out {
		fmt.Println(string(m.Payload))
	}
	// Output:
	// reject GE
}

// User code that returns an error or panics fails that event only. The
// engine logs and counts it; the event's outputs are dropped, and a state
// step's key keeps the state it had before the event.
func ExampleEventErrors() {
	type total struct{ Sum int }
	add := wallaroo.Stateful("add", wallaroo.StateComputationFunc[total](
		func(ctx context.Context, msg wallaroo.Message, t *total, out wallaroo.Emitter) error {
			n, err := strconv.Atoi(string(msg.Payload))
			if err != nil {
				return err
			}
			t.Sum += n // changed before the check below...
			if n < 0 {
				panic(fmt.Sprintf("negative value %d", n)) // ...and rolled back
			}
			out.Emit(strconv.AppendInt(nil, int64(t.Sum), 10))
			return nil
		}), wallaroo.JSONCodec[total]())
	h, _ := wallaroo.NewHarness(add)
	out, err := h.Run(context.Background(), "add",
		wallaroo.Message{Key: []byte("bob"), Payload: []byte("1")},
		wallaroo.Message{Key: []byte("bob"), Payload: []byte("-3")},
		wallaroo.Message{Key: []byte("bob"), Payload: []byte("two")},
		wallaroo.Message{Key: []byte("bob"), Payload: []byte("2")})
	for _, m := range out {
		fmt.Println("output", string(m.Payload))
	}
	var failed *wallaroo.EventErrors
	if errors.As(err, &failed) {
		for _, e := range failed.Errors {
			fmt.Println(e)
		}
	}
	// Output:
	// output 1
	// output 3
	// step 'add' key "bob": panic: negative value -3
	// step 'add' key "bob": error: strconv.Atoi: parsing "two": invalid syntax
}

// Map decodes payloads and encodes results with codecs, so the function
// works on typed values.
func ExampleMap() {
	type reading struct {
		Sensor  string
		Celsius float64
	}
	toF := wallaroo.Stateless("to-fahrenheit", wallaroo.Map(wallaroo.JSONCodec[reading](), wallaroo.StringCodec(),
		func(ctx context.Context, r reading) (string, error) {
			return fmt.Sprintf("%s %.1fF", r.Sensor, r.Celsius*1.8+32), nil
		}))
	h, _ := wallaroo.NewHarness(toF)
	out, _ := h.Run(context.Background(), "to-fahrenheit",
		wallaroo.Message{Payload: []byte(`{"Sensor":"kitchen","Celsius":21.5}`)})
	fmt.Println(string(out[0].Payload))
	// Output:
	// kitchen 70.7F
}

// FlatMap is Map for zero, one or many outputs per event.
func ExampleFlatMap() {
	words := wallaroo.Stateless("words", wallaroo.FlatMap(wallaroo.StringCodec(), wallaroo.StringCodec(),
		func(ctx context.Context, line string, emit func(string)) error {
			for _, w := range strings.Fields(line) {
				emit(strings.ToLower(w))
			}
			return nil
		}))
	h, _ := wallaroo.NewHarness(words)
	out, _ := h.Run(context.Background(), "words", wallaroo.Message{Payload: []byte("Hello World")})
	for _, m := range out {
		fmt.Println(string(m.Payload))
	}
	// Output:
	// hello
	// world
}

// CodecFuncs makes a Codec of two functions: here a fixed 8-byte encoding,
// smaller and faster than JSON.
func ExampleCodecFuncs() {
	u64 := wallaroo.CodecFuncs[uint64]{
		AppendFunc: func(dst []byte, v uint64) ([]byte, error) { return binary.BigEndian.AppendUint64(dst, v), nil },
		DecodeFunc: func(b []byte) (uint64, error) {
			if len(b) != 8 {
				return 0, fmt.Errorf("%d bytes, want 8", len(b))
			}
			return binary.BigEndian.Uint64(b), nil
		},
	}
	count := wallaroo.Stateful("count", wallaroo.StateComputationFunc[uint64](
		func(ctx context.Context, msg wallaroo.Message, n *uint64, out wallaroo.Emitter) error {
			*n++
			return nil
		}), u64)
	h, _ := wallaroo.NewHarness(count)
	h.Run(context.Background(), "count", wallaroo.Message{Key: []byte("k")}, wallaroo.Message{Key: []byte("k")})
	stored, _ := h.State("count", []byte("k"))
	n, _, _ := wallaroo.StateOf[uint64](h, "count", []byte("k"))
	fmt.Printf("%x = %d\n", stored, n)
	// Output:
	// 0000000000000002 = 2
}

// ExitCode maps Run's result to the runner's exit status.
func ExampleExitCode() {
	for _, err := range []error{nil, wallaroo.ErrEngineGone, wallaroo.ErrUnknownStep, wallaroo.ErrBadEnvironment} {
		fmt.Println(wallaroo.ExitCode(err), err)
	}
	// Output:
	// 0 <nil>
	// 0 wallaroo: engine gone
	// 1 wallaroo: unknown step
	// 2 wallaroo: bad environment
}
