"""DatasetTable: the workspace's datasets, one row each (rows, split sizes, validation mark)."""

from __future__ import annotations

from textual.widgets import DataTable

STATUS_MARK = {"clean": "✓", "warnings": "!", "errors": "✗"}  # "·": not validated yet
COLUMNS = (("name", "name"), ("rows", "rows"), ("splits", "splits"), ("ok", "status"))


class DatasetTable(DataTable):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.names: list[str] = []
        self.statuses: dict[str, str] = {}  # name -> validation status, once validated

    def on_mount(self) -> None:
        for label, key in COLUMNS:
            self.add_column(label, key=key)

    def show(self, records: list, keep: str | None) -> None:
        """One row per DatasetRecord; the cursor stays on ``keep`` when it is still listed."""
        self.clear()
        self.names = [r.name for r in records]
        for r in records:
            splits = "/".join(str(v) for v in r.splits.values()) if r.splits else "-"
            status = STATUS_MARK.get(self.statuses.get(r.name, ""), "·")
            self.add_row(r.name, str(r.n_examples), splits, status, key=r.name)
        if keep in self.names:
            self.move_cursor(row=self.names.index(keep))

    def set_status(self, name: str, status: str) -> None:
        if name in self.names:
            self.statuses[name] = status
            self.update_cell(name, "status", STATUS_MARK[status])
