"""TrainScreen: pick a model, a dataset and a method; edit the recipe; see a memory estimate; launch.

The recipe (recipes/<method>.toml through tuneterm.core.recipes) is shown as a form with its
comments as help. Launch checks everything in this process first (the recipe with the edited
values as overrides, the model reference, the dataset), then writes a job folder and starts a
detached child through tuneterm.core.jobs: the job keeps running when the workbench closes,
and the Jobs screen (4) follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Select, Static
from textual.worker import get_current_worker

from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.suggesters import DatasetSuggester
from tuneterm.tui.widgets.job_progress_line import JobProgressLine
from tuneterm.tui.widgets.model_input import ModelInput
from tuneterm.tui.widgets.recipe_form import RecipeForm
from tuneterm.tui.widgets.recipe_panel import RecipePanel

METHODS = ("lora", "qlora", "freeze", "full")
DEBOUNCE_S = 0.4


class TrainScreen(WorkbenchScreen):
    MODE = "train"
    CONTENT = "RecipeForm"
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", id="train.launch"),
        Binding("ctrl+s", "estimate", "Memory", id="train.estimate"),
        Binding("ctrl+r", "reset", "Reset recipe", id="train.reset"),
    ]

    @dataclass
    class RecipeLoaded(Message):
        method: str
        flat: dict
        comments: dict
        header: str
        choices: dict

    @dataclass
    class Estimated(Message):
        serial: int
        text: str

    @dataclass
    class Launched(Message):
        job_id: str
        command: str

    @dataclass
    class DefaultsLoaded(Message):
        model: str
        datasets: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.method = "lora"
        self.serial = 0
        self.launched: list[str] = []
        self._timer = None

    def compose_body(self):
        with Vertical(id="train-body"):
            with Horizontal(classes="form-row"):
                model = ModelInput(id="train-model")
                model.border_title = "model"
                yield model
                data = Input(id="train-data", placeholder="tickets or ./train.jsonl",
                             suggester=DatasetSuggester((".jsonl",)))
                data.border_title = "dataset"
                yield data
                method = Select([(m, m) for m in METHODS], value="lora", allow_blank=False, id="train-method")
                method.border_title = "method"
                yield method
            yield Static("memory: pick a model", id="train-memory")
            yield RecipePanel(hint="edit values; tab moves; ^l launches", id="train-recipe")
            yield JobProgressLine(id="train-progress", classes="hidden")  # shown once a job is launched

    def on_mount(self) -> None:
        self.after_first_paint(self._defaults)
        self.after_first_paint(lambda: self._load_recipe(self.method))
        self.watch_jobs(self.query_one(JobProgressLine).show)

    # --- workers ------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="train-defaults", exit_on_error=False)
    def _defaults(self) -> None:
        from tuneterm.core.settings import get_settings
        from tuneterm.tui.dataset_paths import dataset_names

        self.post_message(self.DefaultsLoaded(get_settings().default_model, dataset_names()))

    @work(thread=True, exclusive=True, group="train-recipe", exit_on_error=False)
    def _load_recipe(self, method: str) -> None:
        from tuneterm.core import recipes
        from tuneterm.core.recipe_comments import read_comments

        config = recipes.default_recipe(method)
        header, comments = read_comments(recipes.recipe_path(method))
        self.post_message(self.RecipeLoaded(method, recipes.flatten(config), comments, header,
                                            dict(getattr(recipes, "CHOICES", {}))))

    @work(thread=True, exclusive=True, group="train-memory", exit_on_error=False)
    def _estimate(self, serial: int, model: str, method: str, overrides: list[str]) -> None:
        from tuneterm.core import recipes
        from tuneterm.core import memory as mem

        config = recipes.resolve(method, None, overrides)
        folder = mem.model_folder(model)
        shape = mem.inspect_checkpoint(folder) if folder else None
        if shape is None:
            text = (f"memory: {model} is not on disk as a checkpoint here (yet); "
                    "the estimate needs its safetensors files")
        else:
            text = "memory " + mem.describe(mem.estimate(shape, config))
        if not get_current_worker().is_cancelled:
            self.post_message(self.Estimated(serial, text))

    @work(thread=True, exclusive=True, group="train-launch", exit_on_error=False)
    def _launch(self, model: str, data: str, method: str, overrides: list[str]) -> None:
        from tuneterm.core import jobs
        from tuneterm.core.jobs.plan import plan_train

        # tuneterm.core.jobs.plan holds the checks of `tuneterm train`: a typo fails here, in a second
        job = plan_train(method, model=model, data=data, overrides=overrides, name=f"{method} {data}").create()
        jobs.launch(job.id)
        command = f"tuneterm train --model {model} --data {data} --method {method} " + " ".join(overrides)
        self.post_message(self.Launched(job.id, command.strip()))

    # --- events -------------------------------------------------------------------------------------

    @on(DefaultsLoaded)
    def _defaults_loaded(self, event: DefaultsLoaded) -> None:
        model = self.query_one("#train-model", Input)
        if not model.value:
            model.value = event.model
        data = self.query_one("#train-data", Input)
        data.suggester.names = event.datasets
        if not data.value and event.datasets:
            data.value = "tickets" if "tickets" in event.datasets else event.datasets[0]

    @on(RecipeLoaded)
    async def _recipe_loaded(self, event: RecipeLoaded) -> None:
        if event.method != self.method:
            return
        await self.query_one(RecipePanel).show(f"recipes/{event.method}.toml", event.header, event.flat,
                                               event.comments, event.choices)
        if self.focused is None and self.is_current:
            self.focus_content()
        self._schedule()

    @on(Select.Changed, "#train-method")
    def _method_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.method:
            self.method = event.value
            self._load_recipe(event.value)

    @on(Input.Changed)
    @on(Select.Changed, ".setting-value")
    def _edited(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self.action_estimate)

    def _form(self) -> RecipeForm | None:
        return self.query_one(RecipePanel).form

    def action_estimate(self) -> None:
        model = self.query_one("#train-model", Input).value.strip()
        form = self._form()
        if not model or form is None:
            return
        self.serial += 1
        self._estimate(self.serial, model, self.method, form.overrides())

    @on(Estimated)
    def _estimated(self, event: Estimated) -> None:
        if event.serial == self.serial:
            self.query_one("#train-memory", Static).update(event.text)

    def action_reset(self) -> None:
        self._load_recipe(self.method)

    def action_launch(self) -> None:
        model = self.query_one("#train-model", Input).value.strip()
        data = self.query_one("#train-data", Input).value.strip()
        form = self._form()
        if not model or not data or form is None:
            self.notify("pick a model and a dataset first", severity="warning", timeout=4)
            return
        self.notify(f"checking and launching {self.method} on {data}…", timeout=3)
        self._launch(model, data, self.method, form.overrides())

    @on(Launched)
    def _launched(self, event: Launched) -> None:
        self.launched.append(event.job_id)
        line = self.query_one(JobProgressLine)
        line.job_id = event.job_id
        line.update(f"job {event.job_id}: started")
        line.remove_class("hidden")
        self.follow_jobs(event.job_id)
        self.notify(f"job {event.job_id} started; follow it on Jobs (4)\nsame from the CLI: {event.command}",
                    title="launched", timeout=8)

