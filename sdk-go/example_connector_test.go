package wallaroo_test

import (
	"context"
	"fmt"
	"io"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

// lines is a bounded source: one stream of the lines it holds, numbered
// from 1 (the message ids), then the end of the stream.
type lines struct {
	stream string
	lines  []string
	next   int // the index of the next line to send
}

func (l *lines) Streams(ctx context.Context) ([]wallaroo.StreamSpec, error) {
	return []wallaroo.StreamSpec{{Name: l.stream}}, nil
}

// Open starts after the last line the engine has.
func (l *lines) Open(ctx context.Context, stream string, resumeAfter uint64) error {
	l.next = int(resumeAfter)
	return nil
}

// Poll gives at most max lines, and the end of the stream after the last.
func (l *lines) Poll(ctx context.Context, max int) ([]wallaroo.SourceItem, error) {
	var items []wallaroo.SourceItem
	for ; l.next < len(l.lines) && len(items) < max; l.next++ {
		items = append(items, wallaroo.SourceItem{Stream: l.stream, ID: uint64(l.next + 1), Payload: []byte(l.lines[l.next])})
	}
	if l.next == len(l.lines) {
		items = append(items, wallaroo.EndOfStream(l.stream))
	}
	return items, nil
}

// Acked is where a source acknowledges upstream (a broker, an offset).
func (l *lines) Acked(ctx context.Context, stream string, upTo uint64) error {
	fmt.Printf("source: %s acknowledged up to %d\n", stream, upTo)
	return nil
}

func (l *lines) Close(ctx context.Context) error {
	fmt.Println("source: closed")
	return nil
}

// A source connector serves a bounded stream: RunSource opens it, sends
// what Poll gives within the engine's credits, ends it, and returns nil
// once the engine is done with every message. Here the connector dials a
// stand-in for the engine, as a connector the operator starts does
// (WithAddress); one the engine spawns needs no option.
func ExampleRunSource() {
	engine := startStandIn(playSource)
	defer engine.Close()

	src := &lines{stream: "greetings", lines: []string{"hello", "world"}}
	err := wallaroo.RunSource(context.Background(), src,
		wallaroo.WithAddress(engine.Addr, engine.Token),
		wallaroo.WithLogOutput(io.Discard))
	fmt.Println("RunSource:", err, "exit status", wallaroo.ConnectorExitCode(err))
	// Output:
	// engine: stream "greetings" opened
	// engine: event "hello" (message 1)
	// engine: event "world" (message 2)
	// engine: end of stream 1
	// source: greetings acknowledged up to 2
	// source: closed
	// engine: goodbye (every stream ended)
	// RunSource: <nil> exit status 0
}

// A sink connector gets every batch of outputs in order; RunSink answers
// each once Write returns. SinkFunc makes a Sink of a function.
func ExampleRunSink() {
	engine := startStandIn(playSink)
	defer engine.Close()

	sink := wallaroo.SinkFunc(func(ctx context.Context, epoch uint64, outputs []wallaroo.Output) error {
		for _, o := range outputs {
			fmt.Printf("sink: %s (key %q)\n", o.Payload, o.Key)
		}
		return nil // delivered: the engine may forget them
	})
	err := wallaroo.RunSink(context.Background(), sink,
		wallaroo.WithAddress(engine.Addr, engine.Token),
		wallaroo.WithLogOutput(io.Discard))
	fmt.Println("RunSink:", err)
	// Output:
	// sink: buy 10 (key "GE")
	// sink: sell 5 (key "IBM")
	// engine: batch 1 answered
	// sink: done (key "")
	// engine: batch 2 answered
	// RunSink: <nil>
}
