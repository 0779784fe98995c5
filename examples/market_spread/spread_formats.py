"""The Market Spread record layouts and file framing, for the tools around the
runner: the generator, the expected-output model and the checker.

The runner (market_spread.py) deliberately has its own decoders: if it shared
this module, a mistake in a layout here would be made identically on both
sides of the check and go unnoticed. The layouts are tested field by field
against hand-computed offsets in tests/test_market_spread_formats.py.

All numbers are big-endian. Text fields are fixed-width ASCII.

NBBO, 42 bytes:   type u8 = 2 | symbol 4 | transact time 21 | bid f64 |
                  offer f64
Order, 53 bytes:  type u8 = 1 | side u8 | account u32 | order id 6 |
                  symbol 4 | quantity f64 | price f64 | transact time 21
Output, 68 bytes: side u8 | account u32 | order id 6 | symbol 4 |
                  quantity f64 | price f64 | transact time 21 | bid f64 |
                  offer f64

Files hold records framed by a big-endian u32 length (topology `framing:
length`).
"""

import struct
from typing import Iterator, NamedTuple

NBBO_TYPE = 2
ORDER_TYPE = 1
SIDE_BUY = 1
SIDE_SELL = 2

NBBO = struct.Struct(">B4s21sdd")
ORDER = struct.Struct(">BBI6s4sdd21s")
OUTPUT = struct.Struct(">BI6s4sdd21sdd")

# Where the symbol sits in each record: the engine key_by steps of
# topology.yaml take their key from these bytes.
NBBO_SYMBOL = slice(1, 5)
ORDER_SYMBOL = slice(12, 16)
OUTPUT_SYMBOL = slice(11, 15)

FRAME_HEADER = struct.Struct(">I")

# The files this example reads, relative to the data directory.
INITIAL_NBBO_FILE = "initial-nbbo.bin"
NBBO_FILE = "nbbo.bin"
ORDERS_FILE = "orders.bin"


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


def decode_nbbo(record: bytes) -> Nbbo:
    if record[0] != NBBO_TYPE:
        raise ValueError(f"not an NBBO record: type {record[0]}")
    _, symbol, time, bid, offer = NBBO.unpack(record)
    return Nbbo(symbol, time, bid, offer)


def decode_order(record: bytes) -> Order:
    if record[0] != ORDER_TYPE:
        raise ValueError(f"not an order record: type {record[0]}")
    return Order(*ORDER.unpack(record)[1:])


def encode_output(order: Order, bid: float, offer: float) -> bytes:
    return OUTPUT.pack(order.side, order.account, order.order_id,
                       order.symbol, order.quantity, order.price,
                       order.transact_time, bid, offer)


def frame(record: bytes) -> bytes:
    return FRAME_HEADER.pack(len(record)) + record


class FramingError(ValueError):
    """The file does not end on a frame boundary."""


def iter_frames(data: bytes) -> Iterator[bytes]:
    """Yields the payloads of a length-framed byte string, in order.

    Raises FramingError when the data ends inside a frame."""
    view = memoryview(data)
    pos = 0
    end = len(data)
    unpack = FRAME_HEADER.unpack_from
    while pos < end:
        if end - pos < 4:
            raise FramingError(f"{end - pos} stray bytes at offset {pos}")
        (size,) = unpack(view, pos)
        pos += 4
        if end - pos < size:
            raise FramingError(
                f"frame at offset {pos - 4} says {size} bytes, "
                f"{end - pos} left")
        yield bytes(view[pos:pos + size])
        pos += size


def read_frames(path) -> list[bytes]:
    with open(path, "rb") as f:
        return list(iter_frames(f.read()))
