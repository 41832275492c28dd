"""The workbench in a browser: ``tuneterm web`` (textual-serve behind a token, Origin and Host checks).

``guard`` decides who may reach the page and its websocket; ``server`` serves the page and runs one
``tuneterm tui`` process per browser tab.
"""
