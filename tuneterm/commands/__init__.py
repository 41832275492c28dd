"""One module per CLI command. Each has ``register(subparsers)`` and an optional ``ORDER``
(position in ``--help``). Keep module-level imports light: heavy work happens inside the
function a command runs.
"""
