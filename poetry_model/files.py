"""Writing files and folders so that a crash never leaves a half-written one under the final name.

    with atomic_path("out/results.json") as tmp:    # write tmp; it becomes out/results.json on success
        tmp.write_text(text)
    write_text_atomic("out/results.md", text)
    replace_dir(Path("ckpt.tmp"), Path("ckpt"))      # a complete folder takes the place of another
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(path: str | Path) -> Path:
    """`name.tmp.ext` beside `path`: the same folder (so a rename is atomic) and the same extension (so
    writers that add one, such as np.save, write exactly this name)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.tmp{path.suffix}") if path.suffix else path.with_name(path.name + ".tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write; it replaces `path` in one rename when the block ends, or is removed on error."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` in one rename: readers see the old file or the new one, never part."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def replace_dir(new: str | Path, out: str | Path) -> Path:
    """Move the complete folder `new` to `out`, replacing what is there.

    No OS swaps two directories in one step everywhere, so the old folder is first renamed aside
    (`out.old`), `new` renamed into place, and the old one removed last: at every moment `out` or
    `out.old` is a complete folder, and a crash never leaves a half-copied `out`."""
    new, out = Path(new), Path(out)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out
