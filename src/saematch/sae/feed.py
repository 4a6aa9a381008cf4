"""A training feed that keeps the device busy: batches prepared by a background thread.

The thread pulls batches from the activation store's iterator (reading and
shuffling shards, or slicing the layer already held in RAM), copies each into
page-locked (pinned) host memory when the device is a GPU, and queues up to
``depth`` of them.  The consumer copies a batch to the device with
``non_blocking=True``, so the transfer overlaps the previous step's kernels.
The order of the batches is the iterator's, so a feed gives the same training
run as the bare iterator.

``wait_s`` counts the time the consumer spent waiting for a batch (plus the
copy call): its share of the step time is the feed's share, which the
training bench prints.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator

from saematch.devices import pin

_DONE = object()


def _each(item: Any, fn: Any) -> Any:
    """``fn`` applied to a tensor, or to each tensor of a list or tuple (aligned batches of several models)."""
    return type(item)(fn(t) for t in item) if isinstance(item, (list, tuple)) else fn(item)


class Prefetcher:
    """Iterate ``source`` on a daemon thread; yield its batches (a tensor, or a list of tensors) on ``device``."""

    def __init__(self, source: Iterator[Any], device: str = "cpu", depth: int = 4):
        self.device, self.wait_s, self.n = device, 0.0, 0
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True, name="saematch-feed")
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, source: Iterator[Any]) -> None:
        try:
            for batch in source:
                if not self._put(_each(batch, lambda t: pin(t, self.device))):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Any:
        t = time.perf_counter()
        item = self._q.get()
        if item is _DONE:
            self._q.put(_DONE)
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        out = _each(item, lambda t: t.to(self.device, non_blocking=True))
        self.wait_s += time.perf_counter() - t
        self.n += 1
        return out

    def close(self) -> None:
        """Stop the thread (it exits at its next queue operation)."""
        self._stop.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
