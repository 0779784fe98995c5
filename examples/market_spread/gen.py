#!/usr/bin/env python3
"""Generates Market Spread input files whose expected output does not depend
on how the engine interleaves the streams.

    python3 gen.py --orders 500000 --nbbo 500000 --seed 1 --out data

writes, in DIR:
    initial-nbbo.bin  one NBBO per symbol (350 symbols)
    nbbo.bin          M NBBO updates, symbols drawn uniformly
    orders.bin        N orders, symbols drawn uniformly

Why the output is determined: one symbol in 70 is a "reject" symbol, and
every NBBO record it ever gets carries the same wide bid/offer, so it is in
reject state from its initial NBBO onwards (and, since a fresh state rejects
too, before it). Every other symbol only ever gets narrow spreads, far below
both thresholds, so once its initial NBBO is in it accepts every order. An
order is therefore rejected exactly when its symbol is a reject symbol,
whatever NBBO updates happened to arrive before it, and the rejection carries
that symbol's constant bid/offer.

The same seed gives the same bytes. Records are built from precomputed pieces
with one struct.pack each, so the defaults take a couple of seconds.
"""

import argparse
import os
import random
import string
import struct
import sys
import time

from spread_formats import (INITIAL_NBBO_FILE, NBBO_FILE, NBBO_TYPE,
                            ORDER_TYPE, ORDERS_FILE)

SYMBOLS = 350
REJECT_EVERY = 70          # one symbol in 70 is in reject state: 5 of 350

# Narrow spreads: 1 to 4 cents on prices of at least $5, so both the
# absolute (0.05) and relative (5%) tests stay far from their thresholds.
MIN_PRICE_CENTS = 500
MAX_PRICE_CENTS = 50000
MAX_NARROW_SPREAD_CENTS = 4
# Reject symbols: bid and offer one dollar either side of the base price.
WIDE_HALF_SPREAD_CENTS = 100

# The transact times start here and advance 1 ms per record.
START_TIME = 1795320915    # 2026-11-22 04:15:15 UTC

# The length prefix is packed with the record: one pack call per frame.
NBBO_FRAME = struct.Struct(">IB4s21sdd")
ORDER_FRAME = struct.Struct(">IBBI6s4sdd21s")
NBBO_SIZE = NBBO_FRAME.size - 4
ORDER_SIZE = ORDER_FRAME.size - 4


def make_symbols(rng: random.Random, count: int) -> list[bytes]:
    """COUNT distinct symbols of 1 to 4 uppercase letters, left-padded with
    spaces to 4 bytes."""
    seen: set[bytes] = set()
    symbols: list[bytes] = []
    while len(symbols) < count:
        length = rng.choice((1, 2, 3, 3, 4, 4, 4))
        name = "".join(rng.choice(string.ascii_uppercase)
                       for _ in range(length))
        symbol = name.rjust(4).encode("ascii")
        if symbol not in seen:
            seen.add(symbol)
            symbols.append(symbol)
    return symbols


def transact_times(count: int, start: int) -> list[bytes]:
    """COUNT 21-byte times "YYYYMMDD-HH:MM:SS.mmm", 1 ms apart."""
    millis = [b".%03d" % ms for ms in range(1000)]
    times: list[bytes] = []
    for second in range((count + 999) // 1000):
        prefix = time.strftime("%Y%m%d-%H:%M:%S",
                               time.gmtime(start + second)).encode("ascii")
        times.extend([prefix + ms for ms in millis])
    del times[count:]
    return times


def order_ids(count: int) -> list[bytes]:
    """COUNT distinct 6-character base-36 order ids, in sequence."""
    digits = string.digits + string.ascii_uppercase
    thirds = [(a + b + c).encode("ascii")
              for a in digits for b in digits for c in digits]
    n = len(thirds)
    if count > n * n:
        raise ValueError(f"at most {n * n} orders")
    return [thirds[i // n] + thirds[i % n] for i in range(count)]


class Market:
    """The fixed per-symbol facts every record is drawn from."""

    def __init__(self, rng: random.Random):
        self.symbols = make_symbols(rng, SYMBOLS)
        self.rejecting = set(rng.sample(range(SYMBOLS),
                                        SYMBOLS // REJECT_EVERY))
        self.base = [rng.randrange(MIN_PRICE_CENTS, MAX_PRICE_CENTS)
                     for _ in range(SYMBOLS)]
        # Narrow bids wander up to 2% either side of the base price.
        self.low = [b - b // 50 for b in self.base]
        self.width = [2 * (b // 50) + 1 for b in self.base]

    def wide_quote(self, s: int) -> tuple[float, float]:
        base = self.base[s]
        return ((base - WIDE_HALF_SPREAD_CENTS) / 100,
                (base + WIDE_HALF_SPREAD_CENTS) / 100)


def nbbo_records(market: Market, rng: random.Random,
                 symbol_indexes: list[int], times: list[bytes]) -> bytes:
    pack = NBBO_FRAME.pack
    rand = rng.random
    symbols = market.symbols
    low = market.low
    width = market.width
    wide = {s: market.wide_quote(s) for s in market.rejecting}
    out = []
    append = out.append
    for s, t in zip(symbol_indexes, times):
        if s in wide:
            bid, offer = wide[s]
        else:
            bid_cents = low[s] + int(rand() * width[s])
            spread = 1 + int(rand() * MAX_NARROW_SPREAD_CENTS)
            bid = bid_cents / 100
            offer = (bid_cents + spread) / 100
        append(pack(NBBO_SIZE, NBBO_TYPE, symbols[s], t, bid, offer))
    return b"".join(out)


def order_records(market: Market, rng: random.Random, count: int,
                  times: list[bytes]) -> bytes:
    pack = ORDER_FRAME.pack
    rand = rng.random
    symbols = market.symbols
    low = market.low
    width = market.width
    symbol_indexes = rng.choices(range(SYMBOLS), k=count)
    out = []
    append = out.append
    for s, oid, t in zip(symbol_indexes, order_ids(count), times):
        side = 1 + int(rand() * 2)
        account = 100000 + int(rand() * 900000)
        quantity = float(100 * (1 + int(rand() * 50)))
        price = (low[s] + int(rand() * width[s])) / 100
        append(pack(ORDER_SIZE, ORDER_TYPE, side, account, oid,
                    symbols[s], quantity, price, t))
    return b"".join(out)


def generate(orders: int, nbbo: int, seed: int) -> dict[str, bytes]:
    """The three files' contents, by file name."""
    rng = random.Random(seed)
    market = Market(rng)
    times = transact_times(SYMBOLS + nbbo + orders, START_TIME)
    initial = nbbo_records(market, rng, list(range(SYMBOLS)),
                           times[:SYMBOLS])
    updates = nbbo_records(market, rng, rng.choices(range(SYMBOLS), k=nbbo),
                           times[SYMBOLS:SYMBOLS + nbbo])
    order_data = order_records(market, rng, orders, times[SYMBOLS + nbbo:])
    return {INITIAL_NBBO_FILE: initial, NBBO_FILE: updates,
            ORDERS_FILE: order_data}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=500000,
                        help="number of orders (default 500000)")
    parser.add_argument("--nbbo", type=int, default=500000,
                        help="number of NBBO updates (default 500000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="data",
                        help="directory to write (default data)")
    args = parser.parse_args(argv)
    if args.orders < 0 or args.nbbo < 0:
        parser.error("counts must not be negative")

    started = time.monotonic()
    files = generate(args.orders, args.nbbo, args.seed)
    os.makedirs(args.out, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)
    print(f"gen: {SYMBOLS} symbols ({SYMBOLS // REJECT_EVERY} rejecting), "
          f"{args.nbbo} NBBO updates, {args.orders} orders -> {args.out}/ "
          f"in {time.monotonic() - started:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
