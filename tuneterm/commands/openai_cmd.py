"""``tuneterm hosted ... --provider P``: submit and follow hosted fine-tuning jobs on any provider.

Providers: openai, azure, together, fireworks, mistral (:mod:`tuneterm.core.providers`).
``tuneterm openai ...`` is the same group with ``--provider openai``.

Examples::

    tuneterm hosted submit tickets --provider together --model meta-llama/Meta-Llama-3.1-8B-Instruct-Reference --yes
    tuneterm hosted wait ft-abc --provider together

    tuneterm openai submit tickets --model gpt-4.1-mini --suffix tickets --dry-run
    tuneterm openai submit tickets --model gpt-4.1-mini --yes
    tuneterm openai jobs
    tuneterm openai events ftjob-abc --follow
    tuneterm openai wait ftjob-abc
    tuneterm openai models

Keys come from each SDK's own environment variable only (OPENAI_API_KEY, AZURE_OPENAI_API_KEY,
TOGETHER_API_KEY, FIREWORKS_API_KEY, MISTRAL_API_KEY); --base-url or TUNETERM_<PROVIDER>_BASE_URL
(OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT) picks the endpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

ORDER = 35


PROVIDERS = ("openai", "azure", "together", "fireworks", "mistral")


def register(sub: argparse._SubParsersAction) -> None:
    hosted = sub.add_parser("hosted", help="submit and follow hosted fine-tuning jobs (OpenAI, Azure, Together, "
                                           "Fireworks, Mistral)",
                            description="Submit and follow hosted fine-tuning jobs. Keys come from each provider's "
                                        "environment variable; --base-url overrides the endpoint.")
    _ops(hosted, None)
    p = sub.add_parser("openai", help="submit and follow OpenAI fine-tuning jobs (= hosted --provider openai)",
                       description="Submit and follow OpenAI fine-tuning jobs. The key comes from "
                                   "OPENAI_API_KEY; OPENAI_BASE_URL or --base-url picks the server.")
    _ops(p, "openai")


def _ops(p: argparse.ArgumentParser, fixed: str | None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    if fixed:
        common.set_defaults(provider=fixed)
    else:
        common.add_argument("--provider", "-p", choices=PROVIDERS, default="openai",
                            help="the hosted provider (default openai)")
    common.add_argument("--base-url", metavar="URL", help="the provider's endpoint (tests, proxies)")
    common.add_argument("--json", action="store_true", help="print JSON")
    ops = p.add_subparsers(dest="op", metavar="OP")

    s = ops.add_parser("submit", parents=[common], help="validate, estimate, upload and create a job")
    s.add_argument("dataset", metavar="DATASET", help="a JSONL file or a workspace dataset name")
    s.add_argument("--model", "-m", required=True, help="base model (or ft: model to continue from)")
    s.add_argument("--validation", metavar="V", help="validation file or dataset name")
    s.add_argument("--suffix", help="1-64 characters added to the fine-tuned model's name")
    s.add_argument("--n-epochs", default="auto", help="1-50 or auto (default)")
    s.add_argument("--batch-size", default="auto", help="1-256 or auto (default)")
    s.add_argument("--lr-multiplier", default="auto", help="> 0 or auto (default)")
    s.add_argument("--beta", default="auto", help="DPO beta (DPO datasets only)")
    s.add_argument("--seed", type=int)
    s.add_argument("--prices", metavar="FILE", help="a TOML price table overriding the shipped one")
    s.add_argument("--dry-run", action="store_true", help="validate and estimate, show the request, send nothing")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=cmd_submit)

    j = ops.add_parser("jobs", parents=[common], help="list fine-tuning jobs")
    j.add_argument("--local", action="store_true", help="only the jobs recorded in this workspace (no API call)")
    j.add_argument("--limit", type=int, default=20)
    j.set_defaults(func=cmd_jobs)

    st = ops.add_parser("status", parents=[common], help="show one job")
    st.add_argument("job", metavar="JOB")
    st.set_defaults(func=cmd_status)

    e = ops.add_parser("events", parents=[common], help="show a job's events (oldest first)")
    e.add_argument("job", metavar="JOB")
    e.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    e.add_argument("--poll", type=float, default=5.0, metavar="S", help="first poll interval in seconds")
    e.set_defaults(func=cmd_events)

    w = ops.add_parser("wait", parents=[common], help="wait for a job to end; exit 0 only if it succeeded")
    w.add_argument("job", metavar="JOB")
    w.add_argument("--poll", type=float, default=5.0, metavar="S", help="first poll interval in seconds")
    w.set_defaults(func=cmd_wait)

    c = ops.add_parser("cancel", parents=[common], help="cancel a job")
    c.add_argument("job", metavar="JOB")
    c.set_defaults(func=cmd_cancel)

    m = ops.add_parser("models", parents=[common], help="list your fine-tuned models")
    m.set_defaults(func=cmd_models)


def _provider(args):
    from tuneterm.core.providers import get

    return get(args.provider)


def _client(args):
    provider = _provider(args)
    url = provider.base_url(args.base_url)
    return provider.client(url), url


def _time(ts) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


# --- submit ----------------------------------------------------------------------------------------


def _validate(path, model: str, provider=None) -> None:
    """Refuse on validation errors: the provider's data rules, and for OpenAI the datasets validator."""
    from tuneterm.core.errors import DatasetError

    if provider is not None and provider.name != "openai":
        _n, problems = provider.check_file(path)
        if problems:
            facts = [("file", str(path)), ("provider", provider.name), ("errors", str(len(problems)))]
            facts += [(f"line {line}" if line else "file", f"{field}: {msg}") for line, field, msg in problems[:8]]
            raise DatasetError(f"the dataset breaks {provider.title}'s data rules; nothing was uploaded", facts,
                               f"fix the lines named above ({provider.data_format})")
        return

    try:
        from tuneterm.core.datasets.validate import validate_file
    except ImportError:
        validate_file = None
    if validate_file is None:
        return
    report = validate_file(path, model)
    if report.n_errors:
        errors = [p for p in report.problems if report.severity_of(p.kind) == "error"]
        facts = [("file", str(path)), ("errors", str(report.n_errors))]
        facts += [(p.where(), f"{p.kind}: {p.message}") for p in errors[:8]]
        raise DatasetError("the dataset has errors; nothing was uploaded", facts,
                           f"run `tuneterm data validate {path} --model {model}` for all of them and their fixes")


def cmd_submit(args) -> int:
    from tuneterm.commands.cost import print_estimate, resolve_dataset
    from tuneterm.core import cost, openai_jobs
    from tuneterm.core.errors import DatasetError, UsageError

    provider = _provider(args)
    train = resolve_dataset(args.dataset, "train")
    validation = resolve_dataset(args.validation, "val") if args.validation else None
    row, _warnings = openai_jobs.check_model_open(args.model, provider=provider.name)
    _validate(train, args.model, provider)
    if validation:
        _validate(validation, args.model, provider)
    n_evals = 1 if validation is not None and provider.name == "together" else 0  # the client asks for one eval
    est = cost.estimate(train, args.model, args.n_epochs, validation, prices=args.prices, provider=provider.name,
                        n_evals=n_evals)
    n_epochs = args.n_epochs
    if provider.name not in ("openai", "azure") and n_epochs in (None, "auto"):
        n_epochs = est["n_epochs"]  # their defaults differ from OpenAI's rule: send the number that was priced
    if est["n_examples"] < provider.min_examples:
        raise DatasetError(f"{provider.title} needs at least {provider.min_examples} training examples",
                           [("file", str(train)), ("examples", str(est["n_examples"]))],
                           "add examples; 50-100 is a good start")
    method = "dpo" if est["n_preference_pairs"] else "supervised"
    if method not in row.methods:
        raise UsageError(f"{row.id} does not support {method} fine-tuning", [("model", args.model),
                         ("supports", ", ".join(row.methods))], "pick a model that does (`tuneterm cost --compare`)")
    request = openai_jobs.build_request(
        args.model, "<uploaded training file>", "<uploaded validation file>" if validation else None, args.suffix,
        n_epochs, args.batch_size, args.lr_multiplier, args.seed, method, args.beta)
    if not args.json:
        print_estimate(est)
    if args.dry_run:
        if args.json:
            print(json.dumps({"dry_run": True, "estimate": est, "request": request}))
        else:
            print("\ndry run: this request would be sent after uploading the files:")
            print(json.dumps(request, indent=2))
        return 0
    url = provider.base_url(args.base_url)
    client = provider.client(url)
    if provider.name == "openai":
        announced = openai_jobs.check_server_shutdown(client, args.model, url)
        if announced and not args.json:
            print(f"warning: {announced}")
    say = (lambda s: None) if args.json else (lambda s: print(s))
    if provider.server_estimate:  # the provider prices the uploaded file itself: upload first, then confirm
        from tuneterm.core.providers import estimate as hosted_estimate

        request = _upload_all(client, request, train, validation, url, say)
        est["provider_estimate"] = hosted_estimate.compare(est, client.estimate(request))
        if not args.json:
            print(hosted_estimate.describe(est["provider_estimate"]))
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("submitting needs a confirmation", [("estimate", f"≈ ${est['estimated_cost_usd'] or 0:.2f}")],
                             "run it in a terminal, or pass --yes to submit without asking")
        answer = input(f"\nSubmit to {openai_jobs.safe_url(url)} for ≈ ${est['estimated_cost_usd'] or 0:.2f}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not submitted")
            return 1
    if not provider.server_estimate:
        request = _upload_all(client, request, train, validation, url, say)
    job = openai_jobs.create_job(client, request, url, say=say)
    openai_jobs.record_job(job, url, dataset=args.dataset, estimated_cost=est["estimated_cost_usd"],
                           provider=provider.name)
    if args.json:
        print(json.dumps({"job": job.model_dump(mode="json"), "estimate": est}))
    else:
        group, flag = ("openai", "") if provider.name == "openai" else ("hosted", f" --provider {provider.name}")
        print(f"created {job.id} ({job.status}) on {job.model}")
        print(f"follow it: tuneterm {group} events {job.id}{flag} --follow   |   tuneterm {group} wait {job.id}{flag}")
    return 0


def _upload_all(client, request: dict, train, validation, url: str, say) -> dict:
    from tuneterm.core import openai_jobs

    say(f"uploading {train} ...")
    request["training_file"] = openai_jobs.upload(client, train, url).id
    if validation:
        say(f"uploading {validation} ...")
        request["validation_file"] = openai_jobs.upload(client, validation, url).id
    return request


# --- monitoring ------------------------------------------------------------------------------------


def _job_line(job) -> str:
    name = job.fine_tuned_model or "-"
    return f"{job.id:<32} {job.status:<17} {job.model:<26} {_time(job.created_at):<20} {name}"


def cmd_jobs(args) -> int:
    from tuneterm.core import openai_jobs

    if args.local:
        rows = [r for r in openai_jobs.local_jobs() if r.get("provider", "openai") == args.provider]
        if args.json:
            print(json.dumps([{k: v for k, v in r.items() if k != "raw"} for r in rows]))
            return 0
        for r in rows:
            print(f"{r['id']:<32} {r['status']:<17} {r['model']:<26} {r['created_at']:<26} {r['fine_tuned_model'] or '-'}")
        if not rows:
            print(f"no {_provider(args).title} jobs recorded in this workspace")
        return 0
    client, url = _client(args)
    page = openai_jobs.call("list jobs", lambda: client.fine_tuning.jobs.list(limit=args.limit), url)
    known = {r["id"] for r in openai_jobs.local_jobs()}
    for job in page.data:
        if job.id in known:
            openai_jobs.record_job(job, url, provider=args.provider)
    if args.json:
        print(json.dumps([j.model_dump(mode="json") for j in page.data]))
        return 0
    print(f"{'job':<32} {'status':<17} {'model':<26} {'created (UTC)':<20} fine-tuned model")
    for job in page.data:
        print(_job_line(job))
    if not page.data:
        print("no fine-tuning jobs")
    return 0


def _print_job(job, est_cost=None, provider=None) -> None:
    from tuneterm.core import openai_jobs

    print(f"job          {job.id}")
    print(f"status       {job.status}")
    print(f"model        {job.model}")
    print(f"created      {_time(job.created_at)}" + (f"   finished {_time(job.finished_at)}" if job.finished_at else ""))
    hp = job.hyperparameters
    if hp is not None:
        print(f"hyperparams  n_epochs={hp.n_epochs} batch_size={hp.batch_size} "
              f"learning_rate_multiplier={hp.learning_rate_multiplier}")
    print(f"files        training {job.training_file}" + (f", validation {job.validation_file}" if job.validation_file else ""))
    if job.fine_tuned_model:
        print(f"fine-tuned   {job.fine_tuned_model}")
        if provider is not None and provider.name != "openai":
            print(f"use it as    {provider.model_ref(job.fine_tuned_model)}"
                  + ("  (after you deploy it; the deployment name is the reference)" if provider.name == "azure" else ""))
    if job.trained_tokens:
        actual = openai_jobs.actual_cost(job, provider.name if provider is not None else "openai")
        line = f"trained      {job.trained_tokens:,} tokens"
        if actual is not None:
            line += f" ≈ ${actual:,.2f}"
        if est_cost:
            line += f" (estimated ${est_cost:,.2f})"
        print(line)
    if job.status == "failed" and job.error is not None:
        print(f"error        {getattr(job.error, 'code', None)}: {openai_jobs.redact(getattr(job.error, 'message', '') or '')}")
    if job.status == "paused":
        print("note         the job is paused; resume it on the OpenAI dashboard or with the API (jobs.resume)")


def cmd_status(args) -> int:
    from tuneterm.core import openai_jobs

    client, url = _client(args)
    job = openai_jobs.retrieve(client, args.job, url)
    local = openai_jobs.local_job(job.id)
    openai_jobs.record_job(job, url, provider=args.provider)
    if args.json:
        out = job.model_dump(mode="json")
        out["actual_cost_usd"] = openai_jobs.actual_cost(job, args.provider)
        out["estimated_cost_usd"] = local["estimated_cost_usd"] if local else None
        print(json.dumps(out))
    else:
        _print_job(job, local["estimated_cost_usd"] if local else None, _provider(args))
    return 0


def _event_line(e) -> str:
    return f"{_time(e.created_at)}  {e.level:<5} {e.message}"


def cmd_events(args) -> int:
    from tuneterm.core import openai_jobs

    client, url = _client(args)
    if not args.follow:
        events = openai_jobs.new_events(client, args.job, None, url)
        for e in events:
            print(json.dumps(e.model_dump(mode="json")) if args.json else _event_line(e))
        return 0
    job = None
    for kind, obj in openai_jobs.follow(client, args.job, url, interval=args.poll):
        if kind == "event":
            print(json.dumps(obj.model_dump(mode="json")) if args.json else _event_line(obj), flush=True)
        else:
            job = obj
            openai_jobs.record_job(job, url, provider=args.provider)
    if job is not None and job.status == "failed":
        raise openai_jobs.failure(job)
    return 0 if job is not None and job.status == "succeeded" else 1


def cmd_wait(args) -> int:
    from tuneterm.core import openai_jobs

    client, url = _client(args)
    job = None
    for kind, obj in openai_jobs.follow(client, args.job, url, interval=args.poll, events=False):
        job = obj
        openai_jobs.record_job(job, url, provider=args.provider)
        if not args.json:
            print(f"{job.id}: {job.status}", flush=True)
    assert job is not None
    if args.json:
        print(json.dumps(job.model_dump(mode="json")))
    if job.status == "failed":
        raise openai_jobs.failure(job)
    if job.status == "cancelled":
        _err(f"{job.id} was cancelled")
        return 1
    if not args.json:
        local = openai_jobs.local_job(job.id)
        _print_job(job, local["estimated_cost_usd"] if local else None, _provider(args))
    return 0


def cmd_cancel(args) -> int:
    from tuneterm.core import openai_jobs

    client, url = _client(args)
    job = openai_jobs.call(f"cancel {args.job}", lambda: client.fine_tuning.jobs.cancel(args.job), url)
    openai_jobs.record_job(job, url, provider=args.provider)
    print(json.dumps(job.model_dump(mode="json")) if args.json else f"{job.id}: {job.status}")
    return 0


def cmd_models(args) -> int:
    from tuneterm.core import openai_jobs

    client, url = _client(args)
    models = openai_jobs.fine_tuned_models(client, url)
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in models]))
        return 0
    for m in models:
        print(f"{m.id:<60} {_time(m.created)}  {m.owned_by}")
    if not models:
        print("no fine-tuned models")
    return 0
