// Command market-spread is the Go runner of the Market Spread example: the
// check-order state step of market_spread.py, byte for byte the same
// outputs.
//
// Two streams reach check-order, both keyed by stock symbol by the engine:
//
//   - NBBO records update the symbol's last bid and offer and decide
//     whether its orders should be rejected: when the spread is 5 cents or
//     more, or 5% of the mid price or more.
//   - Orders are checked against their symbol's state: an order for a
//     symbol in reject state is emitted, with the symbol's last bid and
//     offer. Other orders produce nothing.
//
// A symbol no NBBO has been seen for rejects its orders. The record
// layouts are in ../README.md; all numbers are big-endian. The state is
// stored as market_spread.py stores it (bid f64, offer f64, reject flag
// u8), so the engine holds the same bytes whichever runner serves the step.
//
// Build it where topology-go.yaml expects it, from the example's folder:
//
//	(cd go && go build -o bin/market-spread .)
package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

// Record types and sizes.
const (
	orderType = 1
	nbboType  = 2

	nbboSize     = 42 // type | symbol 4 | transact time 21 | bid f64 | offer f64
	orderSize    = 53 // type | side | account u32 | order id 6 | symbol 4 | quantity f64 | price f64 | transact time 21
	rejectedSize = 68 // side | account u32 | order id 6 | symbol 4 | quantity f64 | price f64 | transact time 21 | bid f64 | offer f64
	stateSize    = 17 // bid f64 | offer f64 | reject u8
)

// SymbolData is the state kept per symbol.
type SymbolData struct {
	LastBid, LastOffer float64
	ShouldRejectTrades bool
}

// newSymbolData is a symbol's state before its first NBBO: it rejects.
func newSymbolData() SymbolData { return SymbolData{ShouldRejectTrades: true} }

// symbolCodec stores SymbolData in 17 bytes, as market_spread.py's
// SymbolDataCodec does (struct ">dd?").
var symbolCodec = wallaroo.CodecFuncs[SymbolData]{
	AppendFunc: func(dst []byte, s SymbolData) ([]byte, error) {
		dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(s.LastBid))
		dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(s.LastOffer))
		var reject byte
		if s.ShouldRejectTrades {
			reject = 1
		}
		return append(dst, reject), nil
	},
	DecodeFunc: func(data []byte) (SymbolData, error) {
		if len(data) != stateSize {
			return SymbolData{}, fmt.Errorf("a symbol state has %d bytes, not %d", len(data), stateSize)
		}
		return SymbolData{
			LastBid:            math.Float64frombits(binary.BigEndian.Uint64(data[0:])),
			LastOffer:          math.Float64frombits(binary.BigEndian.Uint64(data[8:])),
			ShouldRejectTrades: data[16] != 0,
		}, nil
	},
}

func shouldReject(bid, offer float64) bool {
	spread := offer - bid
	if spread >= 0.05 {
		return true
	}
	mid := (bid + offer) / 2
	// A zero mid price is no market at all (and would divide by zero).
	return mid <= 0 || spread/mid >= 0.05
}

func f64(b []byte) float64 { return math.Float64frombits(binary.BigEndian.Uint64(b)) }

// checkOrder is the check-order step.
type checkOrder struct{ out [rejectedSize]byte }

func (c *checkOrder) Compute(_ context.Context, msg wallaroo.Message, s *SymbolData, out wallaroo.Emitter) error {
	p := msg.Payload
	if len(p) == 0 {
		return fmt.Errorf("an empty record")
	}
	switch p[0] {
	case nbboType:
		if len(p) != nbboSize {
			return fmt.Errorf("an NBBO record has %d bytes, not %d", len(p), nbboSize)
		}
		s.LastBid, s.LastOffer = f64(p[26:]), f64(p[34:])
		s.ShouldRejectTrades = shouldReject(s.LastBid, s.LastOffer)
		return nil
	case orderType:
		if len(p) != orderSize {
			return fmt.Errorf("an order record has %d bytes, not %d", len(p), orderSize)
		}
		if !s.ShouldRejectTrades {
			return nil
		}
		// The order without its type byte is the output's first 52 bytes.
		r := c.out[:]
		copy(r, p[1:orderSize])
		binary.BigEndian.PutUint64(r[52:], math.Float64bits(s.LastBid))
		binary.BigEndian.PutUint64(r[60:], math.Float64bits(s.LastOffer))
		out.Emit(r)
		return nil
	}
	return fmt.Errorf("unknown message type %d", p[0])
}

func steps() []wallaroo.Step {
	return []wallaroo.Step{
		wallaroo.Stateful[SymbolData]("check-order", &checkOrder{}, symbolCodec,
			wallaroo.WithInitialState(newSymbolData)),
	}
}

func main() {
	err := wallaroo.Run(context.Background(), steps())
	os.Exit(wallaroo.ExitCode(err))
}
