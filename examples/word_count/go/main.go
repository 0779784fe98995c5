// Command word-count is the Go runner of the word count example: the same
// three steps as word_count.py, byte for byte the same outputs.
//
//   - split (stateless) lowercases a line of text and emits its words: the
//     runs of letters a-z and apostrophes, so "Don't" is the word "don't"
//     and "well-known" is "well" and "known".
//   - key-word keys each word by itself, so every occurrence of a word
//     reaches the same state.
//   - count-word (state word-count) adds one to the word's count and emits
//     "WORD COUNT".
//
// Lowercasing is ASCII only, done on the bytes, as Python's bytes.lower():
// a line is never decoded, so text that is not UTF-8 cannot fail the step,
// and a non-ASCII letter simply ends a word.
//
// Build it where topology-go.yaml expects it, from the example's folder:
//
//	(cd go && go build -o bin/word-count .)
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strconv"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

// splitter is the split step. It keeps the word being built between calls
// (the runner calls a step for one event at a time).
type splitter struct{ word []byte }

func (s *splitter) Compute(_ context.Context, msg wallaroo.Message, out wallaroo.Emitter) error {
	word := s.word[:0]
	for _, c := range msg.Payload {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if ('a' <= c && c <= 'z') || c == '\'' {
			word = append(word, c)
			continue
		}
		if len(word) > 0 {
			out.Emit(word) // copied at once: the buffer can be reused
			word = word[:0]
		}
	}
	if len(word) > 0 {
		out.Emit(word)
	}
	s.word = word
	return nil
}

func keyWord(_ context.Context, msg wallaroo.Message) ([]byte, error) {
	return msg.Payload, nil
}

// counter is the count-word step; its state is the word's count so far.
type counter struct{ line []byte }

func (c *counter) Compute(_ context.Context, msg wallaroo.Message, count *uint64, out wallaroo.Emitter) error {
	*count++
	c.line = append(append(c.line[:0], msg.Payload...), ' ')
	c.line = strconv.AppendUint(c.line, *count, 10)
	out.Emit(c.line)
	return nil
}

// countCodec stores a count as a varint: the state of most words is one or
// two bytes.
var countCodec = wallaroo.CodecFuncs[uint64]{
	AppendFunc: func(dst []byte, n uint64) ([]byte, error) { return binary.AppendUvarint(dst, n), nil },
	DecodeFunc: func(data []byte) (uint64, error) {
		n, size := binary.Uvarint(data)
		if size <= 0 || size != len(data) {
			return 0, errors.New("not a varint count")
		}
		return n, nil
	},
}

// steps are the steps this program serves, named as the topology names them.
func steps() []wallaroo.Step {
	return []wallaroo.Step{
		wallaroo.Stateless("split", &splitter{}),
		wallaroo.KeyBy("key-word", wallaroo.KeyFunc(keyWord)),
		wallaroo.Stateful[uint64]("count-word", &counter{}, countCodec),
	}
}

func main() {
	err := wallaroo.Run(context.Background(), steps())
	os.Exit(wallaroo.ExitCode(err))
}
