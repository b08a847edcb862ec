"""The command line, ``cnnlab COMMAND ...``: it parses arguments and calls library functions (which tests
call directly too).

One way to add a command: a module in this package with ``register(subparsers)``, which adds its
parsers and sets ``func`` (parsed args -> exit code) on each; import it below and list it in
:data:`COMMAND_MODULES`. Arguments several commands share are in :mod:`cnnlab.cli.common`.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib.util
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import NoReturn

from cnnlab import __version__, output
from cnnlab.cli import analyze, data, evaluate, export, models, predict, runs, serve, train
from cnnlab.cli.common import Parser, path_arg, take_sigint, typed_options
from cnnlab.errors import CnnlabError, Interrupted, SignalTaken, printable
from cnnlab.fileio import path_error
from cnnlab.hostmem import usable_cpus
from cnnlab.runs import LATEST, resolve_run

try:
    import resource  # POSIX: the memory limit an out-of-memory line names
except ImportError:  # pragma: no cover - Windows
    resource = None

#: In the order ``cnnlab --help`` lists their commands.
COMMAND_MODULES = (train, evaluate, runs, models, data, analyze, predict, export, serve)
#: torch's CPU allocator's words for a failed allocation; compiled now, since compiling it once memory has run out
#: failed too (a MemoryError while the first was handled: two tracebacks).
_ALLOCATION = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes"  # torch's CPU allocator
                         r"|Failed to allocate memory for requested buffer of size (\d+)")  # onnxruntime's
#: The flags that make a command ask for less memory, where it has them.
_MEMORY_FLAGS = ("--batch-size", "--eval-batch-size", "--width")
#: The line when even writing the out-of-memory line runs out of memory: made now, written without allocating.
_OUT_OF_MEMORY = b"cnnlab: error: out of memory; ask for less, or free some memory\n"


def build_parser() -> Parser:
    parser = Parser(prog="cnnlab", description="Train, evaluate and understand the lecture's CNNs. "
                                               "'cnnlab COMMAND --help' shows a command's options and defaults.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    # a command (or a group such as 'data') given without its subcommand prints its help: help_of
    parser.set_defaults(func=None, help_of=parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)command's own parser that ``argv`` reaches: ``cnnlab data fetch ...`` -> ``data fetch``'s."""
    for token in argv:
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if commands and token in commands[0].choices:
            parser = commands[0].choices[token]
    return parser


def _take_loose_inputs(command: argparse.ArgumentParser, args, extra: list[str]) -> list[str]:
    """A command whose last positional takes any number of paths (``predict``'s images) gets those typed after
    an option too (``cnnlab predict RUN --checkpoint best a.png``: argparse left ``a.png`` over), ``-`` (standard
    input, as argparse takes it as a positional) among them: ``cnnlab predict RUN --json -``. What is not taken (an
    unknown option) is returned."""
    dest = getattr(args, "loose_inputs", None)
    if dest is None or "--" in extra:
        return extra
    loose = [token for token in extra if _positional(token)]
    try:
        setattr(args, dest, [*getattr(args, dest), *map(path_arg, loose)])
    except argparse.ArgumentTypeError as err:
        metavar = next(a.metavar for a in command._actions if a.dest == dest)
        command.error(f"argument {metavar or dest}: {err}")
    return [token for token in extra if not _positional(token)]


def _positional(token: str) -> bool:
    """Whether argparse reads ``token`` as a positional, not an option: ``-`` alone is one (standard input)."""
    return token == "-" or not token.startswith("-")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    output.escape_unencodable()  # a run named réseau on an ASCII stdout: r\xe9seau, not a UnicodeEncodeError
    if argv[:1] == ["help"]:  # 'cnnlab help [COMMAND...]', as git and pip take it: that command's --help
        argv = [*argv[1:], "--help"]
    try:
        args, command = _parse(argv)
        if args.func is None:
            args.help_of.print_help()
            return 0
    except output.OutputError as err:  # --help, --version or a bare 'cnnlab' into a full disk or a closed stdout
        output.complain(f"cnnlab: error: {err}")
        return 2
    return _run(args, command)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """The parsed arguments and the (sub)command's own parser (argparse's own errors exit, as it does)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if (in_place := getattr(args, "in_place", None)) is not None and (again := in_place(argv)) != argv:
        args, extra = parser.parse_known_args(again)  # an input typed as an option's value (predict --show-input
        # IMAGE), parsed again where it was typed: among the inputs in their order (cli.predict.images_in_place)
    command = _command_parser(parser, argv)
    extra = _take_loose_inputs(command, args, extra)
    if extra:  # named by the command they were given to: 'see cnnlab compare --help', not 'cnnlab --help'
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv  # which flags were typed (cnnlab.cli.common.given_flags), not only their values
    args.typed = typed_options(command, argv)  # each typed flag's destination, as typed
    return args, command


#: The commands that never import torch, as (command, data subcommand): torch's import is not paid for them
#: (``data fetch`` loads the data as training does, with torch).
TORCHLESS_COMMANDS = (("runs", None), ("data", "info"))
#: The commands that take SIGINT even when started with it ignored, and SIGTERM/SIGHUP as a stop (one line, their
#: clean-up), from before torch's import (:func:`cnnlab.cli.common.take_sigint`).
SIGNAL_TAKING_COMMANDS = ("train", "compare", "analyze", "evaluate", "predict")
#: The commands that do their work in one process. Under torchrun (WORLD_SIZE above 1) each rank did it all: evaluate
#: evaluated the whole split in every process, each writing the run's summary.json and figures; compare said each of
#: its lines twice, then waited in its second run's join until it timed out. They are refused there, before any work
#: (:func:`_refuse_in_a_group`); train trains in a group, and runs, models and data read what is there (data fetch
#: as each rank of a training does).
ONE_PROCESS_COMMANDS = ("evaluate", "compare", "export", "predict", "serve", "analyze")


def import_torch_whole() -> None:
    """Import torch with Ctrl-C, SIGTERM and SIGHUP held back until it is loaded, then taken as ever. A Ctrl-C
    0.3-0.9 s after start landed inside torch's C++ import of numpy, whose binding layer swallowed or mangled it: 6
    times in 50 the command ran on as if nothing was pressed, exited 1 with "cannot load module more than once per
    process", or aborted (exit 134); and a run whose Ctrl-C was lost died at its report (numpy half-imported), listed
    failed. Held back, the signal is taken the moment torch is in (exit 130, or the run stops as it does)."""
    if "torch" in sys.modules or not hasattr(signal, "pthread_sigmask"):
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, output.STOPS)  # held while torch loads
    try:
        import torch  # noqa: F401
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _run(args, command: argparse.ArgumentParser) -> int:
    """The command's function, its errors each one line and an exit code."""
    try:
        _refuse_in_a_group(args)
        _check_current_folder()  # before torch's import, which dies in a folder that is gone
        for name in ("run", "resume", "teacher"):  # 'latest' names the newest run folder wherever a run is taken
            if getattr(args, name, None) == LATEST:
                setattr(args, name, str(resolve_run(LATEST)))
        if getattr(args, "command", None) in SIGNAL_TAKING_COMMANDS:
            take_sigint()  # before torch's import: a kill -INT to a background run (SIGINT ignored) is held, not lost
        if (getattr(args, "command", None), getattr(args, "data_cmd", None)) not in TORCHLESS_COMMANDS:
            if (early := getattr(args, "before_torch", None)) is not None:
                early(args)  # a command's checks that answer at once, not after torch's seconds (serve's port)
            check_torch_can_load()  # where its import would end the process in C code
            import_torch_whole()
        return args.func(args)
    except Interrupted as err:  # the position was saved: not an error, but not a success either
        output.complain(f"cnnlab: {_ranked(printable(str(err)))}")  # it names the run folder: one line
        return err.exit_code
    except CnnlabError as err:  # one line, whatever a quoted name holds (a newline in a file's name)
        output.complain(f"cnnlab: error: {_ranked(printable(str(err)))}")
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C; or SIGTERM/SIGHUP outside a training's loop (cli.common.take_sigint)
        signum = stop.signum if isinstance(stop, SignalTaken) else None
        output.complain(f"cnnlab: {_ranked('interrupted' if signum is None else f'interrupted by signal {signum}')}")
        return 130 if signum is None else 128 + signum
    except BrokenPipeError:
        if not output.stdout_closed():  # not our output's reader: some other pipe or socket, a bug
            raise
        output.discard_stdout(reader_gone=True)  # its reader went (| head -1): end quietly, as shells expect
        return output.EXIT_PIPE_CLOSED
    except OSError as err:  # pathlib's exists()/is_dir() raise these for a path given anywhere in a command
        if not _path_error(err):
            raise
        return 2
    except (MemoryError, RuntimeError, ImportError) as err:
        if not _out_of_memory(err):
            raise
        return _report_out_of_memory(err, command)


def _refuse_in_a_group(args) -> None:
    """A command of :data:`ONE_PROCESS_COMMANDS` started as one of a torchrun group: one line on each rank, before
    anything is read or written."""
    command = getattr(args, "command", None)
    if command not in ONE_PROCESS_COMMANDS or not _in_torchrun_group():
        return
    name = " ".join(filter(None, (command, getattr(args, "analyze_cmd", None))))
    raise CnnlabError(f"cnnlab {name} runs in one process, and this is one of a torchrun group (WORLD_SIZE="
                      f"{os.environ.get('WORLD_SIZE', '').strip()}); run it without torchrun (only cnnlab train trains "
                      "in a group: torchrun ... -m cnnlab train, one run at a time)")


def _check_current_folder() -> None:
    """The current folder removed (``rmdir`` from another shell): one line, not torch's ``oneMKL FATAL ERROR``
    at its import, nor ``runs`` finding no runs."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise CnnlabError("the current folder no longer exists; cd to another one") from None


#: The longest absolute path of the current folder, in bytes, in which torch's import works: in one of 4,096 bytes or
#: more (Linux's PATH_MAX, its terminating zero included) its MKL ends the process, "Intel oneMKL FATAL ERROR:
#: Cannot load .../libtorch_cpu.so" (measured: 4,095 loads, 4,096 does not), though os.getcwd() answers.
CWD_PATH_MAX = 4095
#: The least address space (``ulimit -v``, KB) that loading numpy and torch needs, numpy's OpenBLAS held to one
#: thread (:func:`check_torch_can_load`). Measured on x86_64 Linux with torch 2.13.0+cpu, numpy 2.4.6, Python 3.11:
#: ``cnnlab models`` failed under every limit up to 602,000 and ran from 604,000; below it, most limits ended the
#: process in C or C++ code (torch's ``std::bad_alloc`` terminate, OpenBLAS's "Memory allocation still failed",
#: glibc's "cannot allocate memory for thread-local data", a segmentation fault), whatever the command.
TORCH_FLOOR_KB = 600_000
#: The size of torch's main library (``lib/libtorch_cpu.so``) where :data:`TORCH_FLOOR_KB` was measured: a build
#: whose library is smaller lowers the floor by the difference (never refusing a limit such a build loads under).
TORCH_FLOOR_LIBRARY = 434_184_800
#: What each further OpenBLAS thread adds to numpy's import (its 32 MiB buffer and its stack): 646,000 KB with two
#: threads against 604,000 with one, measured as above.
OPENBLAS_THREAD_KB = 42_000
#: What a small net needs, measured as above: a prediction with a resnet run ran from 880,000 KB (920,000 with two
#: OpenBLAS threads), a training of 5 steps from 680,000 (said in the line: a limit to ask for).
SMALL_NET_KB = 1_000_000
#: The least data segment (``ulimit -d``, KB: the heap and every private writable mapping, not the libraries' code)
#: that loading numpy and torch needs, OpenBLAS held to one thread: measured as :data:`TORCH_FLOOR_KB` (and on the
#: same build), ``cnnlab models`` failed under every limit up to 182,000 and ran from 184,000 (with two OpenBLAS
#: threads: from 226,000, :data:`OPENBLAS_THREAD_KB` more); below 130,000 it ended in C code (OpenBLAS's "Memory
#: allocation still failed", glibc's "cannot allocate memory for thread-local data"). Not lowered for a smaller
#: library: the code of torch's libraries is not counted in this limit.
TORCH_DATA_FLOOR_KB = 180_000
#: What a small net needs of it, measured as above: a prediction with a resnet run ran from 460,000 KB (not 420,000),
#: a training of 5 steps under 300,000, ``evaluate --pretrained resnet`` from 350,000 (not 300,000). Since the run
#: files' and images' reads stopped reserving their size limits (``fileio.read_at_most``) the prediction and the
#: training run under 230,000; ``evaluate --pretrained resnet`` still needs 350,000.
SMALL_NET_DATA_KB = 500_000
#: The memory limits torch's import needs a floor of: ``ulimit``'s flag, ``resource``'s name of the limit, what
#: it limits (said in the refusal), the floor (KB) and what a small net needs.
_MEMORY_LIMITS = (("-v", "RLIMIT_AS", "address space", TORCH_FLOOR_KB, SMALL_NET_KB),
                  ("-d", "RLIMIT_DATA", "data segment", TORCH_DATA_FLOOR_KB, SMALL_NET_DATA_KB))


def check_torch_can_load() -> None:
    """One line, before torch is imported, where its import would end the process in C code: the current folder's
    path too long for it, or a memory limit under what torch's import needs (``ulimit -v`` under
    :data:`TORCH_FLOOR_KB`, ``ulimit -d`` under :data:`TORCH_DATA_FLOOR_KB`), the limit named. Under a memory limit
    numpy's OpenBLAS gets one thread unless ``OPENBLAS_NUM_THREADS`` asks for a number of them (a positive integer):
    each thread takes about 42 MB of the limit at numpy's import (2.7 GB on 64 cores), and cnnlab computes nothing
    with numpy's BLAS. An empty or ``0`` one is OpenBLAS's "a thread on each core", so it is set to 1 too."""
    where = len(os.fsencode(os.getcwd()))
    if where > CWD_PATH_MAX:
        raise CnnlabError(f"the current folder's path is too long ({where:,} bytes; torch loads only in a folder whose "
                          f"path is under {CWD_PATH_MAX + 1:,} bytes); cd to a shorter one")
    if not _memory_limit() or "numpy" in sys.modules:
        return
    if _openblas_threads_asked() is None:  # unset, empty, 0 or no number: OpenBLAS would start one on each core
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    limits = _memory_limits()
    for flag, _, what, floor_kb, small_kb in _MEMORY_LIMITS:
        floor, limit = _torch_floor(floor_kb, lowered=flag == "-v"), limits.get(flag, 0)
        if limit and limit < floor:
            raise CnnlabError(f"not enough memory to load torch's libraries (they need at least {floor:,} KB of "
                              f"{what}; a small net about {small_kb:,} KB); raise the memory limit (now ulimit "
                              f"{flag} {limit})")


def _torch_floor(floor_kb: int = TORCH_FLOOR_KB, lowered: bool = True) -> int:
    """``floor_kb`` (:data:`TORCH_FLOOR_KB`, or :data:`TORCH_DATA_FLOOR_KB`) for this torch (``lowered``: a smaller
    library than the one measured lowers it) and the threads numpy's OpenBLAS starts once :func:`check_torch_can_load`
    has set them: ``OPENBLAS_NUM_THREADS`` where it asks for a number, else one; at most the CPUs this process may run
    on (its affinity, as OpenBLAS counts them: ``taskset -c 0`` is one thread whatever the machine's cores). 0 where
    torch's library is not found (another platform's build, or no torch: its import says so)."""
    try:
        spec = importlib.util.find_spec("torch")
        size = os.stat(Path(spec.submodule_search_locations[0]) / "lib" / "libtorch_cpu.so").st_size
    except (AttributeError, ImportError, IndexError, OSError, TypeError, ValueError):
        return 0
    threads = min(_openblas_threads_asked() or 1, usable_cpus() or 1)
    smaller = max(0, TORCH_FLOOR_LIBRARY - size) // 1024 if lowered else 0
    return floor_kb - smaller + (threads - 1) * OPENBLAS_THREAD_KB


def _openblas_threads_asked() -> int | None:
    """The threads ``OPENBLAS_NUM_THREADS`` asks numpy's OpenBLAS for; None where it asks for none: unset, empty, 0,
    or no plain number (OpenBLAS reads those as 0, a thread on each core)."""
    text = os.environ.get("OPENBLAS_NUM_THREADS", "").strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def _path_error(err: OSError) -> bool:
    """One line for a path that is too long or lies behind a folder this user may not enter (the API's, from
    :func:`cnnlab.fileio.path_error`); False for others."""
    explained = path_error(err)
    if explained is not None:
        output.complain(f"cnnlab: error: {printable(str(explained))}")
    return explained is not None


def _out_of_memory(err: BaseException) -> str:
    """What an allocation that failed asked for ("" when ``err`` is not one): torch's CPU allocator
    (``RuntimeError: ... can't allocate memory: you tried to allocate N bytes``, or ``std::bad_alloc``), its CUDA
    one (``torch.OutOfMemoryError``), onnxruntime's (``Failed to allocate memory for requested buffer of size N``,
    which ``export`` raises as a ``RuntimeError``), Python's ``MemoryError``, or a shared library that could not be
    mapped (``ImportError: libtorch_cpu.so: failed to map segment from shared object``, under ``ulimit -v``). By name
    and text: torch is not imported here."""
    text = str(err)
    if isinstance(err, ImportError):
        return f"{text.strip()[:160]}" if "failed to map segment from shared object" in text else ""
    if isinstance(err, MemoryError):
        return "Python could not allocate"
    if type(err).__name__ == "OutOfMemoryError":
        return text.strip().split(". ")[0][:160] or "the GPU"
    asked = _ALLOCATION.search(text)
    if asked:
        return f"an allocation of {_size(int(asked.group(1) or asked.group(2)))} failed"
    if text == "can't start new thread" and _memory_limit():  # its stack did not fit under ulimit -v (or -d)
        return "no room for a new thread's stack: can't start new thread"
    if text == "could not create a primitive" and _memory_limit():  # oneDNN's convolution, its buffers refused
        return "oneDNN could not create a primitive"
    return "an allocation failed: std::bad_alloc" if "std::bad_alloc" in text else ""


def _memory_limits() -> dict[str, int]:
    """The process's memory limits in KB by ``ulimit``'s flag: its address space (``-v``) and data segment (``-d``),
    each where one is set (none: an empty dict, as without POSIX ``resource``)."""
    if resource is None:
        return {}
    limits = {flag: resource.getrlimit(getattr(resource, name))[0] for flag, name, *_ in _MEMORY_LIMITS
              if hasattr(resource, name)}
    return {flag: limit // 1024 for flag, limit in limits.items() if limit != resource.RLIM_INFINITY}


def _memory_limit() -> int:
    """The smaller of the process's memory limits in KB (:func:`_memory_limits`), 0 when there is none."""
    return min(_memory_limits().values(), default=0)


def _memory_limit_set() -> str:
    """The smaller memory limit as ``ulimit`` sets it, for the fix of an out-of-memory line: ``ulimit -v 900000``,
    ``ulimit -d 250000`` (the address space's where both are the same: it holds the data segment); "" for none."""
    limits = _memory_limits()
    flag = min(limits, key=lambda f: (limits[f], f != "-v"), default=None)
    return f"ulimit {flag} {limits[flag]}" if flag is not None else ""


def _size(n: int) -> str:
    """``360.0 GB``, ``19.3 MB``, ``512.0 KB``: an allocation's size as one reads it."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def _report_out_of_memory(err: BaseException, command: argparse.ArgumentParser) -> int:
    """The one line of an allocation that failed (exit code 2): what failed, while loading which library if it
    was an import, and the fixes that work for this command: its flags that ask for less, a higher limit where
    ``ulimit -v`` set one, more free memory. Should writing it run out of memory too, a line made beforehand."""
    try:
        library = _loading(err)
        traceback.clear_frames(err.__traceback__)  # the failed command's tensors, freed before anything else
        if isinstance(err, ImportError):
            libraries = f"{library}'s libraries" if library else "a shared library"
            what = f"not enough memory to load {libraries} ({_out_of_memory(err)})"
        else:
            what = f"out of memory ({_out_of_memory(err)}{f', while loading {library}' if library else ''})"
        flags = [] if library else [flag for flag in _MEMORY_FLAGS if flag in command._option_string_actions]
        fixes = [f"ask for less (a smaller {' or '.join(', '.join(flags).rsplit(', ', 1))})"] if flags else []
        if limit := _memory_limit_set():
            fixes.append(f"raise the memory limit (now {limit})")
        fixes.append("free some memory")
        output.complain(f"cnnlab: error: {what}; {', '.join(fixes[:-1])}{', or ' if len(fixes) > 1 else ''}"
                        f"{fixes[-1]}")
    except MemoryError:
        try:
            os.write(2, _OUT_OF_MEMORY)
        except OSError:
            pass
    return 2


def _loading(err: BaseException) -> str:
    """The library (top-level package) whose import ``err`` broke off, "" when it came from no import: the
    deepest module body in its traceback (``torch/__init__.py``, run by ``import torch``)."""
    name, tb = "", err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "<module>":
            name = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        tb = tb.tb_next
    return name if name and name != "cnnlab" else (getattr(err, "name", None) or "").split(".")[0]


def console(argv: list[str] | None = None) -> NoReturn:
    """The ``cnnlab`` program (console script and ``python -m cnnlab``): :func:`main`, then a quicker exit.

    When the interpreter exits it runs one last garbage collection over every object alive (torch's import
    alone leaves about 166,000 that it tracks), then frees every module and object, and torch's C++ objects
    with them: 0.1-0.4 s on 2 cores (docs/speed.md), paid after the work is done. By the time :func:`main`
    returns, everything cnnlab wrote is closed, flushed and renamed into place (by context managers, not
    finalizers), so all that would do is free memory the OS takes back anyway. :func:`_shut_down` does the
    rest of the interpreter's exit (threads joined, exit handlers run, stdout and stderr flushed), then
    ``os._exit``. Not in :func:`main` itself, which tests and scripts call in a process that goes on. An
    exception out of :func:`main` (a bug) takes the interpreter's own way out, with its traceback.

    Under torchrun the process skips the interpreter's shutdown altogether (:func:`_exit_now`).
    """
    output.guard_stdout()  # a full disk under stdout: one line, not a traceback
    if not _in_torchrun_group():
        code = main(argv)
        _default_stop_signals()
        _shut_down(code)
    try:
        code = main(argv)
    except Exception:  # a bug: its traceback, then the same quick exit
        traceback.print_exc()
        code = 1
    _exit_now(code)


def _default_stop_signals() -> None:
    """Once the command is done, a further SIGINT/SIGTERM/SIGHUP ends the process at once: a second one sent while
    it exited raised in cnnlab's handler inside torch's exit hooks ("Exception ignored in atexit callback", 12 lines)."""
    for sig in output.STOPS:
        if signal.getsignal(sig) not in (signal.SIG_IGN, None):  # one ignored from the start (nohup) stays so
            signal.signal(sig, signal.SIG_DFL)


def _shut_down(code: int) -> NoReturn:
    """The interpreter's exit less its garbage collection and freeing: wait for the threads that are not
    daemons (as the interpreter does, ``threading._shutdown``), run the ``atexit`` handlers (logging's flush,
    temporary folders' clean-up, a coverage tool's report), flush stdout and stderr, ``os._exit``."""
    gc.freeze()  # a collection triggered while the handlers run need not walk torch's objects either
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    else:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    _exit_now(code)


def _ranked(line: str) -> str:
    """A line of a torchrun group's rank other than 0 says whose it is ("rank 1: ..."): every rank meets the same
    refusal of the same settings, and two identical lines read as one process's error said twice."""
    rank = os.environ.get("RANK", "0").strip()
    if not _in_torchrun_group() or not rank.isdigit() or rank == "0" or line.startswith("rank "):
        return line
    return f"rank {rank}: {line}"


def _in_torchrun_group() -> bool:
    """torchrun's environment with more than one process (what :class:`cnnlab.distributed.Dist` reads)."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1")


def _exit_now(code: int) -> NoReturn:
    """End a torchrun worker without the interpreter's shutdown (``os._exit``, after flushing stdout/stderr).

    gloo's worker threads outlive ``destroy_process_group()`` for a moment: the thread that ran the
    last collective still frees that work's tensors, which needs the GIL. If the main thread has reached
    the interpreter's shutdown by then, Python ends the waiting thread in a way C++ cannot unwind, and
    the process dies with "terminate called without an active exception" (SIGABRT): a finished run
    reported failed by torchrun (seen here in about one run in seven on 2 loaded cores; a core dump showed
    ``ProcessGroupGloo::runLoop`` freeing an ``AsyncBarrierWork`` inside ``take_gil`` during
    ``Py_FinalizeEx``). After :func:`main` everything cnnlab wrote is closed and renamed into place, so
    nothing is lost by skipping the shutdown; a rank that failed (a dead peer) exits the same way.
    """
    code = code if isinstance(code, int) and 0 <= code <= 255 else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # output left for a reader that had gone: as a shell reports SIGPIPE
            code = code or output.EXIT_PIPE_CLOSED
        except output.OutputError as err:  # the output, held back until now, could not be written
            if not code:
                output.complain(f"cnnlab: error: {err}")
                code = 2
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(code)
