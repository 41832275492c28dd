"""User settings: ``~/.config/tuneterm/config.toml`` (or ``$TUNETERM_CONFIG``), overridden
by ``TUNETERM_*`` environment variables. Secrets such as ``OPENAI_API_KEY`` are never
settings: they are read from the environment where they are used and never written.

Import this module only inside functions (pydantic costs start-up time).
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tuneterm.core.errors import ConfigError


def config_path() -> Path:
    env = os.environ.get("TUNETERM_CONFIG")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("tuneterm", appauthor=False)) / "config.toml"


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = config_path()
        self._data: dict[str, Any] = {}
        if path.is_file():
            try:
                self._data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    "the settings file is not valid TOML",
                    [("file", str(path)), ("problem", str(exc))],
                    "fix the file or move it away; tuneterm runs with defaults without it",
                ) from exc

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by pydantic here
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class JobSettings(BaseModel):
    """The ``[jobs]`` table."""

    max_running: int = Field(default=1, ge=1, description="Jobs running at once on each device (each GPU, "
                                                          "or the CPU on a machine without one); the rest wait queued.")


class Settings(BaseSettings):
    """Every field can be set in config.toml or as ``TUNETERM_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="TUNETERM_", extra="ignore", env_nested_delimiter="__")

    home: Path | None = Field(
        default=None, description="Workspace folder (datasets, models, jobs, evals, tuneterm.db)."
    )
    models_dir: Path | None = Field(
        default=None,
        description="Where converted checkpoints are cached; defaults to <home>/models. "
        "Point several workspaces at one folder to share conversions.",
    )
    default_model: str = Field(
        default="smollm2-135m-instruct", description="Model reference used when none is given."
    )
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint; OPENAI_BASE_URL also works."
    )
    prices_file: Path | None = Field(
        default=None, description="A TOML price table that overrides the shipped one."
    )
    start_screen: Literal["auto", "chat", "datasets"] = Field(
        default="auto", description="The workbench's first screen: chat, datasets, or auto (Datasets while no "
                                    "tuned job has finished, Chat after).")
    job_poll_seconds: float = Field(default=1.0, description="How often the TUI re-reads job folders.")
    jobs: JobSettings = Field(default_factory=JobSettings, description="Job queue settings "
                              "(TUNETERM_JOBS__MAX_RUNNING=2 in the environment).")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        return (init_settings, env_settings, _TomlSource(settings_cls))


@lru_cache(maxsize=1)
def _cached() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:  # a bad value in config.toml or a TUNETERM_* variable: name it
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(
            f"the setting {name} is not valid",
            [("setting", name), ("value", repr(first.get("input"))), ("problem", first.get("msg", "")),
             ("file", str(config_path())), ("environment", f"TUNETERM_{name.upper().replace('.', '__')}")],
            "fix the value in the file, or in (or unset) the environment variable",
        ) from None


def get_settings(fresh: bool = False) -> Settings:
    """Settings as of now; ``fresh=True`` re-reads the environment and the file (tests)."""
    if fresh:
        _cached.cache_clear()
    return _cached()
