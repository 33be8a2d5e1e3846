"""An MCP host on the official Python MCP SDK (1.x or 2.x) that times `tether mcp-proxy`.

Spawns the stdio server COMMAND ARGS as a host does (`stdio_client` with
`StdioServerParameters`, the whole environment passed on), initializes a `ClientSession`,
lists the tools once, then calls TOOL with {"task_description": TASK} until it succeeds, the
host learns of a failure, or the deadline passes. Prints one JSON object on stdout:

    {"sdk": "1.30.0", "init_s": …, "list_s": …, "list_ok": …, "list_error": …, "tools": [names],
     "call_s": …, "call_ok": …, "loading_answers": n, "call_text": …, "failure_s": …,
     "failure_text": …, "failure_via": "tools/list" | "notifications/message" | "tools/call",
     "notifications": [{"t": …, "level": …, "data": …}], "list_changed_s": [...],
     "direct": {"url": …, "pid": …, "tools": [...], "text": …, "same_result": bool}}

Every time is seconds since just before the server was spawned.

With `--direct TETHER` (after a successful call, while this session is still open) the
instance tether records (`TETHER status --json`, the environment's state directory) is
asked directly: a second SDK client connects to its streamable-HTTP endpoint
(`URL/mcp`), lists the tools and makes the same call; `same_result` says whether both
answers carry the same content.

With `--expect-failure` the first failure the host is told of (a `tools/list` error, an
error-level `notifications/message`, or a `tools/call` error that is not a "still starting"
answer) ends the run; without it such a failure ends the run as a failed one.

`--server-env FILE` gives the server the environment in FILE (a JSON object) instead of
this process's: `uv run` puts a fresh ephemeral environment on PATH and in VIRTUAL_ENV each
time, and tether shares a backend only between proxies that would give it the same
environment (as an MCP host's windows do).

Usage: python host.py [--tool T] [--task TEXT] [--deadline S] [--direct TETHER]
                      [--expect-failure] [--server-env FILE] [--hold S] -- COMMAND [ARGS…]
"""

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import time

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

STARTING_MARKERS = ("still starting", "[LOADING", "is being restarted")


def dump(model):
    """A pydantic model as the JSON the server sent (camelCase keys, no nulls)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def text_of(result):
    """The text content blocks of a tool result, joined."""
    parts = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        if text is not None:
            parts.append(text)
    return "\n".join(parts)


def is_error(result):
    value = getattr(result, "is_error", None)
    if value is None:
        value = getattr(result, "isError", None)
    return bool(value)


def error_text(exc):
    """What an SDK exception says (an MCP error's message, else repr)."""
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None)
    return str(message) if message else f"{type(exc).__name__}: {exc}"


class Recorder:
    def __init__(self):
        self.t0 = time.monotonic()
        self.notifications = []
        self.list_changed = []

    def now(self):
        return round(time.monotonic() - self.t0, 3)

    async def on_log(self, params):
        level = getattr(params, "level", None)
        self.notifications.append(
            {"t": self.now(), "level": str(level), "logger": getattr(params, "logger", None), "data": getattr(params, "data", None)}
        )

    async def on_message(self, message):
        root = getattr(message, "root", message)
        if "ToolListChanged" in type(root).__name__:
            self.list_changed.append(self.now())

    def failure_note(self):
        for n in self.notifications:
            if "error" in n["level"].lower():
                return n
        return None


def backend_record(tether):
    """The one ready instance `tether status --json` shows (its url and pid)."""
    out = subprocess.run([tether, "status", "--json"], capture_output=True, text=True, timeout=30, check=True).stdout
    text = out.strip()
    records = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    ready = [r for r in records if r.get("state") == "ready" and r.get("url")]
    if len(ready) != 1:
        raise RuntimeError(f"expected one ready instance in tether status, saw {len(ready)}: {text[:300]}")
    return ready[0]


async def direct_call(tether, tool, arguments, proxy_text):
    """The same call straight to the backend's streamable-HTTP endpoint."""
    import mcp.client.streamable_http as sh

    record = backend_record(tether)
    url = record["url"].rstrip("/") + "/mcp"
    connect = getattr(sh, "streamable_http_client", None) or sh.streamablehttp_client
    out = {"url": url, "pid": record.get("pid"), "name": record.get("name")}
    with anyio.fail_after(60):
        async with connect(url) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                out["tools"] = [t.name for t in listed.tools]
                out["tools_full"] = [dump(t) for t in listed.tools]
                result = await session.call_tool(tool, arguments)
                out["is_error"] = is_error(result)
                out["text"] = text_of(result)
                out["same_result"] = (not out["is_error"]) and out["text"] == proxy_text
    return out


async def run(options, command):
    rec = Recorder()
    out = {"sdk": importlib.metadata.version("mcp"), "loading_answers": 0, "call_ok": False, "ok": False}
    arguments = {"task_description": options.task}
    env = dict(os.environ)
    if options.server_env:
        with open(options.server_env) as f:
            env = json.load(f)
    server = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=options.cwd)

    def fail(via, text, t=None):
        out["failure_s"] = rec.now() if t is None else t
        out["failure_via"] = via
        out["failure_text"] = text

    def told_failure():
        note = rec.failure_note()
        if note is not None and "failure_s" not in out:
            data = note["data"]
            text = data.get("error") if isinstance(data, dict) and data.get("error") else json.dumps(data)
            fail("notifications/message", text, note["t"])
        return "failure_s" in out

    try:
        with anyio.fail_after(options.deadline):
            async with stdio_client(server) as (read, write):
                async with ClientSession(read, write, logging_callback=rec.on_log, message_handler=rec.on_message) as session:
                    init = await session.initialize()
                    out["init_s"] = rec.now()
                    info = getattr(init, "server_info", None) or getattr(init, "serverInfo", None)
                    out["server"] = dump(info) if info is not None else None
                    try:
                        listed = await session.list_tools()
                        out["list_s"] = rec.now()
                        out["list_ok"] = True
                        out["tools"] = [t.name for t in listed.tools]
                        out["tools_full"] = [dump(t) for t in listed.tools]
                    except Exception as e:  # the proxy answers a failure with a tools/list error
                        out["list_s"] = rec.now()
                        out["list_ok"] = False
                        out["list_error"] = error_text(e)
                        fail("tools/list", out["list_error"])
                    while "failure_s" not in out and not out["call_ok"]:
                        if told_failure():
                            break
                        try:
                            result = await session.call_tool(options.tool, arguments)
                        except Exception as e:
                            told_failure() or fail("tools/call", error_text(e))
                            break
                        text = text_of(result)
                        if any(m in text for m in STARTING_MARKERS):
                            out["loading_answers"] += 1
                            out["last_loading_text"] = text[:300]
                            await anyio.sleep(0.5)
                            continue
                        if is_error(result):
                            told_failure() or fail("tools/call", text)
                            break
                        out["call_s"] = rec.now()
                        out["call_ok"] = True
                        out["call_text"] = text
                    # A failure notification may come a moment after the answer that showed it.
                    if "failure_s" in out and out["failure_via"] != "notifications/message":
                        with anyio.move_on_after(1.0):
                            while rec.failure_note() is None:
                                await anyio.sleep(0.05)
                    if out["call_ok"] and options.direct:
                        try:
                            out["direct"] = await direct_call(options.direct, options.tool, arguments, out["call_text"])
                        except Exception as e:
                            out["direct"] = {"error": error_text(e)}
                        # The proxy's own tools/list now the backend is ready.
                        listed = await session.list_tools()
                        out["tools_after_ready"] = [t.name for t in listed.tools]
                        out["tools_after_ready_full"] = [dump(t) for t in listed.tools]
                    if options.hold:
                        await anyio.sleep(options.hold)
                    out["closing_s"] = rec.now()
    except TimeoutError:
        out["timeout"] = f"no answer within the {options.deadline}s deadline"
    except BaseException as e:  # report, never hang or lose the record
        if isinstance(e, KeyboardInterrupt):
            raise
        out["exception"] = error_text(e)
    out["closed_s"] = rec.now()
    out["notifications"] = rec.notifications
    out["list_changed_s"] = rec.list_changed
    if options.expect_failure:
        out["ok"] = "failure_s" in out
    else:
        direct_ok = (not options.direct) or out.get("direct", {}).get("same_result") is not None
        out["ok"] = out["call_ok"] and "failure_s" not in out and direct_ok
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cwd", default=os.getcwd(), help="the server's working directory")
    parser.add_argument("--tool", default="find_helpful_skills")
    parser.add_argument("--task", default="extract tables from a PDF file")
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds for the whole session")
    parser.add_argument("--direct", metavar="TETHER", help="also call the recorded backend directly")
    parser.add_argument("--expect-failure", action="store_true")
    parser.add_argument("--hold", type=float, default=0.0, help="keep the session open this many seconds at the end")
    parser.add_argument(
        "--server-env", metavar="FILE",
        help="a JSON object: the server's whole environment (default: this process's, which `uv run` changes per run)",
    )
    parser.add_argument("--out", help="write the JSON here as well as to stdout")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS…]")
    options = parser.parse_args()
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("no server command after --")
    out = anyio.run(run, options, command)
    text = json.dumps(out)
    if options.out:
        with open(options.out, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
