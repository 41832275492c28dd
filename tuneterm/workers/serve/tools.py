"""Tool calls: ``tools`` and ``tool_choice`` through the model's own chat template, and the
answer parsed back into OpenAI's ``tool_calls`` by a parser chosen per template family.

Families, recognised by their template: Hermes-style (Qwen 2/2.5/3, Hermes: ``<tool_call>{json}
</tool_call>``), Mistral (``[TOOL_CALLS][{...}]``) and Llama 3.1+ (a bare ``{"name", "parameters"}``
object). A template that does not take ``tools`` is a 400 naming ``tools``. ``tool_choice``
``"required"`` or a named function is enforced with the grammar engine (:mod:`.structured`): the
answer must be one call, in the family's syntax, whose arguments match the function's
``parameters`` schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from tuneterm.workers.serve.schemas import ApiError


@dataclass
class ToolPlan:
    family: str
    tools: list[dict]  # OpenAI's {"type": "function", "function": {...}}, as the template takes them
    forced: str | None  # None (auto), "*" (required: any), or a function name


def template_text(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default") or ""
    if isinstance(template, list):
        template = " ".join(t.get("template", "") for t in template if isinstance(t, dict))
    return template


def family_of(tokenizer: Any) -> str | None:
    template = template_text(tokenizer)
    if "tools" not in template:
        return None
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or "ipython" in template:
        return "llama3"
    return None


def plan_tools(body: dict, tokenizer: Any) -> ToolPlan | None:
    """Check ``tools``/``tool_choice``; None when there is nothing to do (no tools, or "none")."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none"):
            raise ApiError(400, "tool_choice needs tools", param="tool_choice")
        return None
    if not isinstance(tools, list) or not tools:
        raise ApiError(400, "tools must be a non-empty array of functions", param="tools")
    names = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ApiError(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                           param=f"tools[{i}]")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise ApiError(400, f"tools[{i}].function.parameters must be a JSON schema object",
                           param=f"tools[{i}].function.parameters")
        names.append(fn["name"])
    if choice in (None, "auto"):
        forced = None
    elif choice == "none":
        return None
    elif choice == "required":
        forced = "*"
    elif isinstance(choice, dict) and choice.get("type") == "function" and \
            isinstance(choice.get("function"), dict) and choice["function"].get("name") in names:
        forced = choice["function"]["name"]
    else:
        raise ApiError(400, f"tool_choice must be none, auto, required or a function among {', '.join(names)}",
                       param="tool_choice")
    family = family_of(tokenizer)
    if family is None:
        raise ApiError(400, "this model's chat template does not take tools (tool calling needs a template that "
                            "does: Qwen, Llama 3.1+, Mistral, Hermes-style)", param="tools")
    return ToolPlan(family, tools, forced)


def call_grammar(plan: ToolPlan) -> Any:
    """The xgrammar grammar of one call in the family's syntax (for a forced ``tool_choice``)."""
    import xgrammar as xgr

    key = "parameters" if plan.family == "llama3" else "arguments"
    options = []
    for tool in plan.tools:
        fn = tool["function"]
        if plan.forced not in ("*", fn["name"]):
            continue
        options.append({"type": "object", "properties": {"name": {"const": fn["name"]},
                                                         key: fn.get("parameters") or {"type": "object"}},
                        "required": ["name", key], "additionalProperties": False})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    call = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True)
    if plan.family == "hermes":
        return xgr.Grammar.concat(xgr.Grammar.from_ebnf('root ::= "<tool_call>\\n"'), call,
                                  xgr.Grammar.from_ebnf('root ::= "\\n</tool_call>"'))
    if plan.family == "mistral":
        return xgr.Grammar.concat(xgr.Grammar.from_ebnf('root ::= "["'), call, xgr.Grammar.from_ebnf('root ::= "]"'))
    return call


def parse_calls(plan: ToolPlan, text: str) -> tuple[str | None, list[dict]]:
    """Split an answer into its text and OpenAI-shaped tool calls (none when it has no call)."""
    found: list[dict] = []
    content: str | None = text
    if plan.family == "hermes":
        for m in re.finditer(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", text, re.S):
            found.append(_loads(m.group(1)))
        if found:
            content = text[: text.find("<tool_call>")].strip() or None
    elif plan.family == "mistral":
        body = text.split("[TOOL_CALLS]", 1)[-1].strip()
        if body.startswith("["):
            parsed = _loads(body)
            found = parsed if isinstance(parsed, list) else []
            content = None if found else text
    else:
        parsed = _loads(text.strip().removeprefix("<|python_tag|>"))
        if isinstance(parsed, dict) and "name" in parsed:
            found, content = [parsed], None
    names = {t["function"]["name"] for t in plan.tools}
    calls = []
    for call in found:
        if not isinstance(call, dict) or call.get("name") not in names:
            return text, []  # not a call of a known function: the text stands
        args = call.get("arguments", call.get("parameters", {}))
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": call["name"],
                                   "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return content, calls


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
