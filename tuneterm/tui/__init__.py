"""The Textual workbench. Imports only the core and textual: never torch & co."""
