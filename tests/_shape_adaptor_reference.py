"""The authors' Shape Adaptor (Liu et al., ECCV 2020), transcribed line by line for the tests.

Their ``ShapeAdaptor(input1, input2, alpha, residual, r1, r2)`` from its published formulas; their
class attributes ``type``, ``current_dim`` and ``penalty`` (reset by the network at the start of each
forward pass) are the fields of :class:`AuthorsState`.
"""
import torch
import torch.nn.functional as F


class AuthorsState:
    def __init__(self, mode: str, input_dim: int, penalty: float = 1.0):
        self.type, self.current_dim, self.penalty = mode, input_dim, penalty


def authors_shape_adaptor(state, input1, input2, alpha, residual=False, r1=0.5, r2=1.0):
    sigmoid_alpha = torch.sigmoid(alpha) * state.penalty + r1 / (r2 - r1) * (state.penalty - 1)
    s_alpha = (r2 - r1) * sigmoid_alpha.item() + r1
    if state.type == "local":
        state.current_dim = int(state.current_dim * s_alpha)
        dim = 1 if state.current_dim < 1 else state.current_dim
    else:  # "global"
        state.current_dim = state.current_dim * s_alpha
        dim = 1 if state.current_dim < 1 else round(state.current_dim)
    input1_rs = F.interpolate(input1, size=dim, mode="bilinear", align_corners=True)
    input2_rs = F.interpolate(input2, size=dim, mode="bilinear", align_corners=True)
    if residual:
        return 2 * (1 - sigmoid_alpha) * input1_rs + 2 * sigmoid_alpha * input2_rs
    return (1 - sigmoid_alpha) * input1_rs + sigmoid_alpha * input2_rs


def assert_same_values_and_grads(y: torch.Tensor, ref: torch.Tensor, ours: list, theirs: list) -> None:
    """``y == ref``, and the gradients of one random projection of each agree: ``d/d ours`` (e.g. the
    input and poolarch's alpha) against ``d/d theirs`` (the same input and the transcription's alpha)."""
    torch.testing.assert_close(y, ref)
    w = torch.randn_like(y)
    got = torch.autograd.grad((y * w).sum(), ours)
    want = torch.autograd.grad((ref * w).sum(), theirs)
    for g, r in zip(got, want):
        torch.testing.assert_close(g.reshape(r.shape), r)
