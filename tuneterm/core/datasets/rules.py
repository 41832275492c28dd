"""The validation rules: every kind of problem, its default severity and the hint shown with it.

The OpenAI cookbook's data-prep checks (``data_type``, ``missing_messages_list``,
``message_missing_key``, ``message_unrecognized_key``, ``unrecognized_role``, ``missing_content``,
``example_missing_assistant_message`` and the warnings ``missing_system_message`` /
``missing_user_message`` / token limits) keep their names; unlike the cookbook, ``weight``,
``tool_calls``, ``tool`` messages, ``tools``, ``developer`` messages and list content are valid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ERROR = "error"
WARNING = "warning"

# kind -> (default severity, hint)
RULES: dict[str, tuple[str, str]] = {
    # reading the file
    "bom": (WARNING, "the file starts with a UTF-8 byte-order mark; tuneterm strips it on import, "
                     "other tools may not (re-save as UTF-8 without BOM)"),
    "blank_line": (WARNING, "blank lines are skipped; remove them before uploading elsewhere"),
    "invalid_unicode": (ERROR, "the text holds a lone surrogate escape (e.g. \\ud800), which is not a character; "
                               "fix the producer of the file"),
    "non_utf8": (ERROR, "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"),
    "invalid_json": (ERROR, "each line must be one complete JSON object"),
    "empty_file": (ERROR, "the file holds no examples"),
    "file_too_large": (ERROR, "OpenAI accepts files up to 512 MB; split the file"),
    "format_error": (ERROR, "the row does not fit the detected format; check the keys or pass --format/--map"),
    "mixed_formats": (ERROR, "every line of a file must use the same format"),
    # the cookbook's rules
    "data_type": (ERROR, "each line must be a JSON object, not a list or a value"),
    "missing_messages_list": (ERROR, "each example needs a non-empty \"messages\" list"),
    "message_type": (ERROR, "each message must be an object with \"role\" and \"content\""),
    "message_missing_key": (ERROR, "each message needs \"role\" and \"content\" (assistant tool calls may omit content)"),
    "message_unrecognized_key": (ERROR, "allowed message keys: role, content, name, weight, tool_calls, "
                                        "tool_call_id, function_call"),
    "unrecognized_role": (ERROR, "roles are system, developer, user, assistant, tool (or legacy function)"),
    "missing_content": (ERROR, "content must be a string (or a list of content parts)"),
    "example_missing_assistant_message": (ERROR, "add the assistant reply the model should learn"),
    "missing_system_message": (WARNING, "optional; a system prompt used at inference time belongs in training too"),
    "missing_user_message": (WARNING, "an example usually has at least one user message"),
    "template_folds_system": (WARNING, "this model's chat template has no system role: training and chat put the "
                              "system text at the top of the first user turn"),
    "template_error": (ERROR, "the model's chat template cannot render this conversation; fix the roles "
                       "(e.g. alternate user/assistant) or train with train.loss=all on another template"),
    "over_token_limit": (ERROR, "the example is truncated from the end (its reply is lost); shorten or drop it"),
    # what else bites people
    "empty_assistant_message": (ERROR, "an empty reply teaches the model to say nothing"),
    "empty_content": (WARNING, "an empty message adds nothing; drop it or fill it"),
    "invalid_weight": (ERROR, "weight is 0 or 1, and only on assistant messages"),
    "no_trainable_assistant": (ERROR, "every assistant message has weight 0, so nothing is learned"),
    "roles_out_of_order": (ERROR, "system messages come first; a tool message answers the assistant's tool call"),
    "invalid_tool_call": (ERROR, "tool_calls: [{\"id\", \"type\": \"function\", \"function\": "
                                 "{\"name\", \"arguments\": \"<JSON string>\"}}]"),
    "tool_message_unmatched": (ERROR, "a tool message's tool_call_id must match a preceding assistant tool call"),
    "invalid_tools": (ERROR, "tools: [{\"type\": \"function\", \"function\": {\"name\", \"description\", \"parameters\"}}]"),
    "unknown_key": (WARNING, "top-level keys are messages, tools, parallel_tool_calls, functions; others are ignored"),
    "last_message_not_assistant": (WARNING, "messages after the last assistant reply are not trained on"),
    "reserved_special_token": (WARNING, "special tokens such as <|endoftext|> in text confuse tokenizers; "
                                        "OpenAI rejects files containing them"),
    "split_overlap": (ERROR, "an example in two splits leaks the answer into evaluation; keep it in one split "
                             "(`tuneterm data split` never does this)"),
    "duplicate_example": (WARNING, "duplicates weigh an example more; remove them unless intended"),
    "too_few_examples": (WARNING, "OpenAI needs at least 10 examples; 50-100 are a good start"),
    # preference pairs (DPO)
    "preference_completion_spelling": (WARNING, "*_completion is the OpenAPI spelling; the docs use "
                                                "preferred_output / non_preferred_output (tuneterm converts it)"),
    "invalid_preference": (ERROR, "DPO: {\"input\": {\"messages\": [...]}, \"preferred_output\": [one assistant "
                                  "message], \"non_preferred_output\": [one assistant message]}"),
    "identical_preference": (WARNING, "the preferred and non-preferred outputs are the same; the pair teaches nothing"),
}

# Severity raised to an error when the target is an OpenAI model (OpenAI rejects these files).
OPENAI_ERRORS = frozenset({"reserved_special_token", "too_few_examples"})

# Rules that cannot fire in one file next to the others: a whole empty or oversized file, or an
# example shared by two split files of a dataset.
FILE_ONLY = frozenset({"empty_file", "file_too_large", "split_overlap"})


@dataclass
class Problem:
    """One problem: where (file, line, key), what (kind, message), how bad, what to do."""

    file: str
    line: int | None
    key: str | None
    kind: str
    severity: str
    message: str
    hint: str
    unit: str = "line"  # "line" for JSONL, "row" for CSV/Parquet, "item" for a JSON array

    def to_dict(self) -> dict:
        return asdict(self)

    def where(self) -> str:
        loc = f"{self.unit} {self.line}" if self.line is not None else "file"
        return f"{loc} [{self.key}]" if self.key else loc


def problem(file: str, line: int | None, kind: str, message: str, key: str | None = None,
            unit: str = "line", severity: str | None = None) -> Problem:
    default, hint = RULES[kind]
    return Problem(file, line, key, kind, severity or default, message, hint, unit)
