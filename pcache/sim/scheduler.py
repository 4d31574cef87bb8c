"""Admission control: at most ``max_num_seqs`` running, the rest wait in FIFO order for blocks and a slot."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from pcache.sim.cache import Allocation, PrefixCache

__all__ = ["Scheduler"]


@dataclass(slots=True)
class _Ticket:
    prompt_hashes: list[int]
    prompt_tokens: int
    total_tokens: int
    future: asyncio.Future[Allocation]


class Scheduler:
    """vLLM-like FIFO scheduling over a shared :class:`PrefixCache`.

    The head of the queue is admitted as soon as there is a free sequence slot and its blocks fit;
    nothing behind it overtakes (vLLM's FCFS policy), so a large request makes the others wait.
    """

    def __init__(self, cache: PrefixCache, max_num_seqs: int) -> None:
        self.cache = cache
        self.max_num_seqs = max_num_seqs
        self.running = 0
        self._waiting: deque[_Ticket] = deque()

    @property
    def waiting(self) -> int:
        """Requests queued for admission."""
        return len(self._waiting)

    async def admit(self, prompt_hashes: list[int], prompt_tokens: int, total_tokens: int) -> Allocation:
        """Wait for this request's turn and return its block allocation (counted as running)."""
        loop = asyncio.get_running_loop()
        ticket = _Ticket(prompt_hashes, prompt_tokens, total_tokens, loop.create_future())
        self._waiting.append(ticket)
        self._pump()
        try:
            return await ticket.future
        except asyncio.CancelledError:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                self._pump()
            elif ticket.future.done() and not ticket.future.cancelled():
                self.finish(ticket.future.result())
            raise

    def finish(self, allocation: Allocation) -> None:
        """A running request ended (any way): free its slot and blocks, admit whoever is next."""
        if allocation.released:
            return
        self.cache.release(allocation)
        self.running -= 1
        self._pump()

    def _pump(self) -> None:
        while self._waiting and self.running < self.max_num_seqs:
            head = self._waiting[0]
            allocation = self.cache.allocate(head.prompt_hashes, head.prompt_tokens, head.total_tokens)
            if allocation is None:
                return
            self._waiting.popleft()
            self.running += 1
            head.future.set_result(allocation)

    def abort_all(self, error: BaseException) -> None:
        """Fail every waiting request (restart, shutdown)."""
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.future.done():
                ticket.future.set_exception(error)
