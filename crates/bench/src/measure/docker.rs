//! Item 9: the Docker runner — start-to-ready overhead and stop time of the demo backend
//! in a container (an image made here from the release `tether` binary and its libraries).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_core::probe::HttpProbe;
use tether_core::{LaunchOptions, LaunchSpec, launch};
use tether_runner_docker::{DockerRunner, PullPolicy};

use crate::error::{BenchResult, Context, fail};
use crate::harness::{Harness, ms, ms_between, stats};
use crate::report::{Row, Target};

const IMAGE: &str = "tether-bench-demo:latest";

fn run(program: &str, args: &[&str]) -> BenchResult<String> {
    let out = Command::new(program).args(args).output().ctx(format!("cannot run {program}"))?;
    if !out.status.success() {
        return fail(format!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker import` a root filesystem holding `tether` (entrypoint `tether demo-backend`)
/// and the shared libraries `ldd` lists for it.
fn build_image(exe: &Path) -> BenchResult<()> {
    let dir = tempfile::tempdir().ctx("cannot create a temporary directory")?;
    let root = dir.path().join("rootfs");
    let copy = |from: &Path, rel: &Path| -> BenchResult<()> {
        let to = root.join(rel);
        std::fs::create_dir_all(to.parent().ctx("no parent")?).ctx("cannot create the image tree")?;
        std::fs::copy(from, &to).map(drop).ctx(format!("cannot copy {}", from.display()))
    };
    copy(exe, Path::new("tether"))?;
    let exe_s = exe.to_string_lossy();
    for line in run("ldd", &[&exe_s])?.lines() {
        let path = line.split_once("=>").map_or(line, |(_, r)| r).split_whitespace().next().unwrap_or("");
        if let Some(rel) = path.strip_prefix('/') {
            copy(Path::new(path), Path::new(rel))?;
        }
    }
    std::fs::create_dir_all(root.join("tmp")).ctx("cannot create tmp")?;
    let tar = dir.path().join("rootfs.tar");
    let (root_s, tar_s) = (root.to_string_lossy(), tar.to_string_lossy());
    run("tar", &["-C", &root_s, "-cf", &tar_s, "."])?;
    run("docker", &["import", "--change", r#"ENTRYPOINT ["/tether", "demo-backend"]"#, &tar_s, IMAGE]).map(drop)
}

/// Item 9.
pub async fn docker(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    if run("docker", &["version", "--format", "{{.Server.APIVersion}}"]).is_err() {
        return Ok(vec![Row::skipped(9, "Docker runner", "no reachable Docker engine")]);
    }
    let exe = h.exe.clone();
    tokio::task::spawn_blocking(move || build_image(&exe)).await.ctx("the image task failed")??;
    let runner = Arc::new(DockerRunner::new(IMAGE).with_container_port(8000).with_pull(PullPolicy::Never));
    let (mut overhead, mut stop) = (Vec::new(), Vec::new());
    for i in 0..reps {
        let port = tether_core::port::free_port("127.0.0.1").ctx("cannot find a free port")?;
        let spec = LaunchSpec::new(format!("bench-docker-{}-{i}", std::process::id()), port)
            .with_args(["--port", "{port}", "--host", "{host}"])
            .with_grace(Duration::from_secs(5));
        let probe = Arc::new(HttpProbe::claude_skills("/health"));
        let t0 = Instant::now();
        let result = launch(runner.clone(), spec, probe, LaunchOptions::default()).await;
        let wall = t0.elapsed();
        let instance = result.map_err(|e| crate::error::BenchError(format!("docker launch failed: {}", e.chain())))?;
        let st = stats(port).await;
        let t1 = Instant::now();
        instance.stop().await.ctx("cannot stop the container")?;
        stop.push(ms(t1.elapsed()));
        let st = st?;
        let own = st.ready_at_unix_nanos.map_or(0.0, |r| ms_between(st.started_at_unix_nanos, r));
        overhead.push(ms(wall) - own);
    }
    Ok(vec![
        Row::new(9, "Docker: `launch` overhead over the backend's own start-to-ready", "ms", &overhead, Target::None)
            .note("create + start the container, first probes"),
        Row::new(9, "Docker: stop (container stop + remove)", "ms", &stop, Target::None),
    ])
}
