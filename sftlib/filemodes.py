"""File modes that follow the umask, whoever wrote the file.

Most writers (`open`, `Path.write_text`, `torch.save`) create files with mode
`0o666 & ~umask`, but some do not: safetensors (and with it `save_pretrained`,
`Trainer.save_model`, every checkpoint) writes through a temporary file that keeps mode
0600, and so does anything built on `tempfile.mkstemp` + rename. A report folder then holds
0644 tables next to 0600 weights, which a colleague or a web server cannot read.
`match_umask` puts a written file or folder tree back to what the umask asks for: files
`0o666 & ~umask`, folders `0o777 & ~umask`. sftlib calls it where such writers end (final
model, checkpoints, exports, fetched assets).

Not supported: folders holding executables (their x bits are dropped), files owned by
someone else (chmod raises PermissionError), symbolic links (left as they are, not followed).
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC_STATUS = Path("/proc/self/status")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it in /proc (Python
    has no getter; `os.umask` can only set, and setting it briefly would let another thread
    create a file under the wrong mask). Elsewhere it is read by setting and restoring."""
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode `mkdir()` gives a new folder under the current umask."""
    return 0o777 & ~current_umask()


def match_umask(path: str | Path) -> Path:
    """Give `path` (a file, or a folder and everything below it) the modes the umask asks
    for; returns `path`. Symbolic links are skipped."""
    path = Path(path)
    files, folders = file_mode(), folder_mode()
    if path.is_symlink():
        return path
    if path.is_file():
        os.chmod(path, files)
        return path
    os.chmod(path, folders)
    for parent, dirnames, filenames in os.walk(path):  # does not descend into links
        for names, mode in ((dirnames, folders), (filenames, files)):
            for name in names:
                target = os.path.join(parent, name)
                if not os.path.islink(target):
                    os.chmod(target, mode)
    return path
