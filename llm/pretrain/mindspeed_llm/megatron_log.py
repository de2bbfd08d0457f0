"""Megatron's iteration log line, as ``training_log`` prints it on the last rank every ``--log-interval`` steps.

One format, grown over the versions the stacks pin (``megatron/training.py`` at bcce6f; ``megatron/training/
training.py`` at core_r0.8.0 baf94af and core_v0.12.1 a845aa7; MindSpeed-LLM 2.3.0 / 26.0.0 and MindSpeed's TFLOPs
feature print their own copy of it)::

    [2025-07-16 17:46:46] iteration       10/    2000 | consumed samples:          640 | elapsed time per
    iteration (ms): 5213.4 | throughput per GPU (TFLOP/s/GPU): 201.7 | learning rate: 1.250000E-06 | global batch
    size:    64 | lm loss: 1.602336E+00 | loss scale: 1.0 | grad norm: 1.234 | number of skipped iterations:   0 |
    number of nan iterations:   0 |

``|``-separated ``key: value`` fields after ``iteration N/M``; the date prefix (core_r0.8.0 on), ``skipped
samples``, ``decoupled learning rate``, ``core attn ratio (%)`` (MindSpeed-LLM 2.3.0 on) and MindSpeed's
``theoretical`` / ``actual throughput per NPU (TFLOP/s/NPU)`` come and go, so fields are read by name. Torchrun's
``[default7]:`` prefixes (``--tee``) are allowed. Light: no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ITERATION = re.compile(r"(?:^|[\s\]:])iteration\s+(\d+)\s*/\s*(\d+)\s*\|")
# TFLOP/s per device, best first: what the device did (MindSpeed), Megatron's count, MindSpeed's model count.
THROUGHPUT_KEYS = (
    "actual throughput per NPU (TFLOP/s/NPU)",
    "throughput per GPU (TFLOP/s/GPU)",
    "theoretical throughput per NPU (TFLOP/s/NPU)",
)


@dataclass
class IterationLog:
    iteration: int
    train_iters: int
    fields: dict[str, str] = field(default_factory=dict)  # every ``key: value`` of the line, as printed

    def number(self, key: str) -> float | None:
        value = self.fields.get(key)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    @property
    def losses(self) -> dict[str, float]:
        """Every loss the line reports (``lm loss``; MoE and MTP runs add more), by name."""
        out = {}
        for key in self.fields:
            if key.endswith("loss") and key != "loss scale":
                value = self.number(key)
                if value is not None:
                    out[key] = value
        return out

    @property
    def loss(self) -> float | None:
        losses = self.losses
        return losses.get("lm loss", next(iter(losses.values()), None))

    @property
    def elapsed_ms(self) -> float | None:
        return self.number("elapsed time per iteration (ms)")

    @property
    def tflops_per_device(self) -> float | None:
        for key in THROUGHPUT_KEYS:
            if key in self.fields:
                return self.number(key)
        return None

    @property
    def learning_rate(self) -> float | None:
        return self.number("learning rate")

    @property
    def grad_norm(self) -> float | None:
        return self.number("grad norm")

    @property
    def loss_scale(self) -> float | None:
        return self.number("loss scale")

    @property
    def consumed_samples(self) -> int | None:
        value = self.number("consumed samples")
        return None if value is None else int(value)

    @property
    def global_batch_size(self) -> int | None:
        value = self.number("global batch size")
        return None if value is None else int(value)

    @property
    def skipped_iterations(self) -> int | None:
        value = self.number("number of skipped iterations")
        return None if value is None else int(value)

    @property
    def nan_iterations(self) -> int | None:
        value = self.number("number of nan iterations")
        return None if value is None else int(value)


def parse_line(line: str) -> IterationLog | None:
    """The iteration log line's fields, or None for any other line."""
    m = ITERATION.search(line)
    if m is None:
        return None
    log = IterationLog(int(m.group(1)), int(m.group(2)))
    for part in line[m.end() :].split("|"):
        key, sep, value = part.partition(":")
        if sep and key.strip():
            log.fields[key.strip()] = value.strip()
    if log.elapsed_ms is None:  # "iteration" in some other message
        return None
    return log
