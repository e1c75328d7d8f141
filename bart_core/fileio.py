"""Crash-safe file writes, used by every writer of the library (model files, configs, tokenizer files, recipe
checkpoints, conversion output).

* ``atomic_path`` / ``atomic_write_bytes`` / ``atomic_write_text``: one file, written to a temporary file in the
  same folder, fsynced, then renamed over the target. A crash leaves the old file or the new one, never half.
* ``atomic_files``: a set of files replaced together (a checkpoint: weights, shards, index, configs). Every file
  is staged under a temporary name first; only when all are complete are they renamed into place, and only then
  are the files of the previous set that the new one does not contain removed. Writers of one folder hold a lock,
  so two of them never interleave.
* ``folder_lock``: the lock (``filelock``, in a per-user lock folder, so the user's folder gains no lock file).
* ``clean_stale_temps``: temporary entries carry the writer's process id; entries of processes that no longer
  exist are removed by the next writer of the folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import tempfile
from typing import Callable, Iterable, Iterator

_TMP_RE = re.compile(r"^\.(?:tmp|old)-.*-pid(\d+)-[^-]*$|^\..*\.(?:tmp|old)-pid(\d+)-[^-]*$")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(name: str, kind: str = "tmp") -> str:
    """Prefix of a temporary entry for ``name`` owned by this process (``.tmp-NAME-pidN-``)."""
    return f".{kind}-{name}-pid{os.getpid()}-"


def stale_pid(entry: str) -> int | None:
    """The writer pid encoded in a temporary entry name of this module, or None for any other name."""
    m = _TMP_RE.match(entry)
    if m is None:
        return None
    return int(m.group(1) or m.group(2))


def clean_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Remove temporary files and folders left in ``folder`` by writers that died (their pid is gone)."""
    folder = os.fspath(folder)
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        pid = stale_pid(entry)
        if pid is None or pid_alive(pid):
            continue
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        removed.append(path)
    return removed


def fsync_dir(folder: str) -> None:
    """Make renames in ``folder`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _lock_dir() -> str:
    base = os.environ.get("BART3_LOCK_DIR") or os.path.join(tempfile.gettempdir(), f"bart3-locks-{os.getuid()}")
    os.makedirs(base, exist_ok=True)
    return base


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike, timeout: float = -1) -> Iterator[None]:
    """Hold the write lock of ``path`` (a folder or file, by its real path). Blocks until free, or raises
    ``TimeoutError`` naming the path after ``timeout`` seconds (``-1``: wait as long as it takes)."""
    from filelock import FileLock, Timeout

    real = os.path.realpath(os.fspath(path))
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    lock = FileLock(os.path.join(_lock_dir(), key + ".lock"))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise TimeoutError(f"{real}: another process is writing here (lock not released after {timeout} s)") \
            from None
    try:
        yield
    finally:
        lock.release()


def _write_and_sync(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``, on error
    removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name(os.path.basename(path)), dir=folder)
    os.close(fd)
    try:
        yield tmp
        _fsync_file(tmp)
        _publish(tmp, path)
        fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        _write_and_sync(tmp, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_file(path: str) -> None:
    with contextlib.suppress(IsADirectoryError, PermissionError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: str, path: str) -> None:
    """Rename ``tmp`` onto ``path`` with the permissions a plainly created file would have (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


class FileSet:
    """Stages the files of one checkpoint save; see ``atomic_files``."""

    def __init__(self, directory: str):
        self.directory = directory
        self.staged: dict[str, str] = {}  # final name -> temporary path

    def path(self, name: str) -> str:
        """A temporary path in the folder for the file that will be published as ``name``."""
        if os.sep in name or name in ("", ".", ".."):
            raise ValueError(f"file name {name!r} must be a plain name inside {self.directory}")
        if name in self.staged:
            raise ValueError(f"{name} is staged twice in one save")
        fd, tmp = tempfile.mkstemp(prefix=temp_name(name), dir=self.directory)
        os.close(fd)
        self.staged[name] = tmp
        return tmp

    def write_bytes(self, name: str, data: bytes) -> None:
        _write_and_sync(self.path(name), data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_files(directory: str | os.PathLike, replaces: Callable[[str], bool] | Iterable[str] = (),
                 lock: bool = True) -> Iterator[FileSet]:
    """Write a set of files into ``directory`` as one unit.

    Files are staged through ``FileSet.path(name)``. When the block ends without error every staged file is
    fsynced and renamed into place (order: as staged; put the file that makes a folder loadable, such as
    ``config.json``, last), the folder is fsynced, and then the entries named by ``replaces`` (a predicate or a
    collection of names) that the new set did not write are removed. On any error, including a full disk, the
    staged files are removed and the folder is as it was. Writers of one folder are serialised by ``folder_lock``.
    """
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    with folder_lock(directory) if lock else contextlib.nullcontext():
        clean_stale_temps(directory)
        files = FileSet(directory)
        try:
            yield files
            for tmp in files.staged.values():
                _fsync_file(tmp)
            for name, tmp in files.staged.items():
                _publish(tmp, os.path.join(directory, name))
            fsync_dir(directory)
        except BaseException:
            for tmp in files.staged.values():
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
            raise
        stale = replaces if callable(replaces) else set(replaces).__contains__
        for entry in os.listdir(directory):
            if entry not in files.staged and stale(entry) and os.path.isfile(os.path.join(directory, entry)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, entry))
        fsync_dir(directory)


# ----------------------------------------------------------------------------------------- folder swap
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    res = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def recover_folder_swap(dst: str) -> list[str]:
    """Undo what a killed ``replace_folder`` left beside ``dst``: a previous ``dst`` moved aside (restored
    when ``dst`` is missing, else removed) and staging folders of dead writers (removed)."""
    dst = os.path.abspath(dst)
    parent, base = os.path.split(dst)
    actions = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return actions
    mine = re.compile(rf"^\.{re.escape(base)}\.(tmp|old)-pid(\d+)-[^-]*$")
    for entry in sorted(entries):
        m = mine.match(entry)
        if m is None or pid_alive(int(m.group(2))):
            continue
        path = os.path.join(parent, entry)
        if m.group(1) == "old" and not os.path.exists(dst):
            os.rename(path, dst)
            actions.append(f"restored {dst} from {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            actions.append(f"removed {path}")
    return actions


def staging_folder(dst: str) -> str:
    """A new, empty staging folder beside ``dst`` (same file system, so the final rename is atomic)."""
    parent, base = os.path.split(os.path.abspath(dst))
    return tempfile.mkdtemp(prefix=f".{base}.tmp-pid{os.getpid()}-", dir=parent)


def replace_folder(staged: str, dst: str) -> None:
    """Put the complete folder ``staged`` at ``dst``. An existing ``dst`` is exchanged atomically where the
    system supports it, else moved aside first (``recover_folder_swap`` repairs a kill between the two renames);
    the previous contents are removed only once the new folder is in place."""
    dst = os.path.abspath(dst)
    parent, base = os.path.split(dst)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staged, 0o777 & ~umask)  # mkdtemp makes a private folder; the output is a normal one
    for root, dirs, names in os.walk(staged):
        for name in names:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
    for name in os.listdir(staged):
        _fsync_file(os.path.join(staged, name))
    fsync_dir(staged)
    if not os.path.exists(dst):
        os.rename(staged, dst)
    elif _exchange(staged, dst):
        old = tempfile.mkdtemp(prefix=f".{base}.old-pid{os.getpid()}-", dir=parent)
        os.rmdir(old)
        os.rename(staged, old)  # ``staged`` now holds the previous contents
        shutil.rmtree(old, ignore_errors=True)
    else:
        old = tempfile.mkdtemp(prefix=f".{base}.old-pid{os.getpid()}-", dir=parent)
        os.rmdir(old)
        os.rename(dst, old)
        os.rename(staged, dst)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(parent)
