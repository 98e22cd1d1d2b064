"""Every file the project writes or reads back, handled one way: writes are atomic (a temporary file in the same
directory, fsynced, then renamed, so a kill or a full disk leaves the previous file intact); JSON-lines records
survive a torn last line; a run directory is owned by one process at a time; a file that cannot be read fails
with ``BadFileError`` naming it and what is wrong (the command line turns it into exit code 2)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings

import torch


TEMP_PREFIX = ".tmp-"  # atomic writes' temporary files (removed by remove_orphan_temps)


class BadFileError(ValueError):
    """A file exists but is not what it should be (truncated, foreign, corrupt)."""


class RunDirBusyError(RuntimeError):
    """Another live process holds the run directory's lock."""


def _write_atomic(path: str, write, binary: bool) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=os.path.splitext(path)[1], dir=directory)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj, path: str) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    _write_atomic(path, lambda f: torch.save(obj, f), binary=True)


def write_text_atomic(path: str, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text), binary=False)


def load(path: str, map_location="cpu"):
    """A torch file (``weights_only=True``: never runs pickled code). Missing -> FileNotFoundError; truncated,
    empty or not a torch file -> BadFileError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise BadFileError(f"{path}: the file is empty (an interrupted copy?)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadFileError(f"{path}: cannot be read as a torch checkpoint (truncated or not a torch file): "
                           f"{reason}") from e


def expect_keys(obj, path: str, keys: tuple, what: str) -> dict:
    """``obj`` (loaded from ``path``) as a dict holding ``keys``; otherwise BadFileError saying it is not ``what``."""
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise BadFileError(f"{path}: not {what} (expected the keys {list(keys)}, found {found})")
    return obj


def load_state_into(module: torch.nn.Module, state: dict, path: str) -> None:
    """``module.load_state_dict(state)`` where a mismatch (another model, another head size) is a BadFileError
    naming ``path`` and the first mismatching keys."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise BadFileError(f"{path}: its weights do not fit {type(module).__name__}: "
                           f"{' '.join(lines[1:4]) or lines[0]}") from e


def append_jsonl(path: str, row: dict) -> None:
    """Append one record as a single write, fsynced: a kill leaves at worst a torn last line, which
    ``read_jsonl`` drops."""
    line = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size and not _ends_with_newline(fd):
            os.write(fd, b"\n")  # a torn line before this one stays its own (dropped) line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_with_newline(fd: int) -> bool:
    return os.pread(fd, 1, os.fstat(fd).st_size - 1) == b"\n"


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSON-lines file ([] when it does not exist). A line that does not parse is dropped with a
    warning if it is the last one (a write cut short); anywhere else it is a BadFileError naming the line."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if all(not rest.strip() for rest in lines[i + 1:]):
                warnings.warn(f"{path}: dropped a torn last line {i + 1} (a write was cut short)", stacklevel=2)
                break
            raise BadFileError(f"{path}: line {i + 1} is not a JSON record ({e}); fix or delete the line") from e
        rows.append(row)
    return rows


def remove_orphan_temps(directory: str) -> list[str]:
    """Delete the temporary files of atomic writes that a killed process left in ``directory`` (call it while
    holding the directory's lock, so no live writer owns them). Returns their names."""
    if not os.path.isdir(directory):
        return []
    names = [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]
    for n in names:
        os.unlink(os.path.join(directory, n))
    return names


@contextlib.contextmanager
def run_dir_lock(run_dir: str):
    """Hold ``run_dir`` for this process: an exclusive OS lock on ``<run_dir>/.lock`` (released when the block
    ends or the process dies, SIGKILL included). A second holder gets RunDirBusyError naming the first."""
    import fcntl

    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunDirBusyError(f"run directory {run_dir} is in use by {holder}; wait for it to finish or "
                                  "choose another run directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


__all__ = ["BadFileError", "RunDirBusyError", "append_jsonl", "expect_keys", "load", "load_state_into",
           "read_jsonl", "remove_orphan_temps", "run_dir_lock", "save_atomic", "write_text_atomic"]
