#!/usr/bin/env python3
"""The expected output of Market Spread, computed by a plain Python model of
the application, without the SDK or the engine.

    python3 expected.py DIR [--write FILE]

reads the files gen.py wrote in DIR and prints how many orders should be
rejected; --write also writes them, length-framed, as the sink would.

The model runs the streams one after the other: the initial NBBO, then every
NBBO update, then every order. The engine interleaves updates and orders in
an order nobody can predict, so before trusting that sequential answer the
model checks that the data makes the interleaving irrelevant: for each symbol
that has orders, every state the symbol can be in when an order arrives
(after its initial NBBO or after any of its updates) must decide the order
the same way and, for a rejection, with the same bid/offer. gen.py produces
such data; expected() raises Undetermined on data that is not.
"""

import argparse
import os
import sys
from collections import defaultdict
from typing import Iterable, Optional

from spread_formats import (INITIAL_NBBO_FILE, NBBO_FILE, NBBO_TYPE,
                            ORDER_SYMBOL, ORDER_TYPE, ORDERS_FILE,
                            decode_nbbo, decode_order, encode_output, frame,
                            read_frames)

ABSOLUTE_THRESHOLD = 0.05   # dollars
RELATIVE_THRESHOLD = 0.05   # of the mid price


def should_reject(bid: float, offer: float) -> bool:
    """Whether a symbol quoted BID/OFFER stops taking orders.

    A mid price of zero (or below) is not a market: reject."""
    spread = offer - bid
    if spread >= ABSOLUTE_THRESHOLD:
        return True
    mid = (bid + offer) / 2
    if mid <= 0:
        return True
    return spread / mid >= RELATIVE_THRESHOLD


class SymbolState:
    """What the application keeps per symbol. A symbol no NBBO has been seen
    for rejects orders, with bid and offer 0."""

    __slots__ = ("bid", "offer", "reject")

    def __init__(self) -> None:
        self.bid = 0.0
        self.offer = 0.0
        self.reject = True

    def decision(self) -> tuple:
        """What an order arriving now gets: None (accepted) or the bid/offer
        its rejection carries."""
        return (self.bid, self.offer) if self.reject else None


class Model:
    """Market Spread, one event at a time, in the order given."""

    def __init__(self) -> None:
        self.states: dict[bytes, SymbolState] = defaultdict(SymbolState)

    def nbbo(self, record: bytes) -> bytes:
        """Applies an NBBO record; returns its symbol."""
        nbbo = decode_nbbo(record)
        state = self.states[nbbo.symbol]
        state.bid = nbbo.bid
        state.offer = nbbo.offer
        state.reject = should_reject(nbbo.bid, nbbo.offer)
        return nbbo.symbol

    def order(self, record: bytes) -> Optional[bytes]:
        """The output record if the order is rejected, else None."""
        if record[0] != ORDER_TYPE:
            raise ValueError(f"not an order record: type {record[0]}")
        # Most orders are accepted: only decode the ones that are not.
        state = self.states[record[ORDER_SYMBOL]]
        if not state.reject:
            return None
        return encode_output(decode_order(record), state.bid, state.offer)

    def event(self, record: bytes) -> Optional[bytes]:
        """An NBBO or an order record, told apart by its type byte."""
        if record[0] == NBBO_TYPE:
            self.nbbo(record)
            return None
        return self.order(record)


def run(events: Iterable[bytes]) -> list[bytes]:
    """The outputs of the model over EVENTS, in order."""
    model = Model()
    outputs = []
    for record in events:
        out = model.event(record)
        if out is not None:
            outputs.append(out)
    return outputs


class Undetermined(ValueError):
    """The data lets the interleaving of NBBO updates and orders change the
    output, so no single expected output exists."""


def replay_nbbo(initial: list[bytes], updates: list[bytes],
                orders: list[bytes]) -> tuple[Model, list[bytes]]:
    """Applies every NBBO record to a new model, the initial ones first,
    and notes for each symbol that has orders the decisions (accept, or
    reject with some quote) an order could meet, wherever it falls among
    the updates.

    Returns the model and the symbols with more than one possible decision,
    sorted: those whose output depends on the interleaving."""
    model = Model()
    for record in initial:
        model.nbbo(record)
    # An order can arrive before any update: the state the initial NBBO
    # left (or a fresh state, for a symbol without one) is possible. The
    # initial NBBO itself is always in first: the topology starts the
    # orders source `after: initial-nbbo`.
    decisions = {symbol: {model.states[symbol].decision()}
                 for symbol in {r[ORDER_SYMBOL] for r in orders}}
    for record in updates:
        symbol = model.nbbo(record)
        if symbol in decisions:
            decisions[symbol].add(model.states[symbol].decision())
    return model, sorted(s for s, d in decisions.items() if len(d) > 1)


def undetermined_symbols(initial: list[bytes], updates: list[bytes],
                         orders: list[bytes]) -> list[bytes]:
    """The symbols with orders whose outcome depends on when NBBO updates
    arrive relative to them, sorted. Empty for data gen.py made."""
    return replay_nbbo(initial, updates, orders)[1]


def expected(directory: str) -> list[bytes]:
    """The output records the application must emit for the data in
    DIRECTORY: every rejected order, in orders-file order.

    Raises Undetermined if the data does not fix the output."""
    initial = read_frames(os.path.join(directory, INITIAL_NBBO_FILE))
    updates = read_frames(os.path.join(directory, NBBO_FILE))
    orders = read_frames(os.path.join(directory, ORDERS_FILE))
    model, bad = replay_nbbo(initial, updates, orders)
    if bad:
        names = ", ".join(s.decode("ascii").strip() for s in bad[:10])
        raise Undetermined(
            f"{len(bad)} symbols' outputs depend on the interleaving "
            f"of NBBO updates and orders: {names}")
    # With the output determined, orders after all the updates give the
    # same answer as any interleaving, this one included.
    return [out for out in map(model.order, orders) if out is not None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="directory gen.py wrote")
    parser.add_argument("--write", metavar="FILE",
                        help="write the expected records, length-framed")
    args = parser.parse_args(argv)
    try:
        records = expected(args.dir)
    except Undetermined as e:
        print(f"expected: {e}", file=sys.stderr)
        return 1
    if args.write:
        with open(args.write, "wb") as f:
            f.write(b"".join(frame(r) for r in records))
    symbols = {r[11:15] for r in records}
    print(f"expected {len(records)} rejected orders "
          f"over {len(symbols)} symbols")
    return 0


if __name__ == "__main__":
    sys.exit(main())
