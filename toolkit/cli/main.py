"""Entry point: builds the Typer app from one module per command group and owns error reporting."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Annotated

import typer

try:  # typer >= 0.22 vendors click
    from typer import Abort, Exit
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import Abort, ClickException, Exit, NoArgsIsHelpError, UsageError

from . import bench as _bench
from . import bundle as _bundle
from . import compress as _compress
from . import data as _data
from . import detect as _detect
from . import export as _export
from . import pipeline as _pipeline
from . import specialize as _specialize
from . import train as _train

app = typer.Typer(
    name="edgespec",
    help="Turn one general image model into small, fast specialists for edge devices, with numbers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for _module in (_train, _bench, _export, _specialize, _compress, _pipeline, _bundle, _detect, _data):
    _module.register(app)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"edgespec {__version__}")
        raise Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print edgespec's version and exit.")] = False) -> None:
    """edgespec command line."""


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """Run the CLI; errors become one line on stderr (exit 2 for bad input, 1 for failures).

    `exiting` (the console script, which ends the process next): from the moment the command has finished, SIGTERM
    is ignored instead of restored, so it cannot kill a command whose work is complete."""
    from .errors import one_line

    debug = bool(os.environ.get("EDGESPEC_DEBUG"))
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # else onnxruntime writes a device id under ~/.cache
    _TERMINATED.clear()
    previous = _catch_sigterm()
    words = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=argv, standalone_mode=False)
        if code == 130:  # typer turns a KeyboardInterrupt (Ctrl-C, or SIGTERM below) into exit code 130
            return _stopped(words)
        return code if isinstance(code, int) and not isinstance(code, bool) else 0
    except Exit as exc:
        return exc.exit_code
    except (Abort, KeyboardInterrupt):
        return _stopped(words)
    except NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return 0
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        cmd = f" {ctx.command_path.split(' ', 1)[1]}" if ctx is not None and " " in ctx.command_path else ""
        _err(f"{exc.format_message()} (see 'edgespec{cmd} --help')")
        return 2 if isinstance(exc, UsageError) else exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into messages
        if _TERMINATED:  # a library turned the KeyboardInterrupt of SIGTERM/Ctrl-C into its own error
            return _stopped(words)
        if debug:
            raise
        msg, code = one_line(exc)
        _err(msg)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN if exiting else previous[0])
            signal.signal(signal.SIGINT, signal.SIG_IGN if exiting else previous[1])


_TERMINATED: list[int] = []


def _raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM (a CI timeout, `kill`) or Ctrl-C: unwind so locks are released and temporaries removed. Only the first
    signal raises: a storm of Ctrl-C (or a SIGTERM after one) while the command unwinds must not interrupt its cleanup
    or the error handler itself."""
    first = not _TERMINATED
    _TERMINATED.append(signum)
    if first:
        raise KeyboardInterrupt


def _stopped(argv: list[str]) -> int:
    terminated = signal.SIGTERM in _TERMINATED
    _err(_interrupted(argv, terminated))
    return 143 if terminated else 130


def _catch_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated), signal.signal(signal.SIGINT, _raise_terminated)


def _interrupted(argv: list[str], terminated: bool) -> str:
    """One line: what stopped the command and how to continue (--resume only where the command has it)."""
    cmd = typer.main.get_command(app)
    for word in (str(a) for a in argv):
        sub = getattr(cmd, "commands", {}).get(word)
        if sub is None and not word.startswith("-"):
            break
        cmd = sub or cmd
    params = {p.name for p in getattr(cmd, "params", [])}
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    if "resume" in params:
        return f"{what}; rerun the same command with --resume to continue where it stopped"
    return f"{what}; finished files are kept and nothing half-written is left: rerun the same command to finish"


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def run() -> None:
    """The console script: main(), then exit without the interpreter's teardown.

    With torch loaded, teardown spent ~3.5 s in C-level destructors after a specialize had finished (measured on a
    2-core host), and a SIGTERM in that window killed the finished command (exit -15, no message). Every file is
    complete when main() returns and nothing of edgespec's needs atexit, so: join non-daemon threads, flush, and
    leave with main()'s code. EDGESPEC_DEBUG keeps Python's normal exit (and its tracebacks).
    """
    code = main(exiting=True)
    if os.environ.get("EDGESPEC_DEBUG"):
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
