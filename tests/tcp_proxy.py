"""A loopback TCP proxy for fault tests: put it between a client and a real redis-server.

It runs in the test's own event loop. Knobs, changeable at any time:
- `delay`: seconds added before each chunk of the server's reply is passed on (a slow Redis);
- `blackhole`: requests are read and dropped, nothing is answered (a hung Redis);
- `refuse`: new connections are closed as soon as they are accepted;
- `drop()`: cut every open connection now (a network blip).
`accepted` counts connection attempts and `forwarded` the chunks of requests passed on, so a
test can show that a client stopped trying.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target, with a delay, a blackhole or dropped connections."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay = 0.0
        self.blackhole = False
        self.refuse = False
        self.accepted = 0
        self.forwarded = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def drop(self) -> None:
        """Close every open connection, both sides; new ones are accepted as usual."""
        writers, self._writers = self._writers, set()
        for writer in writers:
            writer.close()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, reply=False)),
            asyncio.create_task(self._pump(up_reader, writer, reply=True)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, reply: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if self.blackhole:
                    continue
                if reply and self.delay > 0:
                    await asyncio.sleep(self.delay)
                elif not reply:
                    self.forwarded += 1
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()
            self._writers.discard(dst)
