"""Job kind ``fulldisk``: the real train kind on a disk that fills up at one checkpoint.

``torch.save`` (the optimizer state of a checkpoint) writes part of its file and then raises
``OSError(ENOSPC)`` while the checkpoint of step ``fulldisk_step`` is saved, as a full disk does.
A resumed run (``jobs resume``) finds the disk free again.
"""

from __future__ import annotations

import errno
import os


def run(ctx) -> None:
    import torch

    step = int(ctx.config["fulldisk_step"])
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not ctx.resume and isinstance(f, (str, os.PathLike)) and f"checkpoint-{step}" in str(f):
            with open(f, "wb") as fh:
                fh.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    ctx.kind = "train"  # the failure report estimates what a train job writes
    from tuneterm.workers.kinds import train

    train.run(ctx)
