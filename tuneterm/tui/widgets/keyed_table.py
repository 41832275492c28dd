"""KeyedTable: a DataTable of keyed rows that ``sync(rows)`` brings up to date in place.

When the keys are the same as last time only the cells that changed are updated (the cursor
and the scroll stay put); when rows came or went the table is rebuilt and the cursor stays on
the row it was on, if that row is still there.
"""

from __future__ import annotations

from textual.widgets import DataTable


class KeyedTable(DataTable):
    def __init__(self, columns: tuple[tuple[str, str], ...], **kwargs) -> None:
        """``columns``: (key, title) pairs; every column has a title."""
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", True)
        super().__init__(**kwargs)
        self.columns_spec = tuple(columns)
        self.keys: list[str] = []
        for key, title in self.columns_spec:
            self.add_column(title, key=key)

    def sync(self, rows: dict[str, tuple]) -> None:
        """Make the table show ``rows`` (row key -> cells, in column order), in that order."""
        keys = list(rows)
        self._widen(rows.values())
        if keys == self.keys:
            for key, cells in rows.items():
                for (column, _title), value in zip(self.columns_spec, cells):
                    if self.get_cell(key, column) != value:
                        self.update_cell(key, column, value)
            return
        selected = self.selected_key
        self.clear()
        for key, cells in rows.items():
            self.add_row(*cells, key=key)
        self.keys = keys
        if selected in keys:
            self.move_cursor(row=keys.index(selected))

    def _widen(self, rows) -> None:
        """Widen the columns for these cells now. DataTable measures new cells when it is idle,
        after the header line was already drawn and cached with the old widths."""
        from rich.cells import cell_len
        from rich.text import Text

        columns = list(self.columns.values())
        for cells in rows:
            for column, value in zip(columns, cells):
                width = cell_len(value.plain if isinstance(value, Text) else str(value))
                column.content_width = max(column.content_width, width)

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - the cursor is past a row that just went away
            return None
        return str(key.value) if key is not None else None
