// Command identity is W3's Go runner: one stateless step, "pass", that
// emits every payload unchanged, so a run measures the engine, the runner
// link and the SDK alone. bench/run builds it into bench/w3/go/bin/.
package main

import (
	"context"
	"os"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

type identity struct{}

func (identity) Compute(_ context.Context, msg wallaroo.Message, out wallaroo.Emitter) error {
	out.Emit(msg.Payload)
	return nil
}

func main() {
	err := wallaroo.Run(context.Background(), []wallaroo.Step{wallaroo.Stateless("pass", identity{})})
	os.Exit(wallaroo.ExitCode(err))
}
