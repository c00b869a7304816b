//! `cargo xtask soak`: runs `mountscope agent` with the executor at full rate and two clients
//! attached for a set time, and prints the agent's memory at each sample.
//!
//! The clients are `record --connect` processes: one takes every event and writes it to
//! /dev/null, the other writes the snapshots to a file. At the end the clients and the agent
//! get SIGTERM, and every exit status and the mount table are checked.

use std::{
    fs,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{build, privilege};

#[derive(clap::Args)]
pub struct Args {
    /// Duration of the agent run, in minutes.
    #[arg(long, default_value_t = 30)]
    pub minutes: u64,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 60)]
    pub sample_every: u64,
    /// Executor builders.
    #[arg(long, default_value_t = 8)]
    pub builders: u32,
    /// Image layers per build.
    #[arg(long, default_value_t = 20)]
    pub layers: u32,
}

/// One memory sample of the agent.
struct Sample {
    elapsed: Duration,
    rss_kib: u64,
    open_fds: usize,
}

/// A child process that gets SIGTERM and, if it still runs after 30 s, SIGKILL when dropped.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command) -> Result<Process> {
        let child = command
            .spawn()
            .with_context(|| format!("failed to start the {name}"))?;
        Ok(Process { name, child })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to 30 s for the exit, then fails if the status is not 0.
    fn stop(&mut self) -> Result<()> {
        if self.is_running() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the {} exited with {status}", self.name);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out: the {} did not exit within 30 s of SIGTERM",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.stop();
        }
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    if !privilege::is_root() {
        bail!("the soak runs the agent, which loads eBPF programs: run it as root");
    }
    if args.minutes == 0 {
        bail!("invalid --minutes 0: give at least 1");
    }
    if args.sample_every == 0 {
        bail!("invalid --sample-every 0: give at least 1");
    }
    let binary = build::build(true)?;
    let dir = std::env::temp_dir().join(format!("mountscope-soak-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mounts_before = mount_count()?;

    let result = soak(args, &binary, &dir);
    let mounts_after = mount_count()?;
    if result.is_ok() {
        let _ = fs::remove_dir_all(&dir);
    } else {
        eprintln!("soak: logs kept in {}", dir.display());
    }
    let samples = result?;
    print_samples(&samples);
    if mounts_after != mounts_before {
        bail!("the mount table had {mounts_before} lines before the soak and {mounts_after} after");
    }
    Ok(())
}

fn soak(args: &Args, binary: &Path, dir: &Path) -> Result<Vec<Sample>> {
    let socket = dir.join("agent.sock");
    let mut agent = Process::spawn(
        "agent",
        Command::new(binary)
            .arg("agent")
            .arg("--exec")
            .args(["--builders", &args.builders.to_string()])
            .args(["--layers", &args.layers.to_string()])
            .arg("--store")
            .arg(dir.join("store"))
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("agent.log"))?),
    )?;
    wait_for_socket(&mut agent, &socket)?;

    let mut clients = [
        Process::spawn(
            "event client",
            Command::new(binary)
                .args(["record", "--connect"])
                .arg(&socket)
                .args(["-o", "/dev/null"])
                .stdin(Stdio::null())
                .stderr(fs::File::create(dir.join("events-client.log"))?),
        )?,
        Process::spawn(
            "snapshot client",
            Command::new(binary)
                .args(["record", "--snapshots-only", "--connect"])
                .arg(&socket)
                .arg("-o")
                .arg(dir.join("snapshots.jsonl"))
                .stdin(Stdio::null())
                .stderr(fs::File::create(dir.join("snapshot-client.log"))?),
        )?,
    ];

    let started = Instant::now();
    let total = Duration::from_secs(args.minutes * 60);
    let every = Duration::from_secs(args.sample_every);
    let mut samples = vec![sample(&agent, started)?];
    eprintln!(
        "soak: {} minutes, a sample every {} s",
        args.minutes, args.sample_every
    );
    while started.elapsed() < total {
        thread::sleep(every.min(total.saturating_sub(started.elapsed())));
        if !agent.is_running() {
            bail!(
                "the agent exited during the soak; see {}",
                dir.join("agent.log").display()
            );
        }
        for client in &mut clients {
            if !client.is_running() {
                bail!("the {} exited during the soak", client.name);
            }
        }
        let s = sample(&agent, started)?;
        eprintln!(
            "soak: {:>5} s  RSS {} KiB  {} open files",
            s.elapsed.as_secs(),
            s.rss_kib,
            s.open_fds
        );
        samples.push(s);
    }

    for client in &mut clients {
        client.stop()?;
    }
    agent.stop()?;
    Ok(samples)
}

fn wait_for_socket(agent: &mut Process, socket: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(socket).is_err() {
        if !agent.is_running() {
            bail!(
                "the agent exited before it listened on {}",
                socket.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after 30 s waiting for the agent to listen on {}",
                socket.display()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn sample(agent: &Process, started: Instant) -> Result<Sample> {
    let status_path = PathBuf::from(format!("/proc/{}/status", agent.pid()));
    let status = fs::read_to_string(&status_path)
        .with_context(|| format!("failed to read {}", status_path.display()))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS line in {}", status_path.display()))?;
    let open_fds = fs::read_dir(format!("/proc/{}/fd", agent.pid()))?.count();
    Ok(Sample {
        elapsed: started.elapsed(),
        rss_kib,
        open_fds,
    })
}

fn mount_count() -> Result<usize> {
    Ok(fs::read_to_string("/proc/self/mountinfo")
        .context("failed to read /proc/self/mountinfo")?
        .lines()
        .count())
}

fn print_samples(samples: &[Sample]) {
    println!("seconds  RSS KiB  open files");
    for s in samples {
        println!(
            "{:>7}  {:>7}  {:>10}",
            s.elapsed.as_secs(),
            s.rss_kib,
            s.open_fds
        );
    }
    if let (Some(first), Some(last)) = (samples.get(1), samples.last()) {
        let growth = last.rss_kib as f64 / first.rss_kib as f64 - 1.0;
        println!(
            "RSS after the first sample interval {} KiB, at the end {} KiB ({:+.1}%)",
            first.rss_kib,
            last.rss_kib,
            growth * 100.0
        );
    }
}
