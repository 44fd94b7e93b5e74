"""Safe file primitives: reading files we are handed, and writing files without ever losing one.

Reading. A path a user gives may be a FIFO, a device, a directory, a dangling link or unreadable;
`open_regular` refuses everything but a regular file by its type, before anything blocks, and every
failure is one ValueError naming the path. JSON is read with a size limit and survives deep nesting.

Writing: ONE overwrite policy for every output of this project.
- Nothing existing is replaced unless the caller says `overwrite=True` (CLIs: `--force`).
- A file is written to a temporary name beside the target and moved into place in one step; without
  `overwrite` that step itself refuses to replace a file created meanwhile (no check-then-replace).
- A directory is replaced only when it holds nothing but a checkpoint (or nothing at all).
- On any error, SIGINT or SIGTERM the temporary files are removed, and so are the parent
  directories this write created.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

MAX_JSON_BYTES = 64 * 2**20  # config.json, preprocessor_config.json, shard indexes
# What a checkpoint directory may hold for `atomic_directory(overwrite=True)` to replace it.
CHECKPOINT_FILES = re.compile(
    r"(config\.json|preprocessor_config\.json|model\.safetensors|model\.safetensors\.index\.json|"
    r"model-\d+-of-\d+\.safetensors|pytorch_model\.bin|pytorch_model\.bin\.index\.json|"
    r"pytorch_model-\d+-of-\d+\.bin|flax_model\.msgpack)")


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM while an output is being written, so that the write
    unwinds and removes its temporary files like any other failure."""


# ---------------------------------------------------------------------------------------------
# reading


def regular_file_size(path: str | os.PathLike, what: str = "file") -> int:
    """The size of `path` after checking that it is a regular, non-empty file (links followed)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such {what}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ValueError(f"{path!r}: cannot access the {what} ({getattr(e, 'strerror', None) or e})") from None
    _check_regular(path, st, what)
    return st.st_size


def _check_regular(path: str, st: os.stat_result, what: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path} is a directory, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file")
        raise ValueError(f"{path} is {kind}, expected a {what} (a regular file)")
    if st.st_size == 0:
        raise ValueError(f"{path}: empty {what}")


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, what: str = "file") -> Iterator[IO[bytes]]:
    """`open(path, "rb")` for regular files only. The type is checked on the opened descriptor
    too (O_NONBLOCK: opening a FIFO swapped in meanwhile does not block)."""
    path = os.fspath(path)
    regular_file_size(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ValueError(f"{path}: cannot open the {what} ({e.strerror or e})") from None
    try:
        _check_regular(path, os.fstat(fd), what)
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_bytes(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The whole of a regular file of at most `limit` bytes."""
    path = os.fspath(path)
    size = regular_file_size(path, what)
    if size > limit:
        raise ValueError(f"{path}: {size:,} bytes is over the {limit:,}-byte limit for a {what}")
    with open_regular(path, what) as f:
        try:
            return f.read(limit + 1)[:limit]
        except OSError as e:
            raise ValueError(f"{path}: cannot read the {what} ({e.strerror or e})") from None


def read_json(path: str | os.PathLike, what: str = "JSON file", limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON document from a regular file; malformed, oversized or too deeply nested -> ValueError."""
    path = os.fspath(path)
    raw = read_bytes(path, limit, what)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a {what} (not UTF-8: {e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a {what} (invalid JSON: {e})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a {what} (nested too deeply)") from None


def expect_type(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    """`value` if it has one of `types` (bool is not an int here), else a ValueError naming `where`."""
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in
                                           (types if isinstance(types, tuple) else (types,)))
    if not ok:
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ValueError(f"{where}: expected {names}, got {type(value).__name__} {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# writing

@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """While writing in the main thread, SIGTERM raises `Terminated` (SIGINT already raises
    KeyboardInterrupt), so the write's cleanup runs. Elsewhere the handlers are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield  # the application handles SIGTERM itself
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_RENAME_NOREPLACE = 1
_libc: Any = None


def _rename_noreplace(src: str, dst: str) -> None:
    """rename(2) that fails with FileExistsError instead of replacing `dst`, atomically where the
    kernel offers renameat2(RENAME_NOREPLACE) (Linux); elsewhere a hard link for files."""
    renameat2 = _libc_function("renameat2")
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(f"{dst} exists; refusing to overwrite it (pass overwrite=True / --force)")
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst)
    if os.path.isdir(src):
        if os.path.lexists(dst):
            raise FileExistsError(f"{dst} exists; refusing to overwrite it (pass overwrite=True / --force)")
        os.rename(src, dst)
        return
    try:
        os.link(src, dst)  # fails if dst exists, atomically
    except FileExistsError:
        raise FileExistsError(f"{dst} exists; refusing to overwrite it (pass overwrite=True / --force)") from None
    os.unlink(src)


def _refuse_existing(path: str, overwrite: bool, want_dir: bool) -> None:
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it (pass overwrite=True / --force)")
    if os.path.islink(path):
        raise ValueError(f"{path} is a symbolic link; refusing to replace it")
    if want_dir and not os.path.isdir(path):
        raise ValueError(f"{path} exists and is not a directory; refusing to replace it")
    if not want_dir and not os.path.isfile(path):
        raise ValueError(f"{path} exists and is not a regular file; refusing to replace it")
    if want_dir:
        foreign = sorted(n for n in os.listdir(path) if not CHECKPOINT_FILES.fullmatch(n))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ValueError(f"{path} holds files that are not part of a checkpoint ({shown}); "
                             f"refusing to replace it even with --force")


def _make_parents(directory: str) -> list[str]:
    """os.makedirs(directory), returning the directories it created (outermost first)."""
    created: list[str] = []
    missing = []
    d = os.path.abspath(directory)
    while not os.path.isdir(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            if not os.path.isdir(d):
                _remove_dirs(created)
                raise ValueError(f"{d} exists and is not a directory") from None
            continue
        except OSError:
            _remove_dirs(created)
            raise
        created.append(d)
    return created


def _remove_dirs(created: list[str]) -> None:
    for d in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(d)  # only if still empty


def _temp_beside(path: str) -> str:
    """An empty temporary file beside `path` (hidden, same filesystem: renamed into place later)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=os.path.dirname(path))
    os.close(fd)
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *,
                 overwrite: bool = False) -> None:
    """Write `path` through `write(file)`: all of it or, on any error or signal, nothing."""
    atomic_write_path(path, lambda tmp: _write_via_file(tmp, write), overwrite=overwrite)


def _write_via_file(tmp: str, write: Callable[[IO[bytes]], None]) -> None:
    with open(tmp, "wb") as f, _early_writeback(f.fileno()):
        write(f)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _early_writeback(fd: int, every: float = 0.25) -> Iterator[None]:
    """While a large file is being written, ask the kernel (Linux sync_file_range) every `every`
    seconds to start writing back what is already dirty, so that the final fsync finds little left:
    the disk works while the writer computes the next tensor."""
    libc = _libc_function("sync_file_range")
    if libc is None:
        yield
        return
    done = threading.Event()

    def kick() -> None:
        while not done.wait(every):
            libc(fd, ctypes.c_int64(0), ctypes.c_int64(0), 2)  # SYNC_FILE_RANGE_WRITE: asynchronous

    thread = threading.Thread(target=kick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _libc_function(name: str) -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    return getattr(_libc, name, None) if _libc else None


def atomic_write_path(path: str | os.PathLike, write: Callable[[str], None], *,
                      overwrite: bool = False) -> None:
    """Like `atomic_write` for writers that take a file name (`write(tmp_path)`)."""
    path = os.path.abspath(os.fspath(path))
    _refuse_existing(path, overwrite, want_dir=False)
    with _signals_unwind():
        created = _make_parents(os.path.dirname(path))
        tmp = _temp_beside(path)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
            if overwrite and os.path.lexists(path):
                _refuse_existing(path, overwrite, want_dir=False)
                os.replace(tmp, path)
            else:
                _rename_noreplace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            _remove_dirs(created)
            raise


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), overwrite=overwrite)


def atomic_directory(path: str | os.PathLike, fill: Callable[[str], None], *,
                     overwrite: bool = False) -> None:
    """Create directory `path` by `fill(tmp_dir)` and one rename; on failure nothing is left.

    An existing `path` is replaced only with `overwrite`, only when it holds nothing but checkpoint
    files (`CHECKPOINT_FILES`), and only once the new one is complete."""
    path = os.path.abspath(os.fspath(path))
    _refuse_existing(path, overwrite, want_dir=True)
    with _signals_unwind():
        parent = os.path.dirname(path)
        created = _make_parents(parent)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
        old = None
        try:
            fill(tmp)
            os.chmod(tmp, 0o777 & ~_umask())
            if overwrite and os.path.lexists(path):
                _refuse_existing(path, overwrite, want_dir=True)
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
                os.rmdir(old)
                os.rename(path, old)
            _rename_noreplace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not os.path.lexists(path):
                os.rename(old, path)  # put the previous output back
            _remove_dirs(created)
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_target(path: str | os.PathLike, *, overwrite: bool, directory: bool) -> None:
    """Raise now what writing `path` later would raise: FileExistsError without `overwrite`, a
    ValueError for something that must never be replaced (a symlink, a directory of other files,
    a directory where a file goes or the reverse). CLIs call it before any work starts."""
    _refuse_existing(os.path.abspath(os.fspath(path)), overwrite, want_dir=directory)


def atomic_write_files(files: dict[str, Callable[[IO[bytes]], None]], *, overwrite: bool = False) -> None:
    """Several files written as a set: all of them or, on any error or signal, none (and with
    `overwrite`, the previous ones back in place)."""
    paths = {os.path.abspath(os.fspath(p)): w for p, w in files.items()}
    for p in paths:
        _refuse_existing(p, overwrite, want_dir=False)
    with _signals_unwind():
        created: list[str] = []
        temps: dict[str, str] = {}
        backups: dict[str, str] = {}
        placed: list[str] = []
        try:
            for p, write in paths.items():
                created += _make_parents(os.path.dirname(p))
                temps[p] = tmp = _temp_beside(p)
                _write_via_file(tmp, write)
                os.chmod(tmp, 0o666 & ~_umask())
            for p in paths:
                if overwrite and os.path.lexists(p):
                    _refuse_existing(p, overwrite, want_dir=False)
                    backup = temps[p] + ".old"
                    os.rename(p, backup)
                    backups[p] = backup
                _rename_noreplace(temps[p], p)
                placed.append(p)
        except BaseException:
            for p in placed:
                with contextlib.suppress(OSError):
                    os.unlink(p)
            for p, backup in backups.items():
                with contextlib.suppress(OSError):
                    os.rename(backup, p)
            for tmp in temps.values():
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            _remove_dirs(created)
            raise
    for backup in backups.values():
        with contextlib.suppress(OSError):
            os.unlink(backup)
