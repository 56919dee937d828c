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
