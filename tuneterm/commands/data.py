"""``tuneterm data ...``: import, list, show, validate, measure, split, convert, export, remove datasets.

Everything here is torch-free except ``stats``/``validate --model`` with a local model, which
load that model's tokenizer (transformers) inside the command.
"""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 20

VALIDATE_EPILOG = """\
exit codes: 0 no errors (the file may have warnings: they are listed, not fatal),
            1 errors found (or, with --strict, warnings found too),
            3 the file cannot be read at all (unknown format), 4 no such file or dataset.
--json prints {"status": "clean"|"warnings"|"errors", "counts": {kind: n}, "problems": [...]}.
"""

FORMATS_HELP = ("force the format: a container (jsonl, json, csv, tsv, parquet, arrow, hf), a schema "
                "(chat, dpo, alpaca, sharegpt, prompt_completion, classification, extraction) or both, "
                "e.g. csv:classification")
MAP_HELP = "rename a source column to a format field, e.g. --map text=body --map label=queue (repeatable)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets: import, validate, stats, split, convert, export",
                       description="Datasets: import many formats into canonical OpenAI chat JSONL, "
                                   "validate, measure, split, convert and export them.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    q = dsub.add_parser("import", help="import a file (or a folder of train/val/test files) into the workspace")
    q.add_argument("path", metavar="PATH")
    q.add_argument("--name", "-n", help="dataset name (default: the file's stem)")
    q.add_argument("--format", "-f", dest="fmt", help=FORMATS_HELP)
    q.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", help=MAP_HELP)
    q.add_argument("--skip-invalid", action="store_true",
                   help="import the good rows; write the bad ones, untouched, to the dataset's rejects file")
    q.add_argument("--replace", action="store_true", help="replace a dataset of the same name")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_import)

    q = dsub.add_parser("ls", help="list the workspace's datasets")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_ls)

    q = dsub.add_parser("show", help="a dataset's record and its first examples")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--n", "-k", type=int, default=3, help="how many examples to print (default 3)")
    q.add_argument("--split", help="train, val or test (default: all rows)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)

    q = dsub.add_parser("validate", help="check a file or dataset against every rule",
                        epilog=VALIDATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("target", metavar="PATH|NAME")
    q.add_argument("--model", "-m", help="target model: adds its token limit and rules (e.g. gpt-4o-mini, "
                                         "smollm2-135m-instruct)")
    q.add_argument("--split", help="for a dataset name: train, val or test")
    q.add_argument("--format", "-f", dest="fmt", help=FORMATS_HELP)
    q.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", help=MAP_HELP)
    q.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    q.add_argument("--limit", type=int, default=40, help="problems to list, errors first (0 = all kept); "
                                                        "the counts are always complete")
    q.add_argument("--per-kind", type=int, default=5, help="at most this many of one kind in the list (0 = no cap)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_validate)

    q = dsub.add_parser("stats", help="tokens per example, length histogram vs a cutoff, messages, labels, duplicates")
    q.add_argument("target", metavar="PATH|NAME")
    q.add_argument("--model", "-m", help="whose tokenizer counts: an OpenAI model (tiktoken) or a local model "
                                         "(its HF tokenizer); default: the settings' default_model")
    q.add_argument("--cutoff", type=int, help="truncation length (default: the model's limit)")
    q.add_argument("--split", help="for a dataset name: train, val or test")
    q.add_argument("--format", "-f", dest="fmt", help=FORMATS_HELP)
    q.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", help=MAP_HELP)
    q.add_argument("--per-example", action="store_true", help="with --json: include every example's token count")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_stats)

    q = dsub.add_parser("split", help="deterministic train/val/test split (stratified by label, no duplicate leakage)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--val", type=float, default=0.1, help="fraction for validation (default 0.1)")
    q.add_argument("--test", type=float, default=0.1, help="fraction for test (default 0.1)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_split)

    q = dsub.add_parser("convert", help="convert a file to OpenAI JSONL, Alpaca or ShareGPT (no workspace)")
    q.add_argument("path", metavar="PATH")
    q.add_argument("--to", "-t", required=True, metavar="FORMAT", help="openai, alpaca or sharegpt")
    q.add_argument("-o", "--out", required=True, metavar="OUT")
    q.add_argument("--format", "-f", dest="fmt", help=FORMATS_HELP)
    q.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", help=MAP_HELP)
    q.add_argument("--skip-invalid", action="store_true", help="leave out rows with errors instead of failing")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_convert)

    q = dsub.add_parser("export", help="write a dataset out (OpenAI JSONL by default)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("-o", "--out", required=True, metavar="OUT")
    q.add_argument("--to", "-t", default="openai", metavar="FORMAT", help="openai (default), alpaca or sharegpt")
    q.add_argument("--split", help="train, val or test (default: all rows)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_export)

    q = dsub.add_parser("rm", help="remove a dataset from the workspace (never its source file)")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_rm)


# --- helpers ---------------------------------------------------------------------------------------


def _mapping(pairs: list[str]) -> dict | None:
    from tuneterm.core.errors import UsageError

    out = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise UsageError("--map takes FIELD=COLUMN", [("got", pair)], "e.g. --map text=body --map label=queue")
        out[field.strip()] = column.strip()
    return out or None


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def _target_path(target: str, split: str | None):
    """A file path, a workspace dataset name (or its split), or a folder HF datasets can load."""
    from pathlib import Path

    from tuneterm.core.datasets import store

    path = Path(target).expanduser()
    if path.is_dir() and not store.exists(target):
        try:
            return store.resolve_path(target, split)  # a folder of train/val/test files
        except store.NotFoundError:
            return path
    return store.resolve_path(target, split)


def _splits_text(splits: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in splits.items()) or "-"


# --- commands --------------------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    from tuneterm.core.datasets import store

    rec = store.import_dataset(args.path, name=args.name, fmt=args.fmt, skip_invalid=args.skip_invalid,
                               mapping=_mapping(args.map), replace=args.replace)
    if args.json:
        _print_json(rec.to_dict())
        return 0
    print(f"imported {rec.name}: {rec.n_examples} examples ({rec.source_format}) from {rec.source_path}")
    if rec.splits:
        print(f"  splits: {_splits_text(rec.splits)}")
    if rec.n_rejected:
        rejects = sorted(p.name for p in rec.path.glob("rejects*") if not p.name.endswith(".problems.jsonl"))
        print(f"  rejected {rec.n_rejected} rows, kept untouched in {rec.path / rejects[0]}"
              f" (reasons in rejects.problems.jsonl)" if rejects else f"  rejected {rec.n_rejected} rows")
    found = rec.meta.get("validation", {})
    if found:
        print("  problems found (details: `tuneterm data validate PATH`): "
              + ", ".join(f"{k} x{v}" for k, v in found.items()))
    print(f"  content hash: {rec.content_hash[:16]}  path: {rec.path}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from tuneterm.core.datasets import store

    recs = store.list_datasets()
    if args.json:
        _print_json([r.to_dict() for r in recs])
        return 0
    if not recs:
        print("no datasets yet: `tuneterm data import PATH` (or `tuneterm setup` for the samples)")
        return 0
    rows = [("NAME", "EXAMPLES", "SPLITS", "FORMAT", "HASH", "IMPORTED")]
    rows += [(r.name, str(r.n_examples), _splits_text(r.splits), r.source_format, r.content_hash[:12],
              r.created_at[:19].replace("T", " ")) for r in recs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from itertools import islice

    from tuneterm.core.datasets import store

    rec = store.get(args.name)
    examples = list(islice(store.iter_dataset(args.name, args.split), max(0, args.n)))
    if args.json:
        _print_json({**rec.to_dict(), "examples": examples})
        return 0
    print(f"{rec.name}: {rec.n_examples} examples, splits {_splits_text(rec.splits)}")
    print(f"  source:   {rec.source_path} ({rec.source_format})")
    print(f"  hash:     {rec.content_hash}")
    print(f"  imported: {rec.created_at}  rejected rows: {rec.n_rejected}")
    print(f"  folder:   {rec.path}")
    if rec.meta.get("labels"):
        print("  labels:   " + ", ".join(f"{k} ({v})" for k, v in rec.meta["labels"].items()))
    if rec.meta.get("split", {}).get("seed") is not None:
        s = rec.meta["split"]
        print(f"  split:    seed {s['seed']}, val {s['val']}, test {s['test']}, stratified by {s['stratified_by']}")
    for i, ex in enumerate(examples, 1):
        print(f"\n--- example {i}")
        msgs = ex.get("messages") or (ex.get("input") or {}).get("messages") or []
        for m in msgs:
            print(f"  {str(m.get('role', '?')):>9}: {_short(m.get('content'))}")
        for key in ("preferred_output", "non_preferred_output"):
            if key in ex:
                print(f"  {key}: {_short((ex[key] or [{}])[0].get('content'))}")
    return 0


def _pick(problems: list, limit: int, per_kind: int) -> list:
    """Errors before warnings, each in line order, at most ``per_kind`` of a kind, ``limit`` in all."""
    ordered = sorted(problems, key=lambda p: (p.severity != "error", p.line is not None, p.line or 0))
    taken: dict[str, int] = {}
    out = []
    for p in ordered:
        if per_kind > 0 and taken.get(p.kind, 0) >= per_kind:
            continue
        taken[p.kind] = taken.get(p.kind, 0) + 1
        out.append(p)
        if 0 < limit <= len(out):
            break
    return out


def _short(value, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_validate(args: argparse.Namespace) -> int:
    from tuneterm.core.datasets.rules import RULES
    from tuneterm.core.datasets.validate import validate_file

    from pathlib import Path

    from tuneterm.core.datasets import store

    if not args.split and not Path(args.target).expanduser().exists() and store.exists(args.target):
        report = store.validate_dataset(args.target, args.model)  # its splits together: overlap too
    else:
        path = _target_path(args.target, args.split)
        report = validate_file(path, model=args.model, fmt=args.fmt, mapping=_mapping(args.map))
    failed = report.n_errors > 0 or (args.strict and report.n_warnings > 0)
    if args.json:
        _print_json(report.to_dict())
        return 1 if failed else 0
    print(f"{report.file} ({report.format}): {report.n_examples} examples, {report.n_valid} without errors")
    if report.tokenizer:
        print(f"  model {report.model}: {report.tokenizer}, limit {report.token_limit or 'unknown'} tokens")
    shown = _pick(report.problems, args.limit, per_kind=args.per_kind)
    for p in shown:
        print(f"  {p.where()}: {p.severity}: {p.kind}: {p.message}")
    hidden = sum(report.counts.values()) - len(shown)
    if hidden > 0:
        print(f"  … {hidden} more (see the counts below; --limit 0 --per-kind 0 or --json lists every one kept)")
    if report.counts:
        print("\nsummary:")
        width = max(len(k) for k in report.counts)
        for kind, n in sorted(report.counts.items(), key=lambda kv: (report.severity_of(kv[0]) != "error", kv[0])):
            print(f"  {kind.ljust(width)}  {report.severity_of(kind):<7} {n:>6}  hint: {RULES[kind][1]}")
    print(f"\n{report.status}: {report.n_errors} errors, {report.n_warnings} warnings")
    return 1 if failed else 0


def cmd_stats(args: argparse.Namespace) -> int:
    from tuneterm.core.datasets import stats
    from tuneterm.core.progress_line import ProgressLine

    path = _target_path(args.target, args.split)
    # the tokenizer's load and the counting pass take seconds: told on stderr, stdout stays the report
    result = stats.stats_file(path, model=args.model, cutoff=args.cutoff, fmt=args.fmt, mapping=_mapping(args.map),
                              per_example=args.per_example, progress=ProgressLine("counting tokens"))
    if args.json:
        _print_json(result)
        return 0
    print(f"{result['file']} ({result['format']}): {result['n_examples']} valid examples"
          + (f" ({result['skipped_invalid']} rows with errors left out; see `tuneterm data validate`)"
             if result["skipped_invalid"] else ""))
    t = result.get("tokens")
    if t:
        print(f"tokens ({t['tokenizer']}): total {t['total']:,}, mean {t['mean']}, min {t['min']}, "
              f"p50 {t['p50']}, p90 {t['p90']}, p95 {t['p95']}, max {t['max']}")
        if t["cutoff"] is not None:
            print(f"cutoff {t['cutoff']:,}: {t['truncated']} examples would be truncated "
                  f"({t['tokens_lost']:,} tokens lost)")
        print("length histogram (tokens per example; ! = past the cutoff):")
        for line in stats.render_histogram(t["histogram"], t["cutoff"]):
            print(line)
    m = result["messages_per_example"]
    print(f"messages per example: min {m['min']}, mean {m['mean']}, max {m['max']}  "
          + " ".join(f"{k}:{v}" for k, v in m["distribution"].items()))
    print("roles: " + ", ".join(f"{k} {v}" for k, v in result["roles"].items()))
    d = result["duplicates"]
    print(f"duplicates: {d['duplicate_examples']} examples repeat an earlier one ({d['distinct_examples']} distinct)")
    if result["labels"]:
        total = sum(result["labels"].values())
        print("labels:")
        for label, n in result["labels"].items():
            print(f"  {label:<24} {n:>6}  {n / total:6.1%}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from tuneterm.core.datasets.split import split_dataset

    rec = split_dataset(args.name, val=args.val, test=args.test, seed=args.seed)
    if args.json:
        _print_json(rec.to_dict())
        return 0
    s = rec.meta["split"]
    print(f"split {rec.name} (seed {s['seed']}, stratified by {s['stratified_by'] or 'nothing'}): "
          f"{_splits_text(rec.splits)}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tuneterm.core.datasets import export, formats
    from tuneterm.core.datasets.rules import ERROR
    from tuneterm.core.datasets.validate import Validator
    from tuneterm.core.errors import DatasetError, UsageError

    to = export.target_name(args.to)
    src, out = Path(args.path), Path(args.out)
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise UsageError("the output would overwrite the source", [("path", str(out))], "choose another -o")
    mapping = _mapping(args.map)
    form = formats.detect(src, args.fmt, mapping)
    validator = Validator(str(src), fmt=str(form))
    bad: list[str] = []

    def good():
        for rec in formats.iter_records(src, form, mapping):
            errors = [p for p in validator.feed(rec) if p.severity == ERROR]
            if errors:
                bad.append(f"{errors[0].where()}: {errors[0].kind}: {errors[0].message}")
                if not args.skip_invalid:
                    raise DatasetError(f"{src.name} has rows with errors; nothing was written",
                                       [("first", bad[0])],
                                       "see `tuneterm data validate PATH`, or pass --skip-invalid to leave them out")
                continue
            if rec.example is not None:
                yield rec.example

    result = export.export_examples(good(), out, to)
    summary = {**result.to_dict(), "source_format": str(form), "invalid_skipped": len(bad)}
    if args.json:
        _print_json(summary)
        return 0
    print(f"wrote {result.written} examples as {to} to {out}")
    if bad:
        print(f"  left out {len(bad)} rows with errors (first: {bad[0]})")
    if result.skipped:
        print(f"  skipped {result.skipped} examples {to} cannot hold: "
              + ", ".join(f"{k} x{v}" for k, v in result.reasons.items()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tuneterm.core.datasets import export, store

    rec = store.get(args.name)
    result = export.export_examples(store.iter_dataset(args.name, args.split), Path(args.out), args.to)
    if args.json:
        _print_json(result.to_dict())
        return 0
    print(f"wrote {result.written} examples of {rec.name} as {result.to} to {result.path}")
    if result.skipped:
        print(f"  skipped {result.skipped} examples {result.to} cannot hold: "
              + ", ".join(f"{k} x{v}" for k, v in result.reasons.items()), file=sys.stderr)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from tuneterm.core.datasets import store

    rec = store.get(args.name)
    store.remove(args.name)
    print(f"removed {rec.name} ({rec.n_examples} examples); the source {rec.source_path} is untouched")
    return 0
