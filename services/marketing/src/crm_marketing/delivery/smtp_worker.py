"""E-mail sent from a process of its own: the SMTP conversation, fed over a pipe by the sender.

Why: the sender's process also claims, renders templates, builds messages and records what
happened. In one process, a server reply that comes while the event loop is busy composing waits
for it, and on a busy machine that process (which uses more CPU) is woken later; every message's
four SMTP round trips pay for both. The worker does nothing but the SMTP conversation (with the
same ``SmtpSender``, on uvloop), so the connection is driven like a bare client loop, while the
sender's process composes and records the next messages at the same time.

Protocol, in order both ways. A frame: 4-byte big-endian length of a JSON header, 4-byte length
of a payload, the header, the payload.

- sender → worker, first: ``{"url": SMTP URL, "timeout": seconds, "parent": pid}`` (not on the
  command line: the URL may carry credentials);
- sender → worker, per message: ``{"from": envelope sender, "to": recipient}`` + the message;
- worker → sender, per message: ``{"outcome": ..., "code": ..., "reason": ...}`` (a
  ``SendResult``; reasons are scrubbed of the address as ``SmtpSender`` does);
- end of input: the worker quits its SMTP connection and exits.

Exactly once: the worker dies with the sender's process (``PR_SET_PDEATHSIG`` on Linux, and it
checks its parent before every message), so messages a killed sender had handed over but that
were not sent yet are never sent by an orphan: they stay ``sending`` and go out again after
their lease, with the same Message-ID, like any other claimed message. If the worker itself
dies, the messages it had are in doubt the same way (``WorkerLost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import sys
from collections import deque
from typing import Any

from crm_marketing.delivery.smtp import Outcome, SendResult, SmtpSender

log = logging.getLogger(__name__)

_LENGTHS = struct.Struct("!II")
DEPTH = 48  # messages handed to the worker and not answered yet, at most
CHUNK = 8  # messages written to the worker at once (one wake-up of it for many)
LOW = 8  # fewer than this written and unanswered: write what is waiting at once
ANSWERS = 8  # answers the worker writes at once while it has more messages in hand
IDLE = 120.0  # seconds without messages after which the worker exits (started again if needed)


class WorkerLost(Exception):
    """The worker stopped before answering: whether the message went out is not known."""


def frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return _LENGTHS.pack(len(head), len(payload)) + head + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """The next frame; ``asyncio.IncompleteReadError`` at the end of the input."""
    head_len, payload_len = _LENGTHS.unpack(await reader.readexactly(_LENGTHS.size))
    header = json.loads(await reader.readexactly(head_len))
    if not isinstance(header, dict):
        raise ValueError("a frame header must be an object")
    payload = await reader.readexactly(payload_len) if payload_len else b""
    return header, payload


def _result(header: dict[str, Any]) -> SendResult:
    code = header.get("code")
    return SendResult(
        Outcome(header["outcome"]),
        int(code) if code is not None else None,
        str(header.get("reason") or ""),
    )


class _Link:
    """One worker process and the messages it has not answered yet, in order."""

    def __init__(self, proc: asyncio.subprocess.Process, loop: asyncio.AbstractEventLoop) -> None:
        self.proc = proc
        self.loop = loop
        self.pending: deque[asyncio.Future[SendResult]] = deque()
        self.out: list[bytes] = []  # frames not written yet (of the newest pending)
        self.reader: asyncio.Task[None] | None = None
        self.closing = False  # no more messages: its input is closed (or it is killed)

    @property
    def written(self) -> int:
        """Messages written to the worker and not answered yet."""
        return len(self.pending) - len(self.out)

    @property
    def usable(self) -> bool:
        return not self.closing and self.reader is not None and not self.reader.done()

    async def push(self) -> None:
        if not self.out or self.closing or self.proc.stdin is None:
            return
        data = b"".join(self.out)
        self.out.clear()
        self.proc.stdin.write(data)
        with contextlib.suppress(ConnectionError):  # it died: the reader fails what it had
            await self.proc.stdin.drain()

    def end_input(self) -> None:
        """It finishes what it was given (nothing, when idle), quits SMTP and exits."""
        self.closing = True
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def kill(self) -> None:
        self.closing = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def fail_pending(self) -> None:
        if self.pending:
            log.warning(
                "the SMTP worker stopped; its messages are in doubt",
                extra={"messages": len(self.pending)},
            )
        self.out.clear()
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(WorkerLost())


class SmtpWorker:
    """The sender's side: hands messages to the worker process (started when first needed,
    again after it died, and ended after ``idle`` seconds without messages) and gets each one's
    ``SendResult`` back, in order.

    ``submit`` returns at once with a future (it waits only while ``depth`` messages are
    unanswered), so the caller composes the next message while this one is on the wire.
    Messages are written to the worker a few at a time (``CHUNK``), at once while it has few
    in hand (``LOW``), and it answers a few at a time while it has more to send: fewer
    wake-ups of both processes, none of the worker's while it is low on work.
    """

    def __init__(
        self,
        smtp_url: str,
        *,
        timeout: float = 30.0,
        depth: int = DEPTH,
        chunk: int = CHUNK,
        idle: float = IDLE,
    ) -> None:
        SmtpSender(smtp_url, timeout=timeout)  # the same checks of the URL, here and now
        self.smtp_url = smtp_url
        self.timeout = timeout
        self.depth = depth
        self.chunk = chunk
        self.idle = idle
        self._link: _Link | None = None
        self._room: asyncio.Event | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int | None:
        """The worker process's, while one runs."""
        link = self._link
        return link.proc.pid if link is not None and link.usable else None

    async def submit(
        self, sender: str, recipient: str, message: bytes, *, at_once: bool = False
    ) -> asyncio.Future[SendResult]:
        """Hand a message over; the future has its result, or ``WorkerLost``. ``at_once``:
        write it (and what waits) to the worker now rather than with the next ones."""
        link = await self._usable()
        while len(link.pending) >= self.depth:
            room = self._room = asyncio.Event()
            await room.wait()
            link = await self._usable()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        fut: asyncio.Future[SendResult] = link.loop.create_future()
        link.pending.append(fut)
        link.out.append(frame({"from": sender, "to": recipient}, message))
        if at_once or len(link.out) >= self.chunk or link.written < LOW:
            await link.push()
        return fut

    async def flush(self) -> None:
        """Wait until every message handed over is answered (or lost)."""
        link = self._link
        if link is None:
            return
        await link.push()
        while link.pending:
            await asyncio.wait([link.pending[-1]])

    async def close(self) -> None:
        """Let the worker finish what it has, quit its connection and exit."""
        link, self._link = self._link, None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if link is None:
            return
        if link.loop is not asyncio.get_running_loop():
            link.kill()  # of an event loop that is gone: what it had is in doubt
            return
        await link.push()
        link.end_input()
        try:
            await asyncio.wait_for(link.proc.wait(), self.timeout + 5)
        except TimeoutError:
            link.kill()
        if link.reader is not None:
            await link.reader

    async def _usable(self) -> _Link:
        loop = asyncio.get_running_loop()
        link = self._link
        if link is not None and link.loop is not loop:  # started on another (gone) loop
            link.kill()
            link = None
        if link is not None and link.usable:
            return link
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(
            frame({"url": self.smtp_url, "timeout": self.timeout, "parent": os.getpid()})
        )
        link = self._link = _Link(proc, loop)
        link.reader = asyncio.create_task(self._read(link))
        return link

    async def _read(self, link: _Link) -> None:
        stdout = link.proc.stdout
        assert stdout is not None
        try:
            while True:
                header, _ = await read_frame(stdout)
                fut = link.pending.popleft()
                if not fut.done():
                    fut.set_result(_result(header))
                if self._room is not None:
                    self._room.set()
                if link.out and link.written < LOW:
                    await link.push()  # it runs low
                if not link.pending and link is self._link:
                    self._arm_idle(link)
        except asyncio.IncompleteReadError:
            pass  # it exited
        except asyncio.CancelledError:  # the event loop is shutting down
            link.kill()
            link.fail_pending()
            with contextlib.suppress(TimeoutError):  # reaped: its transport closes with it
                await asyncio.wait_for(link.proc.wait(), 5)
            raise
        except Exception:
            log.exception("the SMTP worker's answers cannot be read")
            link.kill()
        link.closing = True
        link.fail_pending()
        if self._room is not None:
            self._room.set()
        await link.proc.wait()

    def _arm_idle(self, link: _Link) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()

        def idle() -> None:
            self._idle_timer = None
            if link is self._link and not link.pending:
                self._link = None
                link.end_input()

        self._idle_timer = link.loop.call_later(self.idle, idle)


# -- the worker process ---------------------------------------------------------------------------


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux); elsewhere the check before every
    message is what stops an orphan."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Input(asyncio.Protocol):
    """The worker's input, cut into frames as it comes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.frames: deque[tuple[dict[str, Any], bytes]] = deque()
        self.ended = False
        self.ready = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= _LENGTHS.size:
            head_len, payload_len = _LENGTHS.unpack_from(self.buffer)
            end = _LENGTHS.size + head_len + payload_len
            if len(self.buffer) < end:
                break
            header = json.loads(self.buffer[_LENGTHS.size : _LENGTHS.size + head_len])
            payload = bytes(self.buffer[_LENGTHS.size + head_len : end])
            del self.buffer[:end]
            self.frames.append((header, payload))
        self.ready.set()

    def eof_received(self) -> bool:
        self.ended = True
        self.ready.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.ready.set()

    async def next(self) -> tuple[dict[str, Any], bytes] | None:
        """The next frame; None at the end of the input."""
        while not self.frames:
            if self.ended:
                return None
            self.ready.clear()
            await self.ready.wait()
        return self.frames.popleft()


async def serve(stdin: int, stdout: int) -> None:
    loop = asyncio.get_running_loop()
    source = _Input()
    await loop.connect_read_pipe(lambda: source, os.fdopen(stdin, "rb", buffering=0))
    config = await source.next()
    if config is None:
        return
    parent = int(config[0]["parent"])
    if os.getppid() != parent:
        return  # the sender is gone already
    smtp = SmtpSender(str(config[0]["url"]), timeout=float(config[0]["timeout"]))
    answers: list[bytes] = []
    try:
        while True:
            if not source.frames or len(answers) >= ANSWERS:
                _write_all(stdout, b"".join(answers))  # before waiting: the sender may wait
                answers.clear()
            item = await source.next()
            if item is None:
                break  # the sender is done with us
            if os.getppid() != parent:
                os._exit(1)  # an orphan never sends: the message stays claimed, sent later
            header, message = item
            result = await smtp.send(str(header["from"]), str(header["to"]), message)
            answer = {"outcome": result.outcome.value, "code": result.code, "reason": result.reason}
            answers.append(frame(answer))
    finally:
        _write_all(stdout, b"".join(answers))
        await smtp.close()


def main() -> None:
    _die_with_parent()
    # Answers go to a descriptor of their own; anything printed by mistake goes to stderr.
    out = os.dup(1)
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # uvloop, as the services run on: the worker's own cost per message is part of every
    # message's SMTP round trips (asyncio's default loop: about 370 µs of CPU, uvloop: 245).
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform uvloop does not support
        asyncio.run(serve(0, out))
    else:
        uvloop.run(serve(0, out))


if __name__ == "__main__":
    main()
