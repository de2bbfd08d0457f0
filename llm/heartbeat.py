"""Notice a lost node fast, and say which ranks were lost.

A collective blocked on a vanished peer fails only when the process-group timeout expires (Megatron
uses 10 minutes), and the error names a socket, not a rank. So every worker of a multi-process run
keeps a heartbeat in the rendezvous store torchrun already runs (``MASTER_ADDR:MASTER_PORT``): a
counter per rank it bumps every ``interval`` seconds, beside the rank's node and host. A watchdog
thread reads all counters; once a counter has not moved for ``timeout`` seconds, every rank silent
for half that long is lost (a node's ranks die together), and the worker prints which ranks (and on
which node) and exits with status 1 -- even if its main thread is stuck in a collective. A rank
that finishes cleanly marks itself done and is never counted as lost. Counters, not timestamps, so clocks of
different nodes do not matter. If the store itself stops answering, the master node (node 0, which hosts it) is
the one lost.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from datetime import timedelta

EXIT_LOST_PEER = 1
_ACTIVE: Heartbeat | None = None


class Heartbeat:
    def __init__(self, rank: int, world_size: int, interval: float = 2.0, timeout: float = 30.0):
        self.rank, self.world_size = rank, world_size
        self.interval, self.timeout = interval, timeout
        run = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self.prefix = f"npubox/heartbeat/{run}"
        self.store = None
        self.verdict: str | None = None
        self.where: dict[int, str] | None = None  # rank -> "node N (host)", once every rank has beaten
        self._stop = threading.Event()

    def start(self) -> None:
        import torch.distributed as torch_dist

        self.store = torch_dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=timedelta(seconds=self.timeout),
            wait_for_workers=False,
        )
        node = os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "?"))
        self.store.set(f"{self.prefix}/where/{self.rank}", f"node {node} ({socket.gethostname()})")
        self.store.add(f"{self.prefix}/beat/{self.rank}", 1)
        threading.Thread(target=self._run, name="npubox-heartbeat", daemon=True).start()

    def stop(self) -> None:
        """A clean exit: mark this rank done, so peers still working do not count it as lost."""
        self._stop.set()
        try:
            self.store.set(f"{self.prefix}/done/{self.rank}", "1")
        except Exception:
            pass

    def _where(self, rank: int) -> str:
        try:
            return self.store.get(f"{self.prefix}/where/{rank}").decode()
        except Exception:
            return "node ?"

    def _run(self) -> None:
        last_value = [0] * self.world_size
        last_change = [time.monotonic()] * self.world_size
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            try:
                self.store.add(f"{self.prefix}/beat/{self.rank}", 1)
                values = [self.store.add(f"{self.prefix}/beat/{r}", 0) for r in range(self.world_size)]
            except Exception as e:
                master = self.where[0] if self.where else "node 0"
                ranks = sorted(r for r, w in self.where.items() if w == master) if self.where else [0]
                self._lost(
                    f"lost rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} on {master}: the "
                    f"rendezvous store it hosts at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
                    f"stopped answering ({type(e).__name__})"
                )
                return
            if self.where is None and all(values):
                self.where = {r: self._where(r) for r in range(self.world_size)}
            for r, v in enumerate(values):
                if v != last_value[r]:
                    last_value[r], last_change[r] = v, now
            if max(now - t for t in last_change) <= self.timeout:
                continue
            # Someone is past the timeout; a node's ranks die together but their last beats differ
            # by up to an interval, so name every rank silent for half the timeout.
            silent = [r for r in range(self.world_size) if now - last_change[r] > self.timeout / 2]
            try:
                lost = [r for r in silent if not self.store.check([f"{self.prefix}/done/{r}"])]
            except Exception:
                lost = silent
            if lost:
                where = sorted({self._where(r) for r in lost})
                self._lost(
                    f"lost rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} on {', '.join(where)}: "
                    f"no heartbeat for {self.timeout:g} s"
                )
                return

    def _lost(self, message: str) -> None:
        if self._stop.is_set():
            return
        self.verdict = message
        print(f"error: rank {self.rank}: {message}; exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_LOST_PEER)

    def explain_failure(self) -> None:
        """After a collective raised: give the watchdog time to name a lost peer (it exits the
        process if it finds one); return if everyone is still alive."""
        deadline = time.monotonic() + self.timeout + 3 * self.interval
        while time.monotonic() < deadline and self.verdict is None:
            time.sleep(self.interval / 2)


def start_heartbeat(rank: int, world_size: int, timeout: float | None = None) -> Heartbeat | None:
    """Start the watchdog for a multi-process run (``$NPUBOX_HEARTBEAT_TIMEOUT`` seconds, default 30)."""
    global _ACTIVE
    if world_size <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    timeout = timeout or float(os.environ.get("NPUBOX_HEARTBEAT_TIMEOUT", "30"))
    hb = Heartbeat(rank, world_size, interval=max(0.5, timeout / 15), timeout=timeout)
    hb.start()
    _ACTIVE = hb
    return hb


def stop_heartbeat() -> None:
    global _ACTIVE
    if _ACTIVE is not None:
        _ACTIVE.stop()
        _ACTIVE = None


def explain_failure() -> None:
    if _ACTIVE is not None:
        _ACTIVE.explain_failure()
