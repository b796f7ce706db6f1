"""orgo for asyncio: `build`, `launch`, `connect` and `Client` as coroutines.

The names mirror the `orgo` module's, so an asyncio program switches with
its imports::

    import orgo.aio

    async def main():
        async with await orgo.aio.launch(template) as c:   # or orgo.aio.Client(url, key).launch(...)
            r = await c.exec("make test", on_stdout=print)

How it works (and why): each call runs the blocking call of the `orgo`
module (which releases the GIL) in a worker thread with
`asyncio.to_thread`, so the event loop goes on. Callbacks (`on_log`,
`on_stdout`, `on_stderr`) run on the event loop's thread, not the worker's:
the worker hands each one to the loop (`asyncio.run_coroutine_threadsafe`)
and waits for it, so they run in order, may be plain functions or
coroutine functions, and an exception they raise is raised by the awaited
call as in the blocking API (the command or build runs to its end first).
Cancelling the awaiting task does not stop the work in its thread: the
command goes on running (give it a `timeout`). Calls at once are bounded by
the loop's default executor (`loop.set_default_executor` raises it).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, Mapping, Optional, Sequence, Union

import orgo

if TYPE_CHECKING:
    from orgo import _PortMapping, _Published, _TemplateSummary

__all__ = ["Client", "Computer", "build", "connect", "launch"]

_Template = Union["orgo.Template", str, "os.PathLike[str]"]
_Content = Union[str, bytes, bytearray, memoryview]
_Callback = Optional[Callable[[Any], Union[None, Awaitable[None]]]]


def _on_loop(callback: _Callback, loop: asyncio.AbstractEventLoop) -> Optional[Callable[[Any], None]]:
    """`callback`, called from a worker thread: run on `loop`, waited for."""
    if callback is None:
        return None
    if not callable(callback):
        return callback  # the blocking call raises its TypeError

    async def run(arg: Any) -> None:
        result = callback(arg)
        if inspect.isawaitable(result):
            await result

    def call(arg: Any) -> None:
        asyncio.run_coroutine_threadsafe(run(arg), loop).result()

    return call


class Computer:
    """A computer for asyncio: an `orgo.Computer` (from `orgo.aio.launch`
    or `connect`) or an `orgo.RemoteComputer` (from `orgo.aio.Client`),
    with its calls as coroutines. `sync` is the blocking handle, for the
    calls this class does not wrap (the desktop's, `egress_learned`)."""

    def __init__(self, computer: Union["orgo.Computer", "orgo.RemoteComputer"]) -> None:
        self._computer = computer

    @property
    def sync(self) -> Union["orgo.Computer", "orgo.RemoteComputer"]:
        """The blocking handle this wraps."""
        return self._computer

    @property
    def id(self) -> str:
        """The computer's id (`c-` and 12 hex digits)."""
        return self._computer.id

    @property
    def template(self) -> str:
        """The template it was launched from."""
        return self._computer.template

    @property
    def cpu(self) -> int:
        """Its vCPUs."""
        return self._computer.cpu

    @property
    def memory_mib(self) -> int:
        """Its memory in MiB."""
        return self._computer.memory_mib

    @property
    def ports(self) -> List[_PortMapping]:
        """Its forwarded ports, as the blocking handle gives them."""
        return self._computer.ports

    @property
    def closed(self) -> bool:
        """`True` once `stop()` or `detach()` was called on this handle."""
        return self._computer.closed

    async def exec(
        self,
        cmd: Union[str, Sequence[str]],
        *,
        timeout: Optional[float] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        input: Optional[_Content] = None,
        on_stdout: _Callback = None,
        on_stderr: _Callback = None,
    ) -> "orgo.ExecResult":
        """`Computer.exec`; `on_stdout`/`on_stderr` (functions or coroutine
        functions) get the `str` chunks on the event loop as they come."""
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(
            self._computer.exec,
            cmd,
            timeout=timeout,
            user=user,
            cwd=cwd,
            env=env,
            input=input,
            on_stdout=_on_loop(on_stdout, loop),
            on_stderr=_on_loop(on_stderr, loop),
        )

    async def write_file(self, path: str, content: _Content, mode: Optional[int] = None) -> None:
        """`Computer.write_file`."""
        await asyncio.to_thread(self._computer.write_file, path, content, mode)

    async def read_file(self, path: str) -> bytes:
        """`Computer.read_file`."""
        return await asyncio.to_thread(self._computer.read_file, path)

    async def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """`Computer.read_text`."""
        return await asyncio.to_thread(self._computer.read_text, path, encoding, errors)

    async def stop(self) -> Optional[str]:
        """`Computer.stop`: returns what `on_shutdown` printed."""
        return await asyncio.to_thread(self._computer.stop)

    async def detach(self) -> None:
        """`Computer.detach`: leaves the computer running."""
        await asyncio.to_thread(self._computer.detach)

    async def __aenter__(self) -> "Computer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stops the computer, unless it was stopped or detached."""
        if not self._computer.closed:
            await self.stop()

    def __repr__(self) -> str:
        return f"aio.Computer({self._computer!r})"


async def build(
    template: _Template,
    *,
    on_log: _Callback = None,
    home: Optional[Union[str, "os.PathLike[str]"]] = None,
    agent: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> "orgo.BuildResult":
    """`orgo.build`; `on_log` runs on the event loop."""
    loop = asyncio.get_running_loop()
    return await asyncio.to_thread(orgo.build, template, on_log=_on_loop(on_log, loop), home=home, agent=agent)


async def launch(
    template: _Template,
    *,
    ram_gb: Optional[int] = None,
    cpu: Optional[int] = None,
    env: Optional[Mapping[str, str]] = None,
    secrets: Optional[Mapping[str, str]] = None,
    on_log: _Callback = None,
    home: Optional[Union[str, "os.PathLike[str]"]] = None,
    agent: Optional[Union[str, "os.PathLike[str]"]] = None,
    egress_learn: bool = False,
) -> Computer:
    """`orgo.launch`; `on_log` runs on the event loop."""
    loop = asyncio.get_running_loop()
    computer = await asyncio.to_thread(
        orgo.launch,
        template,
        ram_gb=ram_gb,
        cpu=cpu,
        env=env,
        secrets=secrets,
        on_log=_on_loop(on_log, loop),
        home=home,
        agent=agent,
        egress_learn=egress_learn,
    )
    return Computer(computer)


async def connect(id: str, *, home: Optional[Union[str, "os.PathLike[str]"]] = None) -> Computer:
    """`orgo.connect`."""
    return Computer(await asyncio.to_thread(orgo.connect, id, home=home))


class Client:
    """`orgo.Client` for asyncio: the same calls against an `orgo serve`,
    as coroutines. `sync` is the blocking client."""

    def __init__(self, url: str, api_key: str) -> None:
        self._client = orgo.Client(url, api_key)

    @property
    def sync(self) -> "orgo.Client":
        """The blocking client this wraps."""
        return self._client

    @property
    def url(self) -> str:
        """The server's URL."""
        return self._client.url

    async def publish(
        self, template: _Template, *, namespace: Optional[str] = None
    ) -> _Published:
        """`Client.publish`."""
        return await asyncio.to_thread(self._client.publish, template, namespace=namespace)

    async def templates(self, namespace: Optional[str] = None) -> List[_TemplateSummary]:
        """`Client.templates`."""
        return await asyncio.to_thread(self._client.templates, namespace)

    async def build(self, template: _Template, *, on_log: _Callback = None) -> "orgo.BuildResult":
        """`Client.build`; `on_log` runs on the event loop."""
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._client.build, template, on_log=_on_loop(on_log, loop))

    async def launch(
        self,
        template: _Template,
        *,
        ram_gb: Optional[int] = None,
        cpu: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        secrets: Optional[Mapping[str, str]] = None,
        on_log: _Callback = None,
    ) -> Computer:
        """`Client.launch`; `on_log` runs on the event loop."""
        loop = asyncio.get_running_loop()
        computer = await asyncio.to_thread(
            self._client.launch,
            template,
            ram_gb=ram_gb,
            cpu=cpu,
            env=env,
            secrets=secrets,
            on_log=_on_loop(on_log, loop),
        )
        return Computer(computer)

    async def connect(self, id: str) -> Computer:
        """`Client.connect`."""
        return Computer(await asyncio.to_thread(self._client.connect, id))

    def __repr__(self) -> str:
        return f"aio.Client(url={self.url!r})"
