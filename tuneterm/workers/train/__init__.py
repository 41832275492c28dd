"""Training, the library: chat data to batches (``data``), the ways to train (``methods``), the
Trainer with job events (``trainer``), the artifact (``output``) and DPO (``dpo``). The job kinds
that use it are ``tuneterm.workers.kinds.train``, ``.sequential`` and ``.distill``."""
