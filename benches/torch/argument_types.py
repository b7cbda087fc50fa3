"""Argument types shared by compare.py and iteration.py."""

import argparse
import re


def parse_scales(text):
    """Parse a comma-separated list of scale numbers, such as 0,1,9 or ' 0, 1'."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: the list is empty; give scale numbers (0 or more) "
            "separated by commas, such as 0,1,9"
        )
    scales = []
    for item in text.split(","):
        if not re.fullmatch(r"\s*[0-9]+\s*", item):
            raise argparse.ArgumentTypeError(
                f"invalid scale {item!r} in {text!r}; expected scale numbers (0 or more) "
                "separated by commas, such as 0,1,9"
            )
        scales.append(int(item))
    return scales


def positive_int(text):
    """Parse a whole number of at least 1, for counts such as --steps and --threads."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected a whole number of at least 1"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: must be at least 1")
    return value
