// OpenAI's Node SDK against `tuneterm serve` (driven by tests/test_serve_node.py).
// argv: BASE_URL BASE_MODEL ADAPTER_MODEL TOOLS_MODEL (a model whose chat template takes tools);
// prints one JSON object with what each call returned.
import OpenAI from "openai";

const [baseURL, base, adapter, toolsModel] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
const messages = [{ role: "user", content: "hello there" }];
const out = {};

async function status(fn) {
  try {
    await fn();
    return { status: 200 };
  } catch (err) {
    return { status: err.status, param: err.param ?? err.error?.param ?? null };
  }
}

out.models = (await client.models.list()).data.map((m) => m.id);
const plain = await client.chat.completions.create({ model: adapter, messages, max_tokens: 6, temperature: 0 });
out.plain = plain.choices[0].message.content;
let streamed = "";
const stream = await client.chat.completions.create({ model: adapter, messages, max_tokens: 6, temperature: 0, stream: true,
  stream_options: { include_usage: true } });
for await (const chunk of stream) {
  if (chunk.choices.length) streamed += chunk.choices[0].delta.content ?? "";
  else out.stream_usage = chunk.usage.completion_tokens;
}
out.streamed = streamed;
const lp = await client.chat.completions.create({ model: adapter, messages, max_tokens: 4, temperature: 0, logprobs: true,
  top_logprobs: 2 });
out.logprobs = lp.choices[0].logprobs.content.map((t) => [t.token, t.logprob, t.top_logprobs.length]);
out.streamed_logprobs = [];
for await (const chunk of await client.chat.completions.create({ model: adapter, messages, max_tokens: 4, temperature: 0,
  logprobs: true, top_logprobs: 2, stream: true })) {
  for (const t of chunk.choices[0]?.logprobs?.content ?? []) out.streamed_logprobs.push([t.token, t.logprob, t.top_logprobs.length]);
}
const schema = { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"], additionalProperties: false };
const js = await client.chat.completions.create({ model: adapter, messages, max_tokens: 20, temperature: 0,
  response_format: { type: "json_schema", json_schema: { name: "x", schema, strict: true } } });
out.json_schema = js.choices[0].message.content;
const cmpl = await client.completions.create({ model: base, prompt: "The cat sat", max_tokens: 0, echo: true, logprobs: 1 });
out.completion_logprobs = cmpl.choices[0].logprobs.token_logprobs;
const resp = await client.responses.create({ model: adapter, input: "hello there", max_output_tokens: 6, temperature: 0 });
out.responses = resp.output_text;
out.responses_events = [];
out.responses_streamed = "";
for await (const event of await client.responses.create({ model: adapter, input: "hello there", max_output_tokens: 6,
  temperature: 0, stream: true })) {
  out.responses_events.push(event.type);
  if (event.type === "response.output_text.delta") out.responses_streamed += event.delta;
}
out.responses_refused = await status(() => client.responses.create({ model: adapter, input: "hi",
  previous_response_id: "resp_1" }));
const tools = [{ type: "function", function: { name: "route", parameters: { type: "object",
  properties: { queue: { enum: ["billing", "tech"] }, urgent: { type: "boolean" } }, required: ["queue", "urgent"],
  additionalProperties: false } } }];
const ask = [{ role: "user", content: "Route: my card was charged twice" }];
const called = await client.chat.completions.create({ model: toolsModel, messages: ask, tools, tool_choice: "required",
  max_tokens: 100, temperature: 0 });
out.tool_call = { finish: called.choices[0].finish_reason, content: called.choices[0].message.content,
  name: called.choices[0].message.tool_calls?.[0]?.function.name,
  arguments: called.choices[0].message.tool_calls?.[0]?.function.arguments };
out.streamed_tool_call = { names: [], finish: null };
for await (const chunk of await client.chat.completions.create({ model: toolsModel, messages: ask, tools, max_tokens: 100,
  temperature: 0, stream: true, tool_choice: { type: "function", function: { name: "route" } } })) {
  for (const d of chunk.choices[0]?.delta?.tool_calls ?? []) out.streamed_tool_call.names.push(d.function?.name);
  if (chunk.choices[0]?.finish_reason) out.streamed_tool_call.finish = chunk.choices[0].finish_reason;
}
out.tools = await status(() => client.chat.completions.create({ model: adapter, messages, max_tokens: 2,
  tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: {} } } }] }));
out.unknown = await status(() => client.chat.completions.create({ model: adapter, messages, max_tokens: 2, frobnicate: 3 }));
out.missing = await status(() => client.chat.completions.create({ model: "nope", messages }));
console.log(JSON.stringify(out));
