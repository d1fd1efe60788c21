from __future__ import annotations

import math

import pytest
import torch

from cheeger.run.schedules import constant_lr, cosine_lr, poly_lr


def lrs(factory, steps, **kw):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = factory(opt, total_steps=steps, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_poly_follows_formula():
    values = lrs(poly_lr, 10, power=2.0)
    assert values == pytest.approx([(1 - t / 10) ** 2 for t in range(10)])


def test_warmup_then_cosine_to_min():
    def cosine(t):
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 20))

    values = lrs(cosine_lr, 20, min_ratio=0.1, warmup_steps=4)
    assert values[:4] == pytest.approx([(t + 1) / 4 * cosine(t) for t in range(4)])
    assert values[4:] == pytest.approx([cosine(t) for t in range(4, 20)])
    assert lrs(constant_lr, 5) == pytest.approx([1.0] * 5)


def test_bad_arguments():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        poly_lr(opt, total_steps=10, warmup_steps=-1)
    with pytest.raises(ValueError, match="total_steps"):
        cosine_lr(opt, total_steps=0)
