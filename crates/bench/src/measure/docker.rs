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

/// The same container driven through bollard directly — the engine's own cost, for
/// reference: create (same image, arguments, `init`, published port) + start + poll
/// `/health` every millisecond until its first "ready" answer; then stop (SIGTERM,
/// the same grace) + remove through the API.
struct Direct {
    docker: bollard::Docker,
}

impl Direct {
    async fn connect() -> BenchResult<Direct> {
        let docker = bollard::Docker::connect_with_local_defaults().ctx("cannot reach the Docker engine")?;
        let docker = docker.negotiate_version().await.ctx("cannot agree on a Docker API version")?;
        Ok(Direct { docker })
    }

    /// (ms from create to the first ready answer, minus the backend's own start-to-ready;
    /// ms of stop + remove).
    async fn once(&self, i: usize) -> BenchResult<(f64, f64)> {
        use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
        use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions, StopContainerOptions};

        let port = tether_core::port::free_port("127.0.0.1").ctx("cannot find a free port")?;
        let name = format!("bench-docker-direct-{}-{i}", std::process::id());
        let exposed = "8000/tcp".to_string();
        let binding = PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(port.to_string()) };
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(["--port", "8000", "--host", "0.0.0.0"].map(String::from).to_vec()),
            env: Some(vec![format!("TETHER_INSTANCE={name}")]),
            exposed_ports: Some(vec![exposed.clone()]),
            host_config: Some(HostConfig {
                init: Some(true),
                port_bindings: Some([(exposed, Some(vec![binding]))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t0 = Instant::now();
        let created = self
            .docker
            .create_container(Some(CreateContainerOptions { name: Some(name), ..Default::default() }), body)
            .await
            .ctx("direct: cannot create the container")?;
        let id = created.id;
        let started = async {
            self.docker.start_container(&id, None).await.ctx("direct: cannot start the container")?;
            wait_ready(port).await
        }
        .await;
        let wall = t0.elapsed();
        let st = match started {
            Ok(()) => stats(port).await,
            Err(e) => Err(e),
        };
        let t1 = Instant::now();
        let stopped = self.docker.stop_container(&id, Some(StopContainerOptions { t: Some(5), signal: None })).await;
        let removed = self
            .docker
            .remove_container(&id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }))
            .await;
        let stop = ms(t1.elapsed());
        let st = st?;
        stopped.ctx("direct: cannot stop the container")?;
        removed.ctx("direct: cannot remove the container")?;
        let own = st.ready_at_unix_nanos.map_or(0.0, |r| ms_between(st.started_at_unix_nanos, r));
        Ok((ms(wall) - own, stop))
    }
}

/// Poll `GET /health` on `127.0.0.1:port` every millisecond (a new connection each
/// time; refused while the container starts) until it answers ready, up to 30 s.
async fn wait_ready(port: u16) -> BenchResult<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut raw = Vec::new();
            let asked = s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await;
            if asked.is_ok() && s.read_to_end(&mut raw).await.is_ok() {
                let text = String::from_utf8_lossy(&raw);
                let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                let ready = serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
                    v["loading_complete"] == serde_json::Value::Bool(true) && v["skills_loaded"].as_u64() > Some(0)
                });
                if ready {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    fail(format!("direct: port {port} never answered ready"))
}

/// Item 9.
pub async fn docker(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    if run("docker", &["version", "--format", "{{.Server.APIVersion}}"]).is_err() {
        return Ok(vec![Row::skipped(9, "Docker runner", "no reachable Docker engine")]);
    }
    let exe = h.exe.clone();
    tokio::task::spawn_blocking(move || build_image(&exe)).await.ctx("the image task failed")??;
    let runner = Arc::new(DockerRunner::new(IMAGE).with_container_port(8000).with_pull(PullPolicy::Never));
    let direct = Direct::connect().await?;
    // One untimed round each first: the image's first start pays for loading its layers.
    let _ = direct.once(reps).await?;
    let _ = via_tether(&runner, reps).await?;
    let (mut overhead, mut stop, mut d_overhead, mut d_stop) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut diff_launch, mut diff_stop) = (Vec::new(), Vec::new());
    for i in 0..reps {
        // Paired, in alternating order so neither always runs on a warmer engine.
        let (t, d) = if i % 2 == 0 {
            let t = via_tether(&runner, i).await?;
            (t, direct.once(i).await?)
        } else {
            let d = direct.once(i).await?;
            (via_tether(&runner, i).await?, d)
        };
        overhead.push(t.0);
        stop.push(t.1);
        d_overhead.push(d.0);
        d_stop.push(d.1);
        diff_launch.push(t.0 - d.0);
        diff_stop.push(t.1 - d.1);
    }
    Ok(vec![
        Row::new(9, "Docker: `launch` overhead over the backend's own start-to-ready", "ms", &overhead, Target::None)
            .note("create + start the container, first probes"),
        Row::new(
            9,
            "  reference: bollard directly, create + start + first ready answer, same overhead",
            "ms",
            &d_overhead,
            Target::None,
        )
        .note("same image and container settings, /health polled every 1 ms; no tether"),
        Row::new(
            9,
            "Docker: `launch` overhead − reference (paired per repetition)",
            "ms",
            &diff_launch,
            Target::AtMost(20.0),
        ),
        Row::new(9, "Docker: stop (container stop + remove)", "ms", &stop, Target::None),
        Row::new(9, "  reference: bollard directly, stop (SIGTERM, grace 5 s) + remove", "ms", &d_stop, Target::None),
        Row::new(9, "Docker: stop − reference (paired per repetition)", "ms", &diff_stop, Target::AtMost(20.0)),
    ])
}

/// One launch + stop through tether's docker runner: (launch overhead over the
/// backend's own start-to-ready in ms, stop + remove in ms).
async fn via_tether(runner: &Arc<DockerRunner>, i: usize) -> BenchResult<(f64, f64)> {
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
    let stop = ms(t1.elapsed());
    let st = st?;
    let own = st.ready_at_unix_nanos.map_or(0.0, |r| ms_between(st.started_at_unix_nanos, r));
    Ok((ms(wall) - own, stop))
}
