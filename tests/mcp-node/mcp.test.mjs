// Drives `ds-sandbox mcp` over stdio with the official MCP TypeScript SDK, as
// an LLM client would. Run by scripts/test-mcp-node.sh, which sets
// DS_SANDBOX_BIN (the binary) and SANDBOX_STATE_DIR (a temporary directory).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const bin = process.env.DS_SANDBOX_BIN;
const callTimeoutMs = 120_000;

let client;
let stderr = "";
let sandboxId;

before(async () => {
  assert.ok(bin, "set DS_SANDBOX_BIN to the ds-sandbox binary");
  const transport = new StdioClientTransport({
    command: bin,
    args: ["mcp"],
    env: { ...process.env },
    stderr: "pipe",
  });
  transport.stderr?.on("data", (chunk) => {
    stderr += chunk;
  });
  client = new Client({ name: "ds-sandbox-node-test", version: "0.0.0" });
  await client.connect(transport);
});

after(async () => {
  await client?.close();
});

/** Calls a tool; tool errors come back as results with isError set. */
async function call(name, args = {}) {
  return client.callTool({ name, arguments: args }, undefined, { timeout: callTimeoutMs });
}

function textOf(res) {
  return res.content
    .filter((c) => c.type === "text")
    .map((c) => c.text)
    .join("\n");
}

function assertOk(res) {
  assert.ok(!res.isError, `tool error: ${textOf(res)}\nserver stderr:\n${stderr}`);
  return textOf(res);
}

test("tools/list has the seven tools with input schemas", async () => {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  assert.deepEqual(names, [
    "create_sandbox",
    "kill_sandbox",
    "list_files",
    "read_file",
    "run_code",
    "run_command",
    "write_file",
  ]);
  for (const t of tools) {
    assert.ok(t.description, `${t.name} has no description`);
    assert.equal(t.inputSchema.type, "object", `${t.name} input schema`);
  }
  const runCode = tools.find((t) => t.name === "run_code");
  assert.deepEqual(runCode.inputSchema.required, ["code"]);
  assert.equal(runCode.inputSchema.properties.code.type, "string");
});

test("create_sandbox returns an id, user and workdir", async () => {
  const res = await call("create_sandbox", { timeout_seconds: 600 });
  assertOk(res);
  const out = res.structuredContent;
  assert.match(out.sandbox_id, /^[a-z0-9]{20}$/);
  assert.ok(out.user, "user");
  assert.ok(out.workdir.startsWith("/"), `workdir ${out.workdir}`);
  assert.equal(out.default, true, "the first sandbox becomes the session's default");
  sandboxId = out.sandbox_id;
});

test("run_code keeps state between calls", async () => {
  assertOk(await call("run_code", { code: "x = 41", sandbox_id: sandboxId }));
  const text = assertOk(await call("run_code", { code: "x + 1", sandbox_id: sandboxId }));
  assert.match(text, /\b42\b/);
  // The default sandbox is the one created above.
  assert.match(assertOk(await call("run_code", { code: "x * 2" })), /\b82\b/);
});

test("run_code returns stdout, and a Python exception as an error with its traceback", async () => {
  assert.match(assertOk(await call("run_code", { code: "print('hello from node')" })), /hello from node/);
  const res = await call("run_code", { code: "1/0" });
  assert.equal(res.isError, true);
  assert.match(textOf(res), /ZeroDivisionError: division by zero/);
  assert.match(textOf(res), /Traceback/);
});

test("run_code returns a matplotlib figure as image content", async () => {
  const res = await call("run_code", {
    code: "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
  });
  assertOk(res);
  const img = res.content.find((c) => c.type === "image");
  assert.ok(img, `no image content in ${JSON.stringify(res.content).slice(0, 500)}`);
  assert.equal(img.mimeType, "image/png");
  const png = Buffer.from(img.data, "base64");
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
});

test("run_command returns the exit code, stdout and stderr", async () => {
  const res = await call("run_command", { command: "echo out; echo err >&2; exit 3" });
  const text = assertOk(res);
  assert.equal(res.structuredContent.exit_code, 3);
  assert.equal(res.structuredContent.stdout, "out\n");
  assert.equal(res.structuredContent.stderr, "err\n");
  assert.match(text, /exit code: 3/);
});

test("write_file then read_file round-trips, and list_files sees the file", async () => {
  const content = "line one\nline two – ünïcödé\n";
  const w = await call("write_file", { path: "notes/a.txt", content });
  assertOk(w);
  assert.ok(w.structuredContent.path.endsWith("/notes/a.txt"), w.structuredContent.path);
  assert.equal(w.structuredContent.size, Buffer.byteLength(content));
  assert.equal(assertOk(await call("read_file", { path: "notes/a.txt" })), content);
  const l = await call("list_files", { path: "notes" });
  assertOk(l);
  assert.deepEqual(
    l.structuredContent.entries.map((e) => e.path.split("/").pop()),
    ["a.txt"],
  );
});

test("bad input is a tool error and the server keeps serving", async () => {
  const missing = await call("run_code", {});
  assert.equal(missing.isError, true);
  assert.match(textOf(missing), /code/);
  const unknown = await call("run_code", { code: "1", sandbox_id: "nosuchsandbox" });
  assert.equal(unknown.isError, true);
  assert.match(textOf(unknown), /not found/);
  const kill = await call("kill_sandbox", { sandbox_id: "nosuchsandbox" });
  assert.equal(kill.isError, true);
  assert.match(textOf(kill), /not found/);
  assert.match(assertOk(await call("run_code", { code: "x" })), /\b41\b/);
});

test("kill_sandbox ends the sandbox; using it afterwards is a tool error", async () => {
  const res = await call("kill_sandbox", { sandbox_id: sandboxId });
  assertOk(res);
  assert.equal(res.structuredContent.sandbox_id, sandboxId);
  const after = await call("run_code", { code: "1", sandbox_id: sandboxId });
  assert.equal(after.isError, true);
  assert.match(textOf(after), /not found/);
});
