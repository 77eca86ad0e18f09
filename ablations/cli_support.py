"""What the project's command lines share (``python -m ablations``, ``python -m ablations.llm``,
``python -m theory``): bad input as one line and exit status 2, interrupts as one line and 130,
warnings as one line each, and ``--debug`` to get the traceback instead.

Bad input is an exception of one of the input error types: ``ablations.config.ConfigError``,
``ablations.arms.ArmError``, ``ablations.llm.gsm8k.GSM8KFormatError``,
``ablations.records.ResultsError``, ``ablations.provenance.ProvenanceError``,
``ablations.dask_executor.ExecutorError``, :class:`UsageError`, ``UnicodeDecodeError`` (a file
that is not UTF-8: the message names the text file being read where the traceback shows it,
else the command's main input) and ``FileNotFoundError``. The
types are looked up among the modules already imported, so this module imports none of them
(``python -m ablations.llm summary`` stays free of torch). Any other exception is a bug and
keeps its traceback.

Exit statuses (the commands' docstrings list theirs): :data:`EXIT_USAGE` for bad input,
:data:`EXIT_INTERRUPTED` (128 + SIGINT, as shells report Ctrl-C) for SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

__all__ = ["EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "add_debug_flag",
           "input_error_message", "guarded", "first_line"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: (module, name) of every input error type besides the built-in ones
_INPUT_ERRORS = (("ablations.config", "ConfigError"), ("ablations.arms.base", "ArmError"),
                 ("ablations.llm.gsm8k", "GSM8KFormatError"),
                 ("ablations.records", "ResultsError"),
                 ("ablations.provenance", "ProvenanceError"),
                 ("ablations.dask_executor", "ExecutorError"))


class UsageError(ValueError):
    """A command-line value is wrong; the message names the option."""


def add_debug_flag(parser: argparse.ArgumentParser,
                   subparsers: tuple[argparse.ArgumentParser, ...] = ()) -> None:
    """``--debug`` on ``parser`` and on each of ``subparsers`` (so it may come before or after
    the command): errors then raise with their traceback instead of printing one line."""
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    for sub in subparsers:  # SUPPRESS: an absent sub-level flag keeps the top-level value
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the traceback of an error instead of one line")


def first_line(err: BaseException) -> str:
    """``err``'s message on one line (its type's name when it has none)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _input_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UsageError, UnicodeDecodeError, FileNotFoundError]
    for module, name in _INPUT_ERRORS:
        mod = sys.modules.get(module)
        if mod is not None and isinstance(getattr(mod, name, None), type):
            types.append(getattr(mod, name))
    return tuple(types)


def _file_being_decoded(err: UnicodeDecodeError) -> str | None:
    # a UnicodeDecodeError names no file: the innermost frame of its traceback that holds an
    # open text file (Path.read_text, open(...).read(), a reader's loop) names it
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            name = getattr(value, "name", None) if isinstance(value, io.TextIOBase) else None
            if isinstance(name, (str, os.PathLike)):
                return os.fspath(name)
    return None


def input_error_message(err: BaseException, source: object = None) -> str | None:
    """The one-line message of an input error (module docstring), or None if ``err`` is not
    one. ``source``: the command's main input, named for a ``UnicodeDecodeError`` whose
    traceback shows no open file."""
    if not isinstance(err, _input_types()):
        return None
    if isinstance(err, UnicodeDecodeError):
        where = _file_being_decoded(err) or source or "an input file"
        return (f"{where}: not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                "UTF-8")
    if isinstance(err, FileNotFoundError) and err.filename is not None:
        return f"no such file: {err.filename}"
    return first_line(err)


def _interrupt(signum, frame) -> None:
    # the first SIGINT/SIGTERM interrupts; later ones are ignored, so that the cleanup
    # (stopping workers, closing files) runs to its end and prints its one line
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr, flush=True)


@contextlib.contextmanager
def _session() -> Iterator[None]:
    # SIGTERM raises KeyboardInterrupt like SIGINT; warnings print as one line each;
    # everything is restored on exit (main() may be called in-process, e.g. by tests)
    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        for sig in old:
            signal.signal(sig, _interrupt)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def guarded(body: Callable[[], int], *, debug: bool = False, source: object = None,
            interrupted: Callable[[KeyboardInterrupt], str] | None = None) -> int:
    """Run a command's ``body`` (which returns its exit status) the way every CLI of the
    project runs: an input error prints ``error: <message>`` on one line and returns
    :data:`EXIT_USAGE`; SIGINT or SIGTERM prints one line (``interrupted(err)``, default
    "interrupted") and returns :data:`EXIT_INTERRUPTED`; with ``debug`` both raise instead.
    ``source`` is named for a ``UnicodeDecodeError`` (:func:`input_error_message`)."""
    with _session():
        try:
            return body()
        except KeyboardInterrupt as err:
            if debug:
                raise
            print(interrupted(err) if interrupted else "interrupted", file=sys.stderr,
                  flush=True)
            return EXIT_INTERRUPTED
        except Exception as err:
            msg = input_error_message(err, source)
            if msg is None or debug:
                raise
            print(f"error: {msg}", file=sys.stderr, flush=True)
            return EXIT_USAGE
