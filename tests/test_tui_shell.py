from tuneterm.tui.app import TunetermApp


async def test_app_starts_and_quits_with_q():
    app = TunetermApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.is_running
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running
