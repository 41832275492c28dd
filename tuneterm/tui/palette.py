"""The command palette (ctrl+p): every screen, and every action of the screen you are on.

Actions come from the active bindings (the same ones the footer shows), so an action with a
key always has a palette entry too, with its key and binding id as help.
"""

from __future__ import annotations

from textual.command import DiscoveryHit, Hit, Hits, Provider


class WorkbenchCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        from tuneterm.tui.navigation import PLACES

        app = self.app
        out: list[tuple[str, object, str]] = []
        for place in PLACES:
            out.append((f"Go to {place.title}", _runner(app, f"goto('{place.mode}')", app),
                        f"key {place.key} or F{place.key}"))
        seen: set[str] = set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if not binding.description or binding.action in seen or binding.action.startswith("goto("):
                continue
            if binding.action in ("command_palette",):
                continue
            seen.add(binding.action)
            owner = getattr(active.node, "PALETTE_GROUP", None) or type(active.node).__name__.replace("Screen", "")
            help_text = f"key {binding.key_display or key}" + (f" · id {binding.id}" if binding.id else "")
            out.append((f"{owner}: {binding.description}", _runner(app, binding.action, active.node), help_text))
        return out

    async def discover(self) -> Hits:
        for name, command, help_text in self._commands():
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, command, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, text=name, help=help_text)


def _runner(app, action: str, namespace):
    async def run() -> None:
        await app.run_action(action, namespace)

    return run
