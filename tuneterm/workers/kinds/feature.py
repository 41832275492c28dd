"""Job kind ``feature``: a classifier on a frozen model's hidden states (``tuneterm.workers.classifier``)."""

from __future__ import annotations

from tuneterm.workers.classifier import CLASSIFIER_FILE, train_classifier


def run(ctx) -> None:
    """Job kind ``feature``: config model, dataset, layer, pooling, c, seed."""
    cfg = ctx.config
    model = cfg.get("model", "smollm2-135m-instruct")
    ctx.event(type="stage", stage="features", model=model, dataset=cfg.get("dataset"))
    metrics = train_classifier(model, cfg["dataset"], ctx.output_dir, int(cfg.get("layer", -1)),
                               cfg.get("pooling", "mean"), float(cfg.get("c", 1.0)),
                               int(cfg.get("seed", 0)), event=ctx.event, log=ctx.log)
    from tuneterm.workers.tracking import TrackerRun

    run = TrackerRun.start(ctx, cfg)  # no Trainer here: the figures go to the trackers directly
    if run is not None:
        run.metrics({f"feature/{k}": v for k, v in metrics.items()})
        run.close()
    ctx.write_artifact("classifier", ctx.output_dir / CLASSIFIER_FILE, base=model,
                       layer=int(cfg.get("layer", -1)), pooling=cfg.get("pooling", "mean"),
                       metrics={k: v for k, v in metrics.items() if k.endswith("accuracy")})
    from tuneterm.core.fsutil import atomic_write_text
    from tuneterm.workers.train.output import hub_card

    atomic_write_text(ctx.output_dir / "README.md", hub_card(ctx, "\n".join(
        [f"Logistic regression on layer {cfg.get('layer', -1)} ({cfg.get('pooling', 'mean')} pooling) of "
         f"`{model}`.", ""] + [f"- {k}: {v}" for k, v in metrics.items() if isinstance(v, (int, float))])))
