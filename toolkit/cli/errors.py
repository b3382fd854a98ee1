"""One table from exception types to one-line messages and exit codes."""

from __future__ import annotations


def one_line(exc: BaseException) -> tuple[str, int]:
    """Message and exit code for an exception escaping a command."""
    from ..errors import EXTRAS, EdgespecError

    if isinstance(exc, EdgespecError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}; choose a writable location", 2
    if isinstance(exc, IsADirectoryError | NotADirectoryError | FileNotFoundError):
        if exc.filename is None:  # raised by a library with only a message, e.g. FileNotFoundError("'x.yaml' ...")
            return f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}; check the path", 2
        return f"{exc.strerror}: {exc.filename}; check the path", 2
    if isinstance(exc, FileExistsError):  # e.g. mkdir of an output directory where a file is
        return f"{exc.filename} already exists and is not what edgespec expects there; choose another path", 2
    if isinstance(exc, UnicodeDecodeError):
        return f"an input file is not UTF-8 text ({exc.reason}); check the files you passed", 2
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRAS:
        top = exc.name.split(".")[0]
        return (f"{top} is not installed and this command needs it; install it with pip install -e "
                f"'.[{EXTRAS[top]}]'"), 2
    if isinstance(exc, OSError) and exc.errno == 28:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"no space left on device{where}; free space or choose another --out", 1
    text = str(exc).strip().splitlines()
    return f"internal error: {type(exc).__name__}: {text[0] if text else ''} (set EDGESPEC_DEBUG=1 for a traceback)", 1
