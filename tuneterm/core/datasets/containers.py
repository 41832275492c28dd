"""Containers: read a file row by row as (number, original bytes, row or None, problems).

JSONL (line by line, bytes kept for the rejects file), a JSON array (loaded whole), CSV/TSV
(multi-line cells kept byte for byte), Parquet and Arrow (pyarrow, imported when used) and any
folder HF ``datasets`` loads (imported inside :func:`_hf_rows` only). Bad rows come back with
problems; only an unreadable file as a whole raises :class:`DatasetError`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from tuneterm.core.datasets.rules import Problem, problem
from tuneterm.core.errors import DatasetError

BOM = b"\xef\xbb\xbf"

RowTuple = tuple[int, bytes, Any, list[Problem]]


def rows(path: Path, container: str) -> Iterator[RowTuple]:
    reader: Callable[[Path], Iterator[RowTuple]] = {
        "jsonl": _jsonl_rows, "json": _json_array_rows, "csv": _csv_rows, "tsv": _tsv_rows,
        "parquet": _parquet_rows, "arrow": _arrow_rows, "hf": _hf_rows,
    }[container]
    return reader(path)


def row_estimate(path: Path, container: str) -> int | None:
    """How many rows :func:`rows` will give, from a scan of the bytes (no parsing), for a progress
    line: exact for JSONL (one row per line, blank ones included), an upper bound for CSV/TSV (a
    cell may span lines; the header is not a row), None for the other containers."""
    if container not in ("jsonl", "csv", "tsv") or not path.is_file():
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"  # a last line without its newline
    return lines if container == "jsonl" else max(0, lines - 1)


def _jsonl_rows(path: Path) -> Iterator[RowTuple]:
    name = str(path)
    with open(path, "rb") as fh:
        for num, raw in enumerate(fh, 1):
            raw = raw.rstrip(b"\r\n")
            probs: list[Problem] = []
            body = raw
            if num == 1 and body.startswith(BOM):
                probs.append(problem(name, 1, "bom", "the file starts with a byte-order mark"))
                body = body[len(BOM):]
            if not body.strip():
                probs.append(problem(name, num, "blank_line", "blank line"))
                yield num, raw, None, probs
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                probs.append(problem(name, num, "non_utf8",
                                     f"byte 0x{body[exc.start]:02x} at column {exc.start + 1} is not UTF-8"))
                yield num, raw, None, probs
                continue
            try:
                row = json.loads(text)
            except (ValueError, RecursionError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                col = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                probs.append(problem(name, num, "invalid_json", f"invalid JSON: {msg}{col}"))
                yield num, raw, None, probs
                continue
            yield num, raw, row, probs


def _json_array_rows(path: Path) -> Iterator[RowTuple]:
    """A JSON array of objects (Alpaca's usual form); numbered by item, loaded whole."""
    data = path.read_bytes()
    probs: list[Problem] = []
    if data.startswith(BOM):
        probs.append(problem(str(path), None, "bom", "the file starts with a byte-order mark"))
        data = data[len(BOM):]
    try:
        items = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError("the JSON file is not UTF-8", [("file", str(path)), ("byte", str(exc.start))],
                           "re-encode it as UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise DatasetError("the file is not valid JSON", [("file", str(path)), ("problem", str(exc)[:200])],
                           "a .json dataset is one array of objects; JSONL has one object per line") from exc
    if not isinstance(items, list):
        items = [items]
    for num, item in enumerate(items, 1):
        yield num, json.dumps(item, ensure_ascii=False).encode("utf-8"), item, probs if num == 1 else []


class _LineTap:
    """Feeds csv.reader line by line and remembers the raw lines each row consumed."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.taken: list[str] = []
        self.line = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.fh)
        self.line += 1
        self.taken.append(line)
        return line


def _delimited_rows(path: Path, delimiter: str) -> Iterator[RowTuple]:
    name = str(path)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        tap = _LineTap(fh)
        reader = csv.reader(tap, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError("cannot read the header row", [("file", name), ("problem", str(exc))]) from exc
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        header_raw = "".join(tap.taken)
        tap.taken = []
        yield 0, header_raw.rstrip("\r\n").encode("utf-8", "surrogateescape"), {"__header__": header}, []
        while True:
            start = tap.line + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raw = "".join(tap.taken)
                tap.taken = []
                yield start, raw.rstrip("\r\n").encode("utf-8", "surrogateescape"), None, [
                    problem(name, start, "format_error", f"unreadable row: {exc}", unit="row")]
                continue
            raw = "".join(tap.taken).rstrip("\r\n")
            tap.taken = []
            raw_bytes = raw.encode("utf-8", "surrogateescape")
            try:
                raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield start, raw_bytes, None, [problem(name, start, "non_utf8",
                                                       f"byte at column {exc.start + 1} is not UTF-8", unit="row")]
                continue
            if not cells or all(not c.strip() for c in cells):
                yield start, raw_bytes, None, [problem(name, start, "blank_line", "blank row", unit="row")]
                continue
            if len(cells) != len(header):
                yield start, raw_bytes, None, [problem(
                    name, start, "format_error",
                    f"{len(cells)} cells, the header has {len(header)}", unit="row")]
                continue
            yield start, raw_bytes, dict(zip(header, cells)), []


def _csv_rows(path: Path) -> Iterator[RowTuple]:
    return _delimited_rows(path, ",")


def _tsv_rows(path: Path) -> Iterator[RowTuple]:
    return _delimited_rows(path, "\t")


def _table_rows(batches) -> Iterator[RowTuple]:
    num = 0
    for batch in batches:
        for row in batch.to_pylist():
            num += 1
            yield num, json.dumps(row, ensure_ascii=False, default=str).encode("utf-8"), row, []


def _parquet_rows(path: Path) -> Iterator[RowTuple]:
    import pyarrow.parquet as pq  # deferred: pyarrow costs ~0.3 s to import

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DatasetError("cannot read the Parquet file", [("file", str(path)), ("problem", str(exc)[:300])]) from exc
    return _table_rows(pf.iter_batches(batch_size=1024))


def _arrow_rows(path: Path) -> Iterator[RowTuple]:
    import pyarrow as pa  # deferred: pyarrow costs ~0.3 s to import

    try:
        source = pa.memory_map(str(path))
        try:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source = pa.memory_map(str(path))
            batches = iter(pa.ipc.open_stream(source))
    except Exception as exc:
        raise DatasetError("cannot read the Arrow file", [("file", str(path)), ("problem", str(exc)[:300])]) from exc
    return _table_rows(batches)


def _hf_rows(path: Path) -> Iterator[RowTuple]:
    """Anything HF ``datasets`` loads from a local path (a save_to_disk folder, a data folder)."""
    try:
        import datasets  # deferred: heavy, and only needed for this container
    except ImportError as exc:
        raise DatasetError("reading this folder needs the `datasets` package", [("path", str(path))],
                           "pip install datasets, or pass a JSONL/CSV/Parquet file") from exc
    datasets.disable_progress_bars()
    try:
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path))
    except Exception as exc:
        raise DatasetError("HF datasets cannot load this path", [("path", str(path)),
                           ("problem", f"{type(exc).__name__}: {str(exc)[:300]}")],
                           "pass a JSONL, CSV, Parquet or Arrow file, or a folder saved with save_to_disk") from exc
    parts = [ds[k] for k in ds] if isinstance(ds, dict) or hasattr(ds, "keys") else [ds]
    num = 0
    for part in parts:
        for row in part:
            num += 1
            yield num, json.dumps(row, ensure_ascii=False, default=str).encode("utf-8"), row, []
