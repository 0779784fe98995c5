"""Market Spread: rejects orders for symbols whose market looks unsound.

Two streams reach one state step, `check-order`, both keyed by stock symbol
(the engine takes the symbol from the record bytes; see topology.yaml):

- NBBO records (the National Best Bid and Offer) update the symbol's last
  bid and offer and decide whether its orders should be rejected: when the
  spread is 5 cents or more, or 5% of the mid price or more.
- Orders are checked against their symbol's state: an order for a symbol in
  reject state is emitted, with the symbol's last bid and offer, for the
  trading system to withdraw. Other orders produce nothing.

A symbol no NBBO has been seen for rejects its orders.

The formats are in README.md. This module decodes them itself rather than
sharing code with gen.py and check.py, so that a layout mistake on either
side shows up as a failed check.
"""

import struct
from typing import NamedTuple, Optional, Union

import wallaroo

NBBO_TYPE = 2
ORDER_TYPE = 1

_NBBO = struct.Struct(">B4s21sdd")              # 42 bytes
_ORDER = struct.Struct(">BBI6s4sdd21s")         # 53 bytes
_REJECTED = struct.Struct(">BI6s4sdd21sdd")     # 68 bytes


class Nbbo(NamedTuple):
    symbol: bytes
    transact_time: bytes
    bid: float
    offer: float


class Order(NamedTuple):
    side: int
    account: int
    order_id: bytes
    symbol: bytes
    quantity: float
    price: float
    transact_time: bytes


class RejectedOrder(NamedTuple):
    order: Order
    bid: float
    offer: float


def decode(payload: bytes) -> Union[Nbbo, Order]:
    """An NBBO or an order, told apart by the type byte."""
    kind = payload[0]
    if kind == NBBO_TYPE:
        _, symbol, time, bid, offer = _NBBO.unpack(payload)
        return Nbbo(symbol, time, bid, offer)
    if kind == ORDER_TYPE:
        return Order(*_ORDER.unpack(payload)[1:])
    raise ValueError(f"unknown message type {kind}")


def encode(rejected: RejectedOrder) -> bytes:
    o = rejected.order
    return _REJECTED.pack(o.side, o.account, o.order_id, o.symbol,
                          o.quantity, o.price, o.transact_time,
                          rejected.bid, rejected.offer)


class SymbolData:
    """The state kept per symbol."""

    __slots__ = ("last_bid", "last_offer", "should_reject_trades")

    def __init__(self) -> None:
        self.last_bid = 0.0
        self.last_offer = 0.0
        self.should_reject_trades = True


class SymbolDataCodec:
    """SymbolData as 17 bytes: bid f64, offer f64, reject flag u8.

    The engine stores and ships every changed state after each batch, and
    NBBO updates change a state on nearly every event: a fixed struct is
    several times smaller and faster than pickle."""

    _FORMAT = struct.Struct(">dd?")

    def dumps(self, state: SymbolData) -> bytes:
        return self._FORMAT.pack(state.last_bid, state.last_offer,
                                 state.should_reject_trades)

    def loads(self, data: bytes) -> SymbolData:
        state = SymbolData()
        (state.last_bid, state.last_offer,
         state.should_reject_trades) = self._FORMAT.unpack(data)
        return state


def should_reject(bid: float, offer: float) -> bool:
    spread = offer - bid
    if spread >= 0.05:
        return True
    mid = (bid + offer) / 2
    # A zero mid price is no market at all (and would divide by zero).
    return mid <= 0 or spread / mid >= 0.05


def check_order(message: Union[Nbbo, Order],
                state: SymbolData) -> Optional[RejectedOrder]:
    if isinstance(message, Nbbo):
        state.last_bid = message.bid
        state.last_offer = message.offer
        state.should_reject_trades = should_reject(message.bid,
                                                   message.offer)
        return None
    if state.should_reject_trades:
        return RejectedOrder(message, state.last_bid, state.last_offer)
    return None


def build() -> wallaroo.Steps:
    steps = wallaroo.Steps()
    steps.state_computation("check-order", check_order, state=SymbolData,
                            decoder=decode, encoder=encode,
                            state_codec=SymbolDataCodec())
    return steps


if __name__ == "__main__":
    wallaroo.run(build())
