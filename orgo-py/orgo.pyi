"""orgo: declarative Linux computer templates (``orgo.ai/v1``).

``Template`` reads, validates and digests templates; ``Image`` builds one
step by step; ``ValidationError`` lists every problem of a template.
"""

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union, final

__version__: str
__all__ = [
    "__version__",
    "Diagnostic",
    "Image",
    "OrgoError",
    "Template",
    "ValidationError",
    "template_schema",
]

_Path = Union[str, "os.PathLike[str]", bytes, "os.PathLike[bytes]"]

class OrgoError(ValueError):
    """The base of every error orgo raises; a subclass of ``ValueError``."""

class ValidationError(OrgoError):
    """A template (or an image) breaks rules of the format.

    ``errors`` lists every problem found, in document order.
    """

    errors: List["Diagnostic"]
    """Every problem, each with its field path, message, line and column."""

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
