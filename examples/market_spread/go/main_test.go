package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

var ctx = context.Background()

func nbbo(symbol string, bid, offer float64) wallaroo.Message {
	r := []byte{nbboType}
	r = append(r, symbol...)
	r = append(r, "20261122-04:15:15.123"...)
	r = binary.BigEndian.AppendUint64(r, math.Float64bits(bid))
	r = binary.BigEndian.AppendUint64(r, math.Float64bits(offer))
	return wallaroo.Message{Key: []byte(symbol), Payload: r}
}

func order(symbol, id string) wallaroo.Message {
	r := []byte{orderType, 2}
	r = binary.BigEndian.AppendUint32(r, 123456)
	r = append(r, id...)
	r = append(r, symbol...)
	r = binary.BigEndian.AppendUint64(r, math.Float64bits(300))
	r = binary.BigEndian.AppendUint64(r, math.Float64bits(10.01))
	r = append(r, "20261122-04:15:16.456"...)
	return wallaroo.Message{Key: []byte(symbol), Payload: r}
}

func harness(t *testing.T) *wallaroo.Harness {
	t.Helper()
	h, err := wallaroo.NewHarness(steps()...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestRecordsHaveTheDocumentedSizes(t *testing.T) {
	if n := len(nbbo("  GE", 1, 2).Payload); n != nbboSize {
		t.Fatalf("NBBO of %d bytes", n)
	}
	if n := len(order("  GE", "ABC123").Payload); n != orderSize {
		t.Fatalf("order of %d bytes", n)
	}
}

func TestOrdersAreRejectedExactlyWhileTheMarketIsWide(t *testing.T) {
	h := harness(t)
	out, err := h.Run(ctx, "check-order",
		order("  GE", "000001"),    // no NBBO yet: rejected, bid/offer 0
		nbbo("  GE", 10.00, 10.02), // narrow
		order("  GE", "000002"),    // accepted
		nbbo("  GE", 10.00, 10.06), // 6 cents: wide
		order("  GE", "000003"),    // rejected
		nbbo("   F", 0.50, 0.52),   // 2 cents, but 3.9% of 0.51: narrow
		order("   F", "000004"),    // accepted
		nbbo("   F", 0.50, 0.526),  // 5.1%: wide
		order("   F", "000005"),    // rejected
		nbbo(" IBM", 0, 0),         // no market
		order(" IBM", "000006"))    // rejected
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range out {
		if len(m.Payload) != rejectedSize {
			t.Fatalf("output of %d bytes", len(m.Payload))
		}
		ids = append(ids, string(m.Payload[5:11]))
	}
	if got := strings.Join(ids, ","); got != "000001,000003,000005,000006" {
		t.Fatalf("rejected %s", got)
	}
	// The order's fields, then the symbol's last bid and offer.
	r := out[1].Payload
	o := order("  GE", "000003").Payload
	if !bytes.Equal(r[:52], o[1:]) {
		t.Fatalf("output %x does not start with the order %x", r[:52], o[1:])
	}
	if bid, offer := math.Float64frombits(binary.BigEndian.Uint64(r[52:])), math.Float64frombits(binary.BigEndian.Uint64(r[60:])); bid != 10.00 || offer != 10.06 {
		t.Fatalf("bid %v offer %v", bid, offer)
	}
}

func TestTheSpreadThresholdsAreThePythonRunners(t *testing.T) {
	// As market_spread.py computes them, in 64-bit floats.
	cases := []struct {
		bid, offer float64
		reject     bool
	}{
		{10.00, 10.05, true}, // 10.05 - 10.00 is just above 0.05
		{1.10, 1.15, false},  // 1.15 - 1.10 is just below
		{10.00, 10.04, false},
		{0.50, 0.52, false},
		{0.50, 0.53, true},
		{0, 0, true},
	}
	for _, c := range cases {
		if got := shouldReject(c.bid, c.offer); got != c.reject {
			t.Errorf("shouldReject(%v, %v) = %v", c.bid, c.offer, got)
		}
	}
}

func TestTheStateIsStoredAsThePythonRunnerStoresIt(t *testing.T) {
	// struct.pack(">dd?", 1.5, 2.5, True)
	const python = "3ff8000000000000400400000000000001"
	b, _ := symbolCodec.Append(nil, SymbolData{1.5, 2.5, true})
	if hex.EncodeToString(b) != python {
		t.Fatalf("encoded %x, want %s", b, python)
	}
	s, err := symbolCodec.Decode(b)
	if err != nil || s != (SymbolData{1.5, 2.5, true}) {
		t.Fatalf("decoded %+v %v", s, err)
	}
	if _, err := symbolCodec.Decode(b[:16]); err == nil {
		t.Fatal("a short state decodes")
	}
}

func TestABadRecordFailsItsEventOnly(t *testing.T) {
	h := harness(t)
	short := order("  GE", "000001")
	short.Payload = short.Payload[:20]
	out, err := h.Run(ctx, "check-order", wallaroo.Message{Key: []byte("  GE"), Payload: []byte{9}}, short,
		order("  GE", "000002"))
	var failed *wallaroo.EventErrors
	if !errors.As(err, &failed) || len(failed.Errors) != 2 ||
		failed.Errors[0] != `step 'check-order' key "  GE": error: unknown message type 9` ||
		failed.Errors[1] != `step 'check-order' key "  GE": error: an order record has 20 bytes, not 53` {
		t.Fatalf("err %v", err)
	}
	if len(out) != 1 {
		t.Fatalf("%d outputs", len(out))
	}
}
