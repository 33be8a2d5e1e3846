//! The `tether` binary: the only place a tracing subscriber is installed.

#[macro_use]
mod output;
mod cli;
mod inspect;
#[cfg(feature = "mcp")]
mod mcp_proxy;
mod up;

fn main() {
    // First: this binary is also every backend's guard.
    tether::install_guard();
    let cli = cli::Cli::parse_args();
    // Before the runtime: tokio's signal setup panics when it cannot open its descriptors.
    if let Some(limit) = output::too_few_descriptors() {
        eprintln!(
            "error: too many open files: tether needs at least {} file descriptors and the limit \
             is {limit}; raise it with `ulimit -n 1024`",
            output::MIN_DESCRIPTORS
        );
        std::process::exit(1);
    }
    let json = match &cli.command {
        cli::Command::Up(a) => a.json,
        cli::Command::Status(a) | cli::Command::Down(a) => a.json,
        cli::Command::Port(a) => a.json,
        _ => false,
    };
    // The commands that print and end (`status | head -1`) end quietly when their reader has
    // gone, as other CLIs do: by the default SIGPIPE, not a panic in `println!`. They start
    // no process that would inherit it. (`up` and `mcp-proxy` supervise a backend: their
    // output never blocks or kills them, see `output`.)
    if matches!(
        cli.command,
        cli::Command::Status(_) | cli::Command::Down(_) | cli::Command::Logs(_) | cli::Command::Port(_)
    ) {
        output::default_sigpipe();
    }
    output::set_raw(match &cli.command {
        cli::Command::Up(a) => a.raw,
        cli::Command::Logs(a) => a.raw,
        #[cfg(feature = "mcp")]
        cli::Command::McpProxy(a) => a.raw,
        _ => false,
    });
    let is_demo = matches!(cli.command, cli::Command::DemoBackend(_));
    if !is_demo {
        output::init_tracing(json);
    }
    // One thread: tether waits on a few pipes, timers and sockets; a small footprint matters more.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            cli::Command::Up(args) => up::run(*args).await,
            cli::Command::Down(args) => inspect::down(args).await,
            cli::Command::Status(args) => inspect::status(args).await,
            cli::Command::Logs(args) => inspect::logs(args).await,
            cli::Command::Port(args) => inspect::port(args).await,
            #[cfg(feature = "mcp")]
            cli::Command::McpProxy(args) => mcp_proxy::run(*args).await,
            #[cfg(not(feature = "mcp"))]
            cli::Command::McpProxy(_) => {
                eprintln!("error: this tether was built without the `mcp` feature; rebuild with `--features mcp`");
                2
            }
            cli::Command::DemoBackend(args) => demo(*args).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    output::finish();
    std::process::exit(code);
}

async fn demo(args: tether_demo::DemoArgs) -> i32 {
    let exe = std::env::current_exe().map(|p| p.into_os_string()).unwrap_or_else(|_| "tether".into());
    match tether_demo::run(args, vec![exe, "demo-backend".into()]).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo-backend: {e}");
            1
        }
    }
}
