"""SIGTERM during pretrain: finish the step, save a checkpoint, stop, as Megatron-LM's `--exit-signal-handler`
does (megatron/training/dist_signal_handler.py, core_r0.12.0): every rank notes the signal, and after each step
the ranks agree (an all-reduce of one flag) so that all of them save the same iteration and stop together.

`docker stop` (what `invoke run` does when it is itself stopped) and torchrun's agent both end a run with
SIGTERM, then SIGKILL after a grace period; the save has to fit in that period."""

from __future__ import annotations

import signal
import threading


class StopSignal:
    """``with StopSignal() as stop:`` ... ``if stop.agreed(device): save and break``."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _note(self, signum, _frame) -> None:
        self.received = signum

    def agreed(self, device) -> bool:
        """Whether any rank has received SIGTERM (a collective: every rank calls it after every step)."""
        import torch
        import torch.distributed as torch_dist

        flag = torch.tensor([1 if self.received is not None else 0], dtype=torch.int32, device=device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return bool(flag.item())


class Terminated(Exception):
    """Raised by every rank at the same step after a SIGTERM, once the checkpoint is saved."""

    EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended: the run did not finish

    def __init__(self, iteration: int) -> None:
        super().__init__(f"stopped by SIGTERM after iteration {iteration}")
        self.iteration = iteration
