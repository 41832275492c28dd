"""A job context that receives a stop request (what SIGTERM does) right after training step
``at`` is logged: the in-process way to test checkpoint-on-stop and resume."""

from __future__ import annotations

from tuneterm.workers.jobctx import JobContext


class StopAtStep(JobContext):
    def __init__(self, job_dir, at: int, **kw):
        super().__init__(job_dir, **kw)
        self.at = at

    def event(self, **fields) -> None:
        super().event(**fields)
        if fields.get("type") == "train" and fields.get("step") == self.at:
            self.request_stop()
