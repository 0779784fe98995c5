"""Celsius to Fahrenheit: the smallest Wallaroo application.

One stateless step, `celsius-to-fahrenheit`, turns each line of the input
(a temperature in degrees Celsius, as a decimal number) into a line holding
the same temperature in degrees Fahrenheit, with two decimals.
"""

import wallaroo


def decode(payload: bytes) -> float:
    return float(payload)


def celsius_to_fahrenheit(celsius: float) -> float:
    return celsius * 1.8 + 32


def encode(fahrenheit: float) -> bytes:
    return b"%.2f" % fahrenheit


def build() -> wallaroo.Steps:
    steps = wallaroo.Steps()
    steps.computation("celsius-to-fahrenheit", celsius_to_fahrenheit,
                      decoder=decode, encoder=encode)
    return steps


if __name__ == "__main__":
    wallaroo.run(build())
