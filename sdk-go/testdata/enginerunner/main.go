// Command enginerunner is the Go runner program engine_test.go runs under
// the real wallaroo-engine: a key-by, a state step that totals numbers per
// name (and panics on a negative one), and a step that emits a payload of
// a requested size.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

func main() {
	steps := []wallaroo.Step{
		// "alice 5" is keyed "alice".
		wallaroo.KeyBy("by-name", wallaroo.KeyFunc(func(_ context.Context, m wallaroo.Message) ([]byte, error) {
			name, _, ok := bytes.Cut(m.Payload, []byte(" "))
			if !ok {
				return nil, errors.New("no space")
			}
			return name, nil
		})),
		wallaroo.Stateful("add", wallaroo.StateComputationFunc[int64](func(_ context.Context, m wallaroo.Message, total *int64, out wallaroo.Emitter) error {
			_, text, _ := bytes.Cut(m.Payload, []byte(" "))
			n, err := strconv.ParseInt(string(text), 10, 64)
			if err != nil {
				return err
			}
			if n < 0 {
				panic(fmt.Sprintf("negative value %d", n))
			}
			*total += n
			out.Emit(strconv.AppendInt(nil, *total, 10))
			return nil
		}), wallaroo.JSONCodec[int64]()),
		// "1006" emits 1006 bytes of "x".
		wallaroo.Stateless("pad", wallaroo.ComputationFunc(func(_ context.Context, m wallaroo.Message, out wallaroo.Emitter) error {
			n, err := strconv.Atoi(string(m.Payload))
			if err != nil {
				return err
			}
			out.Emit(bytes.Repeat([]byte("x"), n))
			return nil
		})),
	}
	os.Exit(wallaroo.ExitCode(wallaroo.Run(context.Background(), steps)))
}
