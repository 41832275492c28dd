"""tuneterm: a terminal workbench for fine-tuning language models.

Importing this package is cheap on purpose: nothing heavy (torch & co.) is imported
and nothing on disk is created or opened. See DESIGN.md in the shared notes for layers.
"""

__version__ = "0.1.0"
