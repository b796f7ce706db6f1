"""orgo: declarative Linux computer templates (``orgo.ai/v1``), built into
golden snapshots and launched as computers.

``Template`` reads, validates and digests templates; ``Image`` builds one
step by step; ``ValidationError`` lists every problem of a template.
``build`` makes a template's golden snapshot; ``launch`` starts a ``Computer``
from it (``exec``, ``write_file``, ``read_file``, ``stop``); ``connect``
reaches a running one again. ``Client(url, api_key)`` offers the same calls
against an ``orgo serve``; ``orgo.aio`` offers both to asyncio.
"""

import os
from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Tuple,
    Type,
    TypedDict,
    Union,
    final,
)

__version__: str
__all__ = [
    "__version__",
    "ApiError",
    "BuildError",
    "BuildResult",
    "Client",
    "Computer",
    "Diagnostic",
    "Events",
    "ExecResult",
    "Image",
    "LogEvent",
    "LogLines",
    "NotFoundError",
    "OrgoError",
    "PortError",
    "RemoteComputer",
    "SecretError",
    "Template",
    "UnsupportedError",
    "ValidationError",
    "build",
    "checkpoint",
    "connect",
    "fork",
    "launch",
    "resume",
    "suspend",
    "template_schema",
]

_Path = Union[str, "os.PathLike[str]", bytes, "os.PathLike[bytes]"]
_TemplateSource = Union["Template", str, "os.PathLike[str]"]
_Content = Union[str, bytes, bytearray, memoryview]

class OrgoError(ValueError):
    """The base of every error orgo raises; a subclass of ``ValueError``."""

class ValidationError(OrgoError):
    """A template (or an image) breaks rules of the format.

    ``errors`` lists every problem found, in document order.
    """

    errors: List["Diagnostic"]
    """Every problem, each with its field path, message, line and column."""

class BuildError(OrgoError):
    """A step of a build failed (or a launch's runtime step, or ``on_shutdown``).

    ``str(error)`` names the step and shows the end of its output.
    """

    field: str
    """The step's template field: ``build.run[0]``, ``files[1]``, ``hooks.on_shutdown``."""
    reason: str
    """What happened: ``exited with status 2``, ``timed out``, ..."""
    output: str
    """The end of what the step printed (stdout and stderr interleaved)."""

class SecretError(OrgoError):
    """A launch cannot have its secrets: required secrets have no value, or
    the vault file cannot be read. Raised before anything is built."""

    missing: List[str]
    """The names of the required secrets without a value (empty when the
    vault file itself failed)."""

class NotFoundError(OrgoError):
    """Something named does not exist: a computer, a published template, a
    file in the computer, or the guest agent a base image build needs."""

class UnsupportedError(OrgoError):
    """This host cannot run the template as written: it sets fields this
    runtime cannot honour here (a GPU, a region, a desktop, an egress
    policy, ...). Raised before anything is built or started."""

    fields: Dict[str, str]
    """Each field's path (``hardware.gpu``, ``apps[0].ports[0]``) and what
    is missing."""

class PortError(OrgoError):
    """A port of ``apps[].ports`` could not be forwarded at launch (a taken
    host port, say). Nothing of the launch is left."""

    field: str
    """The port's path (``apps[0].ports[1]``)."""
    reason: str
    """Why it could not be forwarded."""

class ApiError(OrgoError):
    """An ``orgo serve`` refused a request for a reason the local module has
    no class for (the others raise ``ValidationError``, ``NotFoundError``,
    ``BuildError``, ``SecretError`` and ``UnsupportedError``, as locally)."""

    code: str
    """The server's stable code: ``unauthorized``, ``namespace_scope_mismatch``,
    ``read_only_key``, ``version_conflict``, ``too_many_computers``, ..."""
    status: int
    """The HTTP status."""
    details: Any
    """The code's fields (a ``dict``) or ``None``: a ``version_conflict`` has
    the ``existing`` and ``new`` digests."""

class _Published(TypedDict):
    """What ``Client.publish`` returns."""

    ref: str
    digest: str
    published: bool

class _TemplateSummary(TypedDict):
    """An item of ``Client.templates()``."""

    ref: str
    digest: str

class _PortMapping(TypedDict):
    """A forwarded port of ``Computer.ports``."""

    internal: int
    protocol: str
    host: str
    port: int

class _EgressLearned(TypedDict):
    """What ``Computer.egress_learned()`` returns."""

    names: List[str]
    addresses: List[str]
    policy: str

@final
class Diagnostic:
    """One problem in a template: the field it is about, what is wrong, and
    where the field is in the source text."""

    @property
    def path(self) -> List[Union[str, int]]:
        """The field's path as keys and indexes, e.g.
        ``["apps", 0, "services", 1, "restart"]``; ``[]`` for the whole document."""
    @property
    def path_str(self) -> str:
        """The path as the reference writes it: ``apps[0].services[1].restart``,
        ``env.NODE_ENV``, ``files["/opt/x y"]``, or ``(document)``."""
    @property
    def message(self) -> str:
        """What was found and what is allowed."""
    @property
    def line(self) -> Optional[int]:
        """The 1-based line of the field in the source text; ``None`` for a
        document without text (a ``dict``, an ``Image``)."""
    @property
    def column(self) -> Optional[int]:
        """The 1-based column (in characters) of the field, or ``None``."""
    def __eq__(self, other: object, /) -> bool: ...

@final
class Template:
    """A validated ``orgo.ai/v1`` template in canonical form.

    Read one with ``from_yaml``, ``from_json``, ``from_dict`` or ``load``; any
    problem raises ``ValidationError`` listing every problem at once. A
    template is immutable and hashable; two are equal when their digests are.
    """

    @staticmethod
    def from_yaml(text: str) -> "Template":
        """Reads a template from YAML text (sugar or canonical form)."""
    @staticmethod
    def from_json(text: str) -> "Template":
        """Reads a template from JSON text (sugar or canonical form)."""
    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "Template":
        """Reads a template from a ``dict`` (or any mapping) of JSON values:
        ``str``, ``int``, ``float``, ``bool``, ``None``, ``list``/``tuple`` and
        mappings with ``str`` keys. Problems carry paths but no line or column.
        Raises ``TypeError`` when ``data`` is not a mapping."""
    @staticmethod
    def load(path: _Path) -> "Template":
        """Reads a template file: JSON for ``.json``, YAML for ``.yaml`` and
        ``.yml``, otherwise JSON when the text starts with ``{``, else YAML.
        Error messages name the file; a missing file raises
        ``FileNotFoundError``, text that is not UTF-8 ``OrgoError``."""
    def normalize(self) -> Dict[str, Any]:
        """The canonical form as a ``dict``, fields in the reference's order:
        sugar folded, ``${...}`` resolved, defaults written out. Strings are
        spelled as in a document (a literal ``${var.`` is written
        ``$${var.``), so ``Template.from_dict(t.normalize()) == t``."""
    @property
    def digest(self) -> str:
        """``"sha256:"`` and the hex SHA-256 of the canonical JSON (RFC 8785):
        equal for templates that mean the same, whatever their spelling."""
    @property
    def name(self) -> str:
        """The template's name (``template.name``)."""
    @property
    def version(self) -> str:
        """The template's version (``template.version``), as semver text."""
    def to_yaml(self) -> str:
        """The canonical form as YAML, fields in the reference's order."""
    def to_json(self, *, canonical: bool = False) -> str:
        """The canonical form as indented JSON, fields in the reference's
        order; with ``canonical=True``, the exact RFC 8785 text the digest hashes."""
    def reference(self, namespace: str) -> str:
        """The template's ref in ``namespace``: ``"namespace/name@version"``.
        Raises ``OrgoError`` for a namespace that is not kebab-case."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __reduce__(self) -> Tuple[Any, Tuple[str]]:
        """Pickles as the canonical JSON."""

@final
class Image:
    """A fluent, immutable image builder: what a computer is made of, step by
    step, on top of orgo's base Linux image. Every method returns a new
    ``Image`` and leaves the one it was called on as it was::

        image = (orgo.Image.base()
                 .apt_install(["curl", "jq"])
                 .pip_install(["requests"])
                 .env({"PROJECT_ROOT": "/workspace"})
                 .workdir("/workspace")
                 .run_commands("make -j"))
        template = image.to_template("my-box", "1.0.0", cpu=2, ram_gb=4)

    ``to_template`` writes the steps onto the template's ``build`` (apt, then
    pip, then npm, then run: the order of steps is kept within each list, not
    across them), ``env`` and ``files``. Strings are literal: ``${var.X}``
    stays as written. ``cache_key()`` hashes those sections, not the name,
    version, hardware or build memory, so equal images share it.
    """

    @staticmethod
    def base() -> "Image":
        """orgo's base Linux image, with nothing added."""
    def apt_install(self, packages: Union[str, Iterable[str]]) -> "Image":
        """Installs Debian packages (``build.apt``); one ``str`` is one package."""
    def pip_install(self, packages: Union[str, Iterable[str]]) -> "Image":
        """Installs Python packages (``build.pip``); one ``str`` is one package."""
    def npm_install(self, packages: Union[str, Iterable[str]]) -> "Image":
        """Installs npm packages (``build.npm``); one ``str`` is one package."""
    def run_commands(self, *commands: Union[str, Iterable[str]]) -> "Image":
        """Runs shell commands during the build, in order (``build.run``); each
        argument is a command or a list of commands. After ``workdir(dir)``,
        a command runs as ``cd DIR && COMMAND``."""
    def env(self, vars: Optional[Mapping[str, str]] = None, **more: str) -> "Image":
        """Sets environment variables (``env``) from a mapping and/or keywords;
        a later value for a name replaces an earlier one."""
    def workdir(self, path: str) -> "Image":
        """Creates the directory ``path`` (absolute, in the computer) with a
        ``mkdir -p`` command and runs every later command in it. The computer
        itself gets no default directory from it."""
    def add_file(self, path: str, content: str) -> "Image":
        """Writes a file with the text ``content`` at ``path`` in the computer."""
    def add_local_file(self, local: _Path, remote: str) -> "Image":
        """Copies the local file ``local`` (resolved against the current
        directory now) to ``remote``, as a ``file://`` source the build reads.
        The cache key covers the path, not the file's content."""
    def add_local_dir(self, local: _Path, remote: str) -> "Image":
        """Copies the tree of the local directory ``local`` (resolved against
        the current directory now) to the directory ``remote``, as a
        ``file://.../`` source the build reads."""
    def builder_memory(self, mb: int) -> "Image":
        """Sets the RAM of the build in MiB (default 4096). It changes neither
        the template nor the cache key. Raises ``OrgoError`` unless
        ``1 <= mb < 2**32``."""
    @property
    def builder_memory_mb(self) -> int:
        """The RAM of the build in MiB: the last ``builder_memory(mb)``, or 4096."""
    @property
    def working_dir(self) -> Optional[str]:
        """The directory of the last ``workdir(path)``, where later commands run."""
    def cache_key(self) -> str:
        """``"sha256:"`` and the hex SHA-256 of the image's content: the
        ``build``, ``env`` and ``files`` sections it writes, as RFC 8785 JSON.
        Equal images share it; the build memory never changes it."""
    def to_dict(self) -> Dict[str, Any]:
        """The sections the image writes (``build``, ``env``, ``files``): what
        ``cache_key()`` hashes."""
    def to_template(self, name: str, version: str, **hardware: Any) -> Template:
        """The template of this image, named ``name`` at ``version``, with the
        ``hardware`` fields given as keywords (``cpu=2, ram_gb=4,
        resolution="1280x800x24"``). Raises ``ValidationError`` with every
        problem at its path in the template (``build.apt[1]``, ``files[0].to``,
        ``hardware.cpu``)."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def template_schema() -> Dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``orgo.ai/v1`` format: it accepts
    the canonical form, the sugar form and any mix of the two."""

@final
class LogEvent:
    """Something a build reports while it runs, as ``on_log`` receives it.

    ``kind`` is ``"status"`` (what the build does: booting, storing, ...),
    ``"step"`` (a step of the template starts: ``field``, ``index`` from 1,
    ``total``) or ``"output"`` (what the running step printed: ``stream`` and
    raw ``data``). ``text`` (also ``str(event)``) is the event as text.
    """

    @property
    def kind(self) -> Literal["status", "step", "output"]:
        """``"status"``, ``"step"`` or ``"output"``."""
    @property
    def text(self) -> str:
        """The event as text: the status, ``"[index/total] field"``, or the
        output decoded as UTF-8 (a chunk as it came: not always whole lines)."""
    @property
    def field(self) -> Optional[str]:
        """A step's template field (``build.run[0]``, ``files[1]``), else ``None``."""
    @property
    def index(self) -> Optional[int]:
        """A step's position, from 1, else ``None``."""
    @property
    def total(self) -> Optional[int]:
        """How many steps the build runs (for a step), else ``None``."""
    @property
    def stream(self) -> Optional[Literal["stdout", "stderr"]]:
        """``"stdout"`` or ``"stderr"`` for output, else ``None``."""
    @property
    def data(self) -> Optional[bytes]:
        """The output's raw bytes, else ``None``."""

@final
class BuildResult:
    """What ``build`` returns: the golden snapshot of a template."""

    @property
    def template_digest(self) -> str:
        """The digest of the template built (``Template.digest``)."""
    @property
    def snapshot_digest(self) -> str:
        """The digest of the snapshot's manifest in the store."""
    @property
    def cached(self) -> bool:
        """``True`` when the snapshot was already built (by an earlier call,
        or by another process this call waited for); ``False`` when this
        call built it."""
    @property
    def backend(self) -> str:
        """What made the snapshot and restores it: ``"qemu-kvm"`` or
        ``"qemu-tcg"``; ``"remote"`` for a server's build (``Client.build``)."""
    def __eq__(self, other: object, /) -> bool: ...

@final
class ExecResult:
    """What a command printed and how it ended, from ``Computer.exec``."""

    @property
    def stdout(self) -> str:
        """Its standard output, decoded as UTF-8 (invalid bytes replaced)."""
    @property
    def stderr(self) -> str:
        """Its standard error, decoded as UTF-8 (invalid bytes replaced)."""
    @property
    def exit_code(self) -> int:
        """Its exit status; ``-N`` when signal ``N`` killed it (as ``subprocess`` reports)."""
    @property
    def timed_out(self) -> bool:
        """``True`` when its ``timeout`` killed it."""
    def __eq__(self, other: object, /) -> bool: ...

@final
class LogLines:
    """A computer's log lines as ``(service, line)`` pairs, from
    ``Computer.logs()``; with ``follow``, it waits for new lines."""

    def __iter__(self) -> Iterator[Tuple[str, str]]: ...
    def __next__(self) -> Tuple[str, str]: ...

@final
class Events:
    """A computer's events, oldest first, from ``Computer.events()``: dicts
    with ``ts`` (RFC 3339, UTC), ``seq``, ``kind`` (``service_exited``,
    ``trigger_fired``, ``alert``, ...) and the event's fields; with
    ``follow``, it waits for new ones."""

    def __iter__(self) -> Iterator[Dict[str, Any]]: ...
    def __next__(self) -> Dict[str, Any]: ...

@final
class Computer:
    """A running computer, from ``launch`` or ``connect``::

        with orgo.launch("my-box@1.0.0", secrets={"api_key": key}) as c:
            print(c.exec("uname -a").stdout)
            c.write_file("/tmp/x", b"data")

    ``stop()`` runs the template's ``on_shutdown`` hook, powers the computer
    off and removes its files; leaving a ``with`` block stops it. After
    ``stop()`` or ``detach()`` the handle is closed: its methods raise
    ``OrgoError`` (``stop()`` again returns ``None``). A computer ``launch``
    started that is garbage-collected unstopped is stopped then. Calls from
    several threads at once are fine; ``stop()`` waits for calls in flight.
    """

    @property
    def id(self) -> str:
        """The computer's id (``c-`` and 12 hex digits); its hostname too."""
    @property
    def template(self) -> str:
        """The template it was launched from, as ``name@version``."""
    @property
    def template_digest(self) -> str:
        """The digest of the template it was launched from."""
    @property
    def snapshot_digest(self) -> str:
        """The digest of the golden snapshot it was restored from."""
    @property
    def cpu(self) -> int:
        """Its vCPUs."""
    @property
    def memory_mib(self) -> int:
        """Its memory in MiB."""
    @property
    def closed(self) -> bool:
        """``True`` once ``stop()`` or ``detach()`` was called on this handle."""
    def exec(
        self,
        cmd: Union[str, Iterable[str]],
        *,
        timeout: Optional[float] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        input: Optional[_Content] = None,
        on_stdout: Optional[Callable[[str], object]] = None,
        on_stderr: Optional[Callable[[str], object]] = None,
    ) -> ExecResult:
        """Runs a command in the computer and waits for it to end.

        ``cmd`` is a ``str``, run by bash (``bash -c``), or a list of ``str``,
        run as an argv (looked up in ``PATH``). ``timeout`` (seconds) kills the
        command (its whole process group) when it runs longer; the result then
        has ``timed_out`` set. ``user`` runs it as that user (default root),
        ``cwd`` in that directory (default the user's home), with ``env`` over
        the computer's environment and ``input`` on stdin. A command that
        fails is a result with its ``exit_code``, not an exception. On the main
        thread, Ctrl-C stops the wait (the command goes on running).

        ``on_stdout`` and ``on_stderr``, if given, are called with the output
        as it comes: ``str`` chunks (UTF-8, invalid bytes replaced; a
        character is never split across two calls; chunks are not always
        whole lines), in order, on the calling thread with the GIL held.
        Their concatenation is the result's ``stdout``/``stderr``. Once a
        callback raises an ``Exception`` neither is called again; the command
        runs to its end and the exception is raised then (an error of the
        call is its ``__context__``). A ``KeyboardInterrupt`` stops the wait
        at once."""
    def write_file(self, path: str, content: _Content, mode: Optional[int] = None) -> None:
        """Writes ``content`` (``str`` as UTF-8, or ``bytes``) to the file
        ``path`` in the computer, atomically, creating its directory; ``mode``
        (e.g. ``0o600``) sets its permissions. At most 8 MiB."""
    def read_file(self, path: str) -> bytes:
        """The content of the file ``path`` in the computer (at most 8 MiB).
        Raises ``NotFoundError`` when there is no such file."""
    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The content of the file ``path`` in the computer, decoded (UTF-8 by default)."""
    def screenshot(self, region: Optional[Tuple[int, int, int, int]] = None) -> bytes:
        """A PNG of the screen, or of ``region`` ``(x, y, width, height)``.

        A computer without a desktop raises ``OrgoError`` naming the fields
        that give a template one (``hardware.resolution``, ``desktop.wallpaper``,
        ``apps[].autostart``, ``streaming``); so do the methods below. A point
        or region off the screen raises ``OrgoError`` too, never clamped.
        """
    def move(self, x: int, y: int) -> None:
        """Moves the pointer to ``(x, y)``."""
    def click(self, x: int, y: int, button: str = "left", double: bool = False) -> None:
        """Clicks ``button`` (``left``, ``middle``, ``right``) at ``(x, y)``."""
    def drag(self, start: Tuple[int, int], end: Tuple[int, int], button: str = "left") -> None:
        """Presses ``button`` at ``start``, moves to ``end``, releases there."""
    def type(self, text: str) -> None:
        """Types ``text``: any UTF-8, also characters no US key gives."""
    def key(self, combo: str) -> None:
        """Presses a key combination in xdotool syntax: ``"ctrl+shift+t"``, ``"Return"``."""
    def scroll(
        self, direction: str, amount: int = 1, x: Optional[int] = None, y: Optional[int] = None
    ) -> None:
        """Turns the wheel ``amount`` notches ``up``, ``down``, ``left`` or ``right``."""
    def cursor(self) -> Tuple[int, int]:
        """Where the pointer is."""
    def stream_start(self, name: str, secrets: Optional[Mapping[str, str]] = None) -> None:
        """Starts the template's stream ``name``; a secret key comes from
        ``secrets``, else ``ORGO_SECRET_<NAME>``. A dropped connection is
        retried with backoff."""
    def stream_stop(self, name: str) -> None:
        """Stops stream ``name``."""
    def stream_status(self, name: str) -> Dict[str, Any]:
        """``{"name", "state", "restarts", "last_exit_code"}``; ``state`` is
        ``streaming``, ``retrying``, ``stopped`` or ``failed``."""
    def logs(
        self, service: Optional[str] = None, *, since: Optional[float] = None, follow: bool = False
    ) -> LogLines:
        """Its service logs (``/var/log/orgo/<service>.log`` unless ``log:``
        names another file), line by line, as ``(service, line)`` pairs: one
        service's (or ``trigger.NAME``'s, a trigger's ``run`` output), else
        every log; ``since`` (seconds) only the last while; ``follow`` waits
        for new lines (Ctrl-C on the main thread ends the wait)."""
    def events(self, *, follow: bool = False) -> Events:
        """Its events, oldest first (the computer keeps the newest 4096), as
        dicts with ``ts``, ``seq``, ``kind`` and the event's fields; ``follow``
        waits for new ones."""
    def trigger(self, path: str, data: Optional[_Content] = None) -> List[str]:
        """Fires the webhook triggers of ``path`` with ``data`` (their ``run``
        actions read it on stdin); returns the triggers that ran (a firing
        within a trigger's ``dedup`` window does not). Raises
        ``NotFoundError`` when no trigger has that path."""
    def metrics(self) -> str:
        """Its metrics now, in the Prometheus text format (CPU, memory, disk,
        network; each service's state and restarts; each app's health)."""
    def services(self) -> List[Dict[str, Any]]:
        """Its services: dicts with ``name``, ``state``, ``pid``,
        ``restarts`` and ``last_exit`` (``{"code": N}`` or ``{"signal": N}``)."""
    def stop(self) -> Optional[str]:
        """Stops the computer: runs the template's ``on_shutdown`` hook, powers
        the guest off, stops its VM and removes its files. Returns what the
        hook printed (``None`` without a hook). A failing hook does not keep
        the computer running: it is stopped, then ``BuildError`` is raised for
        ``hooks.on_shutdown``. Calling it again returns ``None``."""
    @property
    def ports(self) -> List[_PortMapping]:
        """Its forwarded ``apps[].ports``, one ``dict`` per port in the
        template's order: ``{"internal": 8000, "protocol": "tcp", "host":
        "127.0.0.1", "port": 41234}`` (public ports on the publish address,
        the others on ``127.0.0.1``). Empty for a computer without ports."""
    def egress_learned(self) -> _EgressLearned:
        """What a computer launched with ``egress_learn=True`` has reached so
        far and the smallest ``egress_policy`` allowing exactly that:
        ``names`` (from TLS SNI, HTTP ``Host`` and DNS), ``addresses``
        (reached without a name) and ``policy`` (YAML to paste into the
        template)."""
    def detach(self) -> None:
        """Lets go of the computer and leaves it running after this handle and
        this process are gone; ``connect(id)`` reaches it again."""
    def __enter__(self) -> "Computer": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
        /,
    ) -> bool:
        """Stops the computer, unless it was detached."""

def build(
    template: _TemplateSource,
    *,
    on_log: Optional[Callable[[LogEvent], object]] = None,
    home: Optional[_Path] = None,
    agent: Optional[_Path] = None,
) -> BuildResult:
    """Builds a template's golden snapshot, or finds the one already built.

    ``template`` is a ``Template``, a published ref
    (``"[namespace/]name@version"``) or a template file (``os.PathLike``).
    ``on_log``, if given, is called with each ``LogEvent`` on the calling
    thread (``on_log=print`` prints the build); once it raises an
    ``Exception`` it is not called again, and the exception is raised when
    the build ends (a build error is its ``__context__``). Ctrl-C (on the main
    thread) stops the build at once. A failed step raises ``BuildError``.

    ``home`` is the orgo home (default ``$ORGO_HOME``, else
    ``$XDG_DATA_HOME/orgo``, else ``~/.local/share/orgo``); ``agent`` the
    static ``orgo-agent`` the base image is built with when the home has none
    yet (default ``$ORGO_AGENT``, else the one built into this package). The
    environment configures the rest as for the CLI (``$ORGO_ACCEL``,
    ``$ORGO_CLOUD_HYPERVISOR``, ``$ORGO_WARM_POOL``, ``$ORGO_REGION``, ...).
    A template with fields this host cannot honour raises ``UnsupportedError``."""

def launch(
    template: _TemplateSource,
    *,
    ram_gb: Optional[int] = None,
    cpu: Optional[int] = None,
    env: Optional[Mapping[str, str]] = None,
    secrets: Optional[Mapping[str, str]] = None,
    on_log: Optional[Callable[[LogEvent], object]] = None,
    home: Optional[_Path] = None,
    agent: Optional[_Path] = None,
    egress_learn: bool = False,
) -> Computer:
    """Launches a computer from a template's golden snapshot, building it
    first if needed, and returns it when it answers.

    ``template``, ``on_log``, ``home`` and ``agent`` are as for ``build``;
    a ref may also name a checkpoint published with
    ``checkpoint(..., publish=REF)``, launched from it with no build.
    ``ram_gb`` and ``cpu`` raise the memory and vCPUs over the snapshot's
    (never under them). ``env`` is extra environment over the template's.
    ``secrets`` gives secret values by name, over ``ORGO_SECRET_<NAME>``
    variables and the vault file ``<home>/secrets.json``; a required secret
    without a value raises ``SecretError`` before anything is built.
    ``egress_learn`` records every destination the computer reaches, for
    ``Computer.egress_learned()`` (it needs a host with root or
    ``CAP_NET_ADMIN``). A port of ``apps[].ports`` that cannot be forwarded
    raises ``PortError``."""

def connect(id: str, *, home: Optional[_Path] = None) -> Computer:
    """Connects to a running computer by id (one launched by another
    process, or left running with ``Computer.detach()``). Dropping the handle
    leaves the computer running; ``stop()`` (or leaving a ``with`` block)
    stops it. Raises ``NotFoundError`` for an unknown or exited computer."""

def suspend(id: str, *, home: Optional[_Path] = None) -> float:
    """Suspends a running computer by id: its whole state, memory included,
    is saved in its directory of the orgo home (its owner's only), and its
    VM stops, freeing its memory and vCPUs. Calls to it raise ``OrgoError``
    ("is suspended") until ``resume(id)``. Returns how long its vCPUs stood,
    in seconds."""

def resume(id: str, *, home: Optional[_Path] = None) -> None:
    """Resumes a suspended computer by id, with the same files, processes
    and terminal sessions; ``connect(id)`` reaches it then."""

def checkpoint(
    id: str,
    *,
    secrets: Optional[Mapping[str, str]] = None,
    publish: Optional[str] = None,
    home: Optional[_Path] = None,
) -> str:
    """Captures a running computer by id into a checkpoint (it runs on after
    a brief pause); returns the checkpoint's digest. What was captured is
    scanned for the values of the vault's and the environment's secrets and
    of ``secrets`` (give the ones given to its launch): one found raises
    ``BuildError`` naming it and where, and nothing is stored. With
    ``publish`` (``namespace/name@version``) it is also published under that
    ref, which ``launch`` then launches; a ref already taken raises
    ``OrgoError`` naming both digests (the checkpoint stays stored)."""

def fork(
    id: str,
    *,
    count: int = 1,
    env: Optional[Mapping[str, str]] = None,
    secrets: Optional[Mapping[str, str]] = None,
    home: Optional[_Path] = None,
) -> List[Computer]:
    """Checkpoints a running computer by id once and launches ``count``
    computers from it (each with its own identity, ``env`` and ``secrets``,
    and ``on_resume`` run); returns them. The checkpoint is scanned as
    ``checkpoint`` does, for ``secrets`` too."""

@final
class Client:
    """A client of an ``orgo serve`` at ``url`` with the API key ``api_key``
    (``orgo keys create``): the module's ``build``, ``launch`` and
    ``connect`` as methods, over HTTP. Switching is one line::

        c = orgo.launch(t)                           # this machine
        c = orgo.Client(url, key).launch(t)          # a server

    The computer has the same ``exec`` (with ``on_stdout``/``on_stderr``),
    ``write_file``, ``read_file`` and ``stop``; the server's errors raise the
    same exception classes by their stable code (codes without a local
    class raise ``ApiError``). A ``Template`` or file given to ``build`` or
    ``launch`` is published in the key's namespace first; a ref names a
    published template (``name@version``: in the key's namespace). Calls
    block with the GIL released (HTTP is done in Rust, by ``orgo-client``);
    a ``Client`` may be shared by threads."""

    def __new__(cls, url: str, api_key: str) -> "Client": ...
    @property
    def url(self) -> str:
        """The server's URL."""
    def publish(
        self, template: _TemplateSource, *, namespace: Optional[str] = None
    ) -> _Published:
        """Publishes a ``Template`` (its canonical JSON), a template file
        (``os.PathLike``, sent as written) or a document's text (``str``) in
        ``namespace`` (default: the key's). ``published`` is ``False`` when
        the same document was published already. An invalid document raises
        ``ValidationError`` with the server's diagnostics; a version
        published with other content ``ApiError`` (``version_conflict``)."""
    def templates(self, namespace: Optional[str] = None) -> List[_TemplateSummary]:
        """The published templates of ``namespace``, else of the key's
        namespace and ``system``."""
    def build(
        self,
        template: _TemplateSource,
        *,
        on_log: Optional[Callable[[LogEvent], object]] = None,
    ) -> BuildResult:
        """Builds a template's golden snapshot on the server, or finds it
        built, as ``orgo.build`` does; ``on_log`` gets the server's log as it
        streams (output a line at a time)."""
    def launch(
        self,
        template: _TemplateSource,
        *,
        ram_gb: Optional[int] = None,
        cpu: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        secrets: Optional[Mapping[str, str]] = None,
        on_log: Optional[Callable[[LogEvent], object]] = None,
    ) -> "RemoteComputer":
        """Launches a computer on the server, building its template first if
        needed, as ``orgo.launch`` does. ``secrets`` are sent with the request;
        this process's ``ORGO_SECRET_*`` variables are not read."""
    def connect(self, id: str) -> "RemoteComputer":
        """A running computer of the key's namespace. Dropping the handle
        leaves it running. Raises ``NotFoundError`` for an unknown one."""

@final
class RemoteComputer:
    """A computer on an ``orgo serve``, from ``Client.launch`` or
    ``Client.connect``: ``Computer``'s ``exec``, ``write_file``,
    ``read_file``, ``read_text``, ``logs``, ``events``, ``trigger``,
    ``metrics``, ``stop``, ``detach`` and context manager.

    ``exec``'s ``timeout`` is rounded up to whole seconds, and ``input`` is
    refused (the HTTP API has no stdin); the desktop calls are not offered.
    A computer this handle launched and nobody stopped or detached is
    stopped when the handle is garbage-collected."""

    @property
    def id(self) -> str:
        """The computer's id (``c-`` and 12 hex digits); its hostname too."""
    @property
    def template(self) -> str:
        """The template it was launched from, as ``namespace/name@version``."""
    @property
    def cpu(self) -> int:
        """Its vCPUs."""
    @property
    def memory_mib(self) -> int:
        """Its memory in MiB."""
    @property
    def ports(self) -> List[_PortMapping]:
        """Its forwarded ports, as ``Computer.ports`` (the server's side)."""
    @property
    def closed(self) -> bool:
        """``True`` once ``stop()`` or ``detach()`` was called on this handle."""
    def exec(
        self,
        cmd: Union[str, Iterable[str]],
        *,
        timeout: Optional[float] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        input: Optional[_Content] = None,
        on_stdout: Optional[Callable[[str], object]] = None,
        on_stderr: Optional[Callable[[str], object]] = None,
    ) -> ExecResult:
        """``Computer.exec`` over HTTP, its output streamed as it comes.
        ``timeout`` is rounded up to whole seconds; an ``input`` raises
        ``OrgoError`` (no stdin over HTTP yet)."""
    def write_file(self, path: str, content: _Content, mode: Optional[int] = None) -> None:
        """Writes ``content`` (``str`` as UTF-8, or ``bytes``) to ``path``."""
    def read_file(self, path: str) -> bytes:
        """The content of ``path``; ``NotFoundError`` when there is none."""
    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The content of ``path``, decoded (UTF-8 by default)."""
    def logs(
        self, service: Optional[str] = None, *, since: Optional[float] = None
    ) -> List[Tuple[str, str]]:
        """Its service logs now, as ``(service, line)`` pairs: one service's
        (or ``trigger.NAME``'s), else every log; ``since`` (seconds) only the
        last while. Not followed (``orgo logs -f`` follows)."""
    def events(self) -> List[Dict[str, Any]]:
        """Its events now, oldest first, as dicts with ``ts``, ``seq``,
        ``kind`` and the event's fields."""
    def trigger(self, path: str, data: Optional[_Content] = None) -> List[str]:
        """Fires the webhook triggers of ``path`` with ``data``; returns the
        triggers that ran. Raises ``NotFoundError`` when no trigger has that
        path."""
    def metrics(self) -> str:
        """Its metrics now, in the Prometheus text format."""
    def stop(self) -> Optional[str]:
        """Stops the computer on the server; returns what ``on_shutdown``
        printed. Calling it again returns ``None``."""
    def detach(self) -> None:
        """Leaves the computer running; ``Client.connect(id)`` reaches it."""
    def __enter__(self) -> "RemoteComputer": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
        /,
    ) -> bool:
        """Stops the computer, unless it was detached."""
