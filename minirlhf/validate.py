"""Range checks for the configs' numbers, so a bad value fails before any training with the field and its range named.

    check_integers(cfg, steps=1, warmup_steps=0)      each field an int ≥ its lower bound
    check_numbers(cfg, lr=">", weight_decay="≥")      each field a finite float, > 0 or ≥ 0 ("finite": only finite)

A field whose value is None is skipped (an optional setting left unset).
"""

from __future__ import annotations

import math


def _fail(cfg, name: str, value, wanted: str) -> None:
    raise ValueError(f"{type(cfg).__name__}.{name}={value!r}: give {wanted}")


def check_integers(cfg, **lower_bounds: int) -> None:
    for name, low in lower_bounds.items():
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            _fail(cfg, name, value, f"an integer ≥ {low}")


def check_numbers(cfg, **signs: str) -> None:
    for name, sign in signs.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)   # not "0.1", not True
        ok = number and math.isfinite(value) and {">": value > 0, "≥": value >= 0, "finite": True}[sign]
        if not ok:
            _fail(cfg, name, value, "a finite number" + ("" if sign == "finite" else f" {sign} 0"))
