"""The mindspeed-llm engine's metrics record of one Megatron iteration line: the mcore engine's step time,
tokens/s per device and MFU, plus what only Megatron's line has."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llm.pretrain.mindspeed_llm.megatron_log import parse_line
from llm.pretrain.mindspeed_llm.run import EngineStepMetrics, metrics_of

# MindSpeed-LLM 2.3.0's training_log line (as in test_mindspeed_log.py), with global batch size 64 and 2 s a step
LINE = (
    "[default7]: [2026-11-30 09:26:47] iteration       10/    2000 | consumed samples:          640 | elapsed time "
    "per iteration (ms): 2000.0 | throughput per GPU (TFLOP/s/GPU): 150.5 | core attn ratio (%): 100.0 | learning "
    "rate: 1.250000E-06 | global batch size:    64 | lm loss: 1.602336E+00 | loss scale: 1.0 | grad norm: 1.234 | "
    "number of skipped iterations:   0 | number of nan iterations:   0 |"
)


def plan(global_batch_size=8, seq_length=4096, world_size=16):
    return SimpleNamespace(
        cfg=SimpleNamespace(global_batch_size=global_batch_size, seq_length=seq_length), world_size=world_size
    )


def test_tokens_per_second_and_mfu_of_a_log_line():
    m = metrics_of(parse_line(LINE), plan(), peak_tflops=400.0, flops=3.2e15)
    assert isinstance(m, EngineStepMetrics)
    assert (m.iteration, m.loss, m.lr, m.grad_norm, m.consumed_samples) == (10, 1.602336, 1.25e-6, 1.234, 640)
    assert m.step_time_s == 2.0
    # the log's global batch (64, not the config's 8) × 4096 tokens in 2 s over 16 devices
    assert m.tokens_per_s_per_device == pytest.approx(8192.0)
    # 3.2e15 FLOPs in 2 s over 16 devices of 400 TFLOP/s: 1e14 FLOP/s per device
    assert m.mfu == pytest.approx(0.25)
    assert (m.tflops_per_device, m.loss_scale, m.skipped_iterations, m.nan_iterations) == (150.5, 1.0, 0, 0)


def test_no_mfu_without_a_peak_and_no_record_without_a_loss():
    m = metrics_of(parse_line(LINE), plan(), peak_tflops=None, flops=3.2e15)
    assert m.mfu is None and m.tokens_per_s_per_device == pytest.approx(8192.0)
    no_loss = parse_line(LINE.replace("lm loss: 1.602336E+00 | ", ""))
    assert no_loss is not None and no_loss.loss is None
    assert metrics_of(no_loss, plan(), peak_tflops=400.0, flops=3.2e15) is None
