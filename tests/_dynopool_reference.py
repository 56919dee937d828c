"""An independent float64 model of DynOPool's query lattice, written point by point for the tests."""
import math

import torch


def interpolation_matrix(in_len: int, n_cells: int, s: float) -> torch.Tensor:
    """``(2 n_cells, in_len)``: cell ``c`` of width ``in_len / s`` has its two query points at its
    centre -+ a quarter cell, ``u = (c + 1/4) w - 1/2`` and ``(c + 3/4) w - 1/2`` (pixel-centre
    units), read by linear interpolation with the border held constant outside ``[0, L - 1]``."""
    A = torch.zeros(2 * n_cells, in_len, dtype=torch.float64)
    width = in_len / s
    for c in range(n_cells):
        for k, u in ((2 * c, (c + 0.25) * width - 0.5), (2 * c + 1, (c + 0.75) * width - 0.5)):
            u = min(max(u, 0.0), in_len - 1.0)
            i0 = min(int(math.floor(u)), in_len - 1)
            lam = u - i0
            A[k, i0] += 1.0 - lam
            if lam > 0:
                A[k, i0 + 1] += lam
    return A


def output_size_cases(
    gen: torch.Generator, count: int, max_length: int, max_cells: int, log_range: tuple[float, float]
) -> list[tuple[tuple[int, int], list[float], int]]:
    """``count`` random ``(length, alpha, kind)`` for the output-size rounding of a 2-d layer: ``kind``
    0 puts ``length / alpha`` on (or one rounding away from) a ``k + 1/2`` boundary (``k < max_cells``),
    1 spreads ``alpha`` log-uniformly over ``10 ** log_range`` (far below to far above ``min_size``),
    2 draws ``alpha`` uniformly from [0.3, 4]."""
    cases = []
    for _ in range(count):
        length = tuple(int(v) for v in torch.randint(1, max_length, (2,), generator=gen))
        kind = int(torch.randint(0, 3, (1,), generator=gen))
        if kind == 0:
            alpha = [n / (int(torch.randint(0, max_cells, (1,), generator=gen)) + 0.5) for n in length]
        elif kind == 1:
            alpha = [10 ** float(torch.empty(1).uniform_(*log_range, generator=gen)) for _ in length]
        else:
            alpha = [float(torch.empty(1).uniform_(0.3, 4.0, generator=gen)) for _ in length]
        cases.append((length, alpha, kind))
    return cases
