//! # tether-bench
//!
//! The benchmark of tether (issue 6): every figure measured in one run on this machine
//! against the demo backend (`tether demo-backend`), reported as min / median / max of
//! several repetitions with its target, as a Markdown table on stdout and as JSON.
//! Item 10 measures `tether mcp-proxy` in front of the MCP test backend
//! (`tether-mcp-test-backend` of `tether-testkit`): process start → `initialize` answer,
//! and the per-call forwarding overhead over rmcp's HTTP client calling the backend directly.
//!
//! ```sh
//! cargo run --release -p tether-bench                 # builds target/release/tether first
//! cargo run --release -p tether-bench -- --quick      # fewer repetitions
//! cargo run --release -p tether-bench -- --only 1,5   # some items only
//! cargo run --release -p tether-bench -- --only 10    # mcp-proxy only
//! ```
//!
//! Options: `--quick`, `--skip-build` (use the existing `target/release/tether` and, for
//! item 10, `target/release/tether-mcp-test-backend`; otherwise both are built first, the
//! test backend only when item 10 runs), `--only N,N,…` (items 1–10), `--out PATH`
//! (default `target/bench/results.json`).
//!
//! No tracing subscriber is installed: the relay's per-line tracing event costs only the
//! disabled-callsite check here (a real consumer, like `tether up`, pays for formatting).

#[cfg(unix)]
mod error;
#[cfg(unix)]
mod harness;
#[cfg(unix)]
mod measure;
#[cfg(unix)]
mod report;

#[cfg(unix)]
use std::path::PathBuf;
#[cfg(unix)]
use std::process::Command;

#[cfg(unix)]
use error::{BenchResult, Context, fail};
#[cfg(unix)]
use harness::Harness;
#[cfg(unix)]
use report::{Report, Row};

/// Command-line options.
#[cfg(unix)]
#[derive(Debug)]
struct Options {
    quick: bool,
    skip_build: bool,
    only: Option<Vec<u8>>,
    out: PathBuf,
}

#[cfg(unix)]
impl Options {
    /// Whether item `item` is to be measured.
    fn wanted(&self, item: u8) -> bool {
        self.only.as_ref().is_none_or(|l| l.contains(&item))
    }
}

#[cfg(unix)]
fn parse_options() -> BenchResult<Options> {
    let mut o = Options {
        quick: false,
        skip_build: false,
        only: None,
        out: harness::workspace_root().join("target/bench/results.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--skip-build" => o.skip_build = true,
            "--only" => {
                let list = args.next().ctx("--only needs a list, e.g. --only 1,3,5")?;
                let items = list.split(',').map(|s| s.trim().parse::<u8>()).collect::<Result<Vec<_>, _>>();
                o.only = Some(items.ctx(format!("bad --only list {list:?}"))?);
            }
            "--out" => o.out = args.next().ctx("--out needs a path")?.into(),
            "-h" | "--help" => {
                println!("tether-bench [--quick] [--skip-build] [--only 1,2,…] [--out results.json]");
                println!("items: 1 readiness, 2 start overhead, 3 early exit, 4 log relay, 5 stop,");
                println!("       6 port holder lookup, 7 footprint, 8 scale, 9 Docker runner, 10 mcp-proxy");
                std::process::exit(0);
            }
            other => return fail(format!("unknown option {other:?} (try --help)")),
        }
    }
    Ok(o)
}

/// The output of a command, trimmed, or `unknown`.
#[cfg(unix)]
#[cfg(unix)]
fn command_text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Processes on the machine now.
#[cfg(unix)]
pub(crate) fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok())).count())
        .unwrap_or(0)
}

/// `mcp_backend`: the MCP test backend binary for item 10 (`None` when item 10 is not wanted).
#[cfg(unix)]
async fn run(o: &Options, h: &Harness, mcp_backend: Option<BenchResult<PathBuf>>) -> Vec<Row> {
    let reps = if o.quick { 5 } else { 15 };
    let wanted = |item: u8| o.wanted(item);
    let mut rows = Vec::new();
    let mut add = |item: u8, what: &str, r: BenchResult<Vec<Row>>| match r {
        Ok(mut r) => {
            eprint!("{}", report::markdown(&r).lines().skip(2).map(|l| format!("{l}\n")).collect::<String>());
            rows.append(&mut r);
        }
        Err(e) => {
            eprintln!("item {item} ({what}) failed: {e}");
            rows.push(Row::skipped(item, what, &format!("failed: {e}")));
        }
    };
    if wanted(1) {
        add(1, "readiness latency", measure::startup::readiness(h, reps).await);
    }
    if wanted(2) {
        add(2, "start overhead", measure::startup::overhead(h, reps).await);
    }
    if wanted(3) {
        add(3, "early exit", measure::startup::early_exit(h, reps).await);
    }
    if wanted(4) {
        add(4, "log relay", measure::relay::relay(h, reps.div_ceil(3)).await);
    }
    if wanted(5) {
        add(5, "stop", measure::stop::stop(h, reps).await);
    }
    if wanted(6) {
        add(6, "port holder lookup", measure::port::port_lookup(h, reps).await);
    }
    if wanted(7) {
        add(7, "supervisor footprint", measure::footprint::footprint(h, reps.div_ceil(5).max(2)).await);
    }
    if wanted(8) {
        add(8, "scale", measure::scale::scale(h, reps).await);
    }
    if wanted(9) {
        add(9, "Docker runner", measure::docker::docker(h, reps.div_ceil(3)).await);
    }
    if let Some(backend) = mcp_backend {
        let measured = match backend {
            Ok(backend) => measure::mcp::mcp_proxy(h, &backend, reps).await,
            Err(e) => Err(e),
        };
        add(10, "mcp-proxy", measured);
    }
    rows
}

fn main() {
    // First: when this program is started as a backend's guard (by ensure_running), be it.
    tether::install_guard();
    #[cfg(not(unix))]
    {
        eprintln!("tether-bench: the benchmark runs on Unix only (it reads process facts the Unix way)");
        std::process::exit(2);
    }
    #[cfg(unix)]
    if let Err(e) = real_main() {
        eprintln!("tether-bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(unix)]
fn real_main() -> BenchResult<()> {
    let o = parse_options()?;
    let exe = harness::tether_binary(o.skip_build)?;
    // Item 10's backend; a failure here fails item 10 only.
    let mcp_backend = o.wanted(10).then(|| harness::mcp_backend_binary(o.skip_build));
    let processes = process_count();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().ctx("cannot start the tokio runtime")?;
    let h = Harness::new(exe);
    eprintln!(
        "measuring with {}, guards run as {} ({} processes running)…",
        h.exe.display(),
        h.guard_exe().display(),
        processes
    );
    let rows = rt.block_on(run(&o, &h, mcp_backend));
    let report = Report {
        date: command_text("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        processes,
        machine: command_text("uname", &["-srm"]),
        rows,
    };
    println!(
        "tether benchmark, {} — {} cores, {} ({} processes)\n",
        report.date, report.cores, report.machine, processes
    );
    println!("{}", report::markdown(&report.rows));
    report::write_json(&report, &o.out)?;
    eprintln!("written: {}", o.out.display());
    Ok(())
}
