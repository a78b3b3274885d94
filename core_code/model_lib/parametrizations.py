"""Named abc-parametrizations (Yang & Hu 2021) as per-layer exponent lists.

n is the hidden width for every layer. Layer l: weights ~ N(0, n^(-2 b_l)), forward
multiplier n^(-a_l), SGD learning rate eta * n^(-c). The table (first, hidden, last):

| name | a               | b                   | c |
|------|-----------------|---------------------|---|
| muP  | -1/2, 0, 1/2    | 1/2 all             | 0 |
| NTK  | 0, 1/2, 1/2     | 0 all               | 0 |
| SP   | 0, 0, 0         | 0 first, 1/2 others | 0 |

A depth-1 network (one linear map d_in -> d_out) has only a first layer and takes the
first-layer values. Pure Python (no torch) so configs can be resolved cheaply.
"""

from __future__ import annotations

# name -> ((a_first, a_hidden, a_last), (b_first, b_hidden, b_last), c)
PARAMETRIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    "muP": ((-0.5, 0.0, 0.5), (0.5, 0.5, 0.5), 0.0),
    "NTK": ((0.0, 0.5, 0.5), (0.0, 0.0, 0.0), 0.0),
    "SP": ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5), 0.0),
}


def _per_layer(first: float, hidden: float, last: float, depth: int) -> list[float]:
    if depth == 1:
        return [first]
    return [first] + [hidden] * (depth - 2) + [last]


def abc_preset(name: str, depth: int) -> dict:
    """``{'list_a', 'list_b', 'c'}`` of the named parametrization for ``depth`` layers."""
    if name not in PARAMETRIZATIONS:
        raise ValueError(
            f"architecture config key 'parametrization' is {name!r}; "
            f"known parametrizations: {', '.join(sorted(PARAMETRIZATIONS))}"
        )
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"architecture config key 'depth' must be an int >= 1, got {depth!r}")
    a, b, c = PARAMETRIZATIONS[name]
    return {"list_a": _per_layer(*a, depth), "list_b": _per_layer(*b, depth), "c": c}
