// Command engineconnector is the Go connector program
// engine_connector_test.go runs under the real wallaroo-engine.
//
//	engineconnector source   serves one bounded stream, "s<instance>",
//	                         of $COUNT messages "s<instance>-<id>"
//	engineconnector sink F   appends every output to the file F, a line each
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

// counter serves the messages 1..count of one stream.
type counter struct {
	stream      string
	next, count uint64
}

func (c *counter) Streams(ctx context.Context) ([]wallaroo.StreamSpec, error) {
	return []wallaroo.StreamSpec{{Name: c.stream}}, nil
}

func (c *counter) Open(ctx context.Context, stream string, resumeAfter uint64) error {
	c.next = resumeAfter + 1
	return nil
}

func (c *counter) Poll(ctx context.Context, max int) ([]wallaroo.SourceItem, error) {
	var items []wallaroo.SourceItem
	for len(items) < max && c.next <= c.count {
		items = append(items, wallaroo.SourceItem{Stream: c.stream, ID: c.next,
			Payload: fmt.Appendf(nil, "%s-%d", c.stream, c.next)})
		c.next++
	}
	if c.next > c.count {
		items = append(items, wallaroo.EndOfStream(c.stream))
	}
	return items, nil
}

func (c *counter) Acked(ctx context.Context, stream string, upTo uint64) error { return nil }

func (c *counter) Close(ctx context.Context) error { return nil }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(os.Args) == 2 && os.Args[1] == "source":
		count, _ := strconv.ParseUint(os.Getenv("COUNT"), 10, 64)
		err = wallaroo.RunSource(ctx, &counter{stream: "s" + os.Getenv("WALLAROO_INSTANCE"), count: count})
	case len(os.Args) == 3 && os.Args[1] == "sink":
		f, ferr := os.OpenFile(os.Args[2], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if ferr != nil {
			fmt.Fprintln(os.Stderr, ferr)
			os.Exit(1)
		}
		defer f.Close()
		err = wallaroo.RunSink(ctx, wallaroo.SinkFunc(func(ctx context.Context, epoch uint64, outputs []wallaroo.Output) error {
			for _, o := range outputs {
				if _, err := fmt.Fprintf(f, "%s\n", o.Payload); err != nil {
					return err
				}
			}
			return f.Sync()
		}))
	default:
		fmt.Fprintln(os.Stderr, "usage: engineconnector source | engineconnector sink FILE")
		os.Exit(2)
	}
	os.Exit(wallaroo.ConnectorExitCode(err))
}
