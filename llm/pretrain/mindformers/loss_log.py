"""MindFormers' step line, as its ``MFLossMonitor`` callback logs it on each worker
(mindformers/core/callback/callback.py @ v1.3.2 and @ r1.8.0)::

    ... - INFO - { Epoch:[  1/  1], step:[    3/   12], loss:[11.649811/11.788661], per_step_time: 3245ms,
    lr: 0.0009397115, overflow cond: False, loss_scale: 1.0, global_norm: [4.87], train_throughput_per_npu: 0.005T

In data-sink mode the loss is one number (``loss: 11.650``) and the step counts sink steps; without a learning rate
the ``lr:`` field is left out. ``step`` counts within the epoch. Light: no MindSpore."""

from __future__ import annotations

import re
from dataclasses import dataclass

LINE = re.compile(
    r"\{ Epoch:\[\s*(\d+)/\s*(\d+)\], step:\[\s*(\d+)/\s*(\d+)\], loss:\s*\[?\s*([-+.\deEnaif]+)"
    r"(?:/[^\]]*\])?, per_step_time: (\d+)ms(?:, lr: ([-+.\deE]+))?"
)
GLOBAL_NORM = re.compile(r"global_norm: \[?([-+.\deE]+)")


@dataclass(frozen=True)
class StepLine:
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    loss: float
    step_time_s: float
    lr: float | None
    grad_norm: float | None

    @property
    def iteration(self) -> int:
        return (self.epoch - 1) * self.steps_per_epoch + self.step

    @property
    def total(self) -> int:
        return self.epochs * self.steps_per_epoch


def parse_line(line: str) -> StepLine | None:
    m = LINE.search(line)
    if m is None:
        return None
    norm = GLOBAL_NORM.search(line, m.end())
    return StepLine(
        epoch=int(m.group(1)),
        epochs=int(m.group(2)),
        step=int(m.group(3)),
        steps_per_epoch=int(m.group(4)),
        loss=float(m.group(5)),
        step_time_s=int(m.group(6)) / 1000,
        lr=float(m.group(7)) if m.group(7) else None,
        grad_norm=float(norm.group(1)) if norm else None,
    )
