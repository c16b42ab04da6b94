"""A chat session: history, slash commands and streamed replies; the terminal loop is in cli/chat.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tunesmith.errors import TunesmithError
from tunesmith.infer.generate import complete
from tunesmith.infer.sampling import SamplingParams

HELP = "commands: /temperature T, /top_k K, /top_p P, /min_p P, /repetition_penalty R, /max_tokens N, /system TEXT, /reset, /exit"
SETTINGS = {
    "/temperature": ("temperature", float),
    "/top_k": ("top_k", int),
    "/top_p": ("top_p", float),
    "/min_p": ("min_p", float),
    "/repetition_penalty": ("repetition_penalty", float),
}


@dataclass
class ChatSession:
    """One conversation: feed it input lines with `handle`; replies stream through `on_delta` and join the history."""

    model: object
    tokenizer: object
    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, top_p=0.95))
    max_new_tokens: int = 256
    system: str | None = None
    history: list[dict] = field(default_factory=list)
    seed: int | None = None

    def handle(self, line: str, on_delta: Callable[[str], None] | None = None) -> tuple[str, str | None]:
        """Process one input line. Returns (kind, text): kind is 'reply', 'info' or 'exit'."""
        line = line.strip()
        if not line:
            return "info", None
        if not line.startswith("/"):
            try:
                return "reply", self.reply(line, on_delta)
            except TunesmithError as exc:  # e.g. the history outgrew the context: say so, keep the session
                return "info", f"{exc.message}; /reset clears the history"
        command, _, arg = line.partition(" ")
        arg = arg.strip()
        if command in ("/exit", "/quit"):
            return "exit", None
        if command in ("/help", "/?"):
            return "info", HELP
        if command == "/reset":
            self.history.clear()
            return "info", "history cleared"
        if command == "/system":
            self.system = arg or None
            self.history.clear()
            return "info", f"system prompt {'set' if arg else 'removed'}; history cleared"
        if command == "/max_tokens":
            if not arg.isdigit() or int(arg) < 1:
                return "info", "usage: /max_tokens N (a positive integer)"
            self.max_new_tokens = int(arg)
            return "info", f"max_tokens = {arg}"
        if command in SETTINGS:
            name, kind = SETTINGS[command]
            try:
                self.params = replace(self.params, **{name: kind(arg)})
            except (ValueError, TunesmithError) as exc:
                return "info", f"{command} {arg!r} rejected: {exc}"
            return "info", f"{name} = {getattr(self.params, name)}"
        return "info", f"unknown command {command}; {HELP}"

    def reply(self, text: str, on_delta: Callable[[str], None] | None = None) -> str:
        """Answer `text` in the context of the history; raises TunesmithError (history unchanged) if it cannot."""
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history + [{"role": "user", "content": text}]
        result = complete(
            self.model,
            self.tokenizer,
            [messages],
            self.params,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
            on_token=(lambda i, d: on_delta(d)) if on_delta else None,
        )[0]
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": result.text}]
        return result.text
