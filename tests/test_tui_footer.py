"""Every screen's footer at 80x24: each key hint it shows is whole on the screen (the standard
terminal size; Textual's footer cuts off what does not fit). Secondary keys are show=False: they stay
in the keys panel and the command palette."""

from __future__ import annotations

from collections import Counter

import pytest

from tui_recording import RecordingApp, until
from tuneterm.tui.navigation import PLACES


def cut_hints(screen) -> list[str]:
    """The footer's key hints not drawn whole, read cell by cell off the screen's bottom row."""
    from textual.errors import NoWidget
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    footer = screen.query_one(Footer)
    drawn: Counter = Counter()
    for x in range(screen.size.width):
        try:
            widget, _ = screen.get_widget_at(x, footer.region.y)
        except NoWidget:
            continue
        drawn[widget] += 1
    keys = list(footer.query(FooterKey))
    assert keys, "the footer shows no keys"
    return [f"{k.key_display} {k.description}" for k in keys if drawn[k] < k.outer_size.width]


@pytest.mark.parametrize("mode", [p.mode for p in PLACES])
async def test_every_footer_hint_fits_80_columns(mode):
    app = RecordingApp(start=mode)
    async with app.run_test(size=(80, 24)) as pilot:
        assert await until(pilot, lambda: app.current_mode == mode)
        await pilot.pause(0.3)
        assert cut_hints(app.screen) == [], f"{mode}: cut off at 80 columns"
        if mode == "chat":  # writing a message: the prompt's own keys join the footer
            await pilot.press("i")
            await pilot.pause()
            assert cut_hints(app.screen) == [], "chat, writing: cut off at 80 columns"



async def test_the_nav_bar_shows_every_place_whole_at_80_columns():
    from tuneterm.tui.widgets.nav_bar import NavBar

    app = RecordingApp(start="datasets")
    async with app.run_test(size=(80, 24)) as pilot:
        assert await until(pilot, lambda: app.current_mode == "datasets")
        await pilot.pause(0.3)
        nav = app.screen.query_one(NavBar)
        drawn = nav.visual.plain  # what the bar holds; a line wider than the bar is cut at its edge
        assert all(f"{place.key} {place.title}" in drawn for place in PLACES)
        assert len(drawn.rstrip()) <= nav.content_region.width
