"""Fixed, untrained post-processing of a model's scores at evaluation time.

:class:`ImageDiffusion` (the ``postprocess`` config group) is the control that a
learned spectral refinement has to beat: the softmax of any head's logits is diffused
on a bilateral window graph of the input image (``cheeger.ops.grid.grid_graph`` with
no metric, colour bandwidth ``sigma``) by personalised-PageRank propagation
(``cheeger.ops.propagation``), q <- (1 - β) p + β D^-1 W q, and log q is returned as the
new logits. Nothing is learned, so it runs only in evaluation (validation, test,
predict); training sees the head's own logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cheeger.ops.grid import grid_graph
from cheeger.ops.propagation import pagerank_propagate


class ImageDiffusion(nn.Module):
    """Image-guided PageRank diffusion of class probabilities (module docstring).

    Args:
        radius: window radius of the image graph (pixels).
        sigma: colour bandwidth on the normalised image.
        beta: share taken from the neighbours per step, in [0, 1).
        iterations: propagation steps.

    Shapes:
        forward(logits (B, K, H, W), image (B, 3, H, W)) -> logits (B, K, H, W)
    """

    def __init__(
        self, radius: int = 2, sigma: float = 0.1, beta: float = 0.98, iterations: int = 50
    ) -> None:
        super().__init__()
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ValueError(f"postprocess.radius must be an int >= 1, found {radius!r}")
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"postprocess.sigma must be a number > 0, found {sigma!r}")
        if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
            raise ValueError(f"postprocess.beta must be in [0, 1), found {beta!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"postprocess.iterations must be an int >= 0, found {iterations!r}")
        self.radius = radius
        self.sigma = float(sigma)
        self.beta = float(beta)
        self.iterations = iterations

    @torch.no_grad()
    def forward(self, logits: Tensor, image: Tensor) -> Tensor:
        if image.shape[0] != logits.shape[0] or image.shape[-2:] != logits.shape[-2:]:
            raise ValueError(
                f"postprocess needs logits (B, K, H, W) and an image of the same B, H, W; "
                f"found {tuple(logits.shape)} and {tuple(image.shape)}"
            )
        batch, classes, height, width = logits.shape
        graph = grid_graph(image.float(), self.radius, self.sigma)
        p = logits.float().softmax(dim=1).flatten(2).transpose(1, 2)
        q = pagerank_propagate(graph, p, self.beta, self.iterations)
        q = q.transpose(1, 2).reshape(batch, classes, height, width)
        return q.clamp_min(torch.finfo(q.dtype).tiny).log().to(logits.dtype)
