//! End-to-end tests of `mountscope watch`: the real binary runs in a detached tmux session of a
//! fixed size, and the tests press keys and read the screen with `tmux capture-pane`.
//!
//! They need root, tmux and a built `mountscope` binary, and skip with a message naming what is
//! missing. The binary is taken from `MOUNTSCOPE_BIN` when set, else from the target directory
//! that contains this test, else from `<workspace>/target/{debug,release}`. `cargo test` does not
//! build it, so run `cargo build -p mountscope-agent` first or set `MOUNTSCOPE_BIN`.
//!
//! Each test runs its own tmux server, store, log file and working directory in a directory
//! under /tmp, all removed by a drop guard even when an assert fails.

use std::{
    collections::BTreeSet,
    env,
    ffi::OsString,
    fs,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant, SystemTime},
};

/// Terminal size of the tmux pane, in columns and rows.
const COLUMNS: u16 = 120;
const ROWS: u16 = 40;
/// Image layers per container. Strategy A makes about 2 * LAYERS + 2 mount syscalls per build
/// (a bind mount and an unmount per layer, plus the overlay mount and unmount), strategy B 4.
const LAYERS: u32 = 10;
const BUILDERS: u32 = 4;
/// Largest distance from the expected mount syscalls per build that a frame may show. The
/// figure divides the syscalls of one interval by the builds finished in it, so builds that
/// straddle an interval boundary move it by a fraction of a syscall.
const STRATEGY_A_TOLERANCE: f64 = 2.0;
const STRATEGY_B_TOLERANCE: f64 = 0.5;

/// Loading the probes and calibrating take about 1 s on an idle machine; calibration alone
/// may take 3 s before it gives up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_PERIOD: Duration = Duration::from_millis(100);

/// Printed by the pane's shell once `mountscope` has exited, followed by the status.
const EXIT_MARKER: &str = "mountscope exited with status ";

/// Serializes the tests: two executors at once would share the CPUs and each other's
/// `namespace_sem` contention, and calibration would see both.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `mountscope watch` in a tmux pane, captures it, and removes the session and the
/// temporary directory when dropped.
struct WatchSession {
    /// Name of the tmux session and of the temporary directory.
    name: String,
    dir: PathBuf,
    binary: PathBuf,
}

impl WatchSession {
    /// Starts `mountscope watch` with its own store, log file and working directory.
    ///
    /// The pane's shell starts the binary through an inner `sh` that writes its pid to
    /// `mountscope.pid` and then execs the binary with `--pid` set to that same pid. The
    /// probes then count only this process's mount syscalls, so other mounts on the host do
    /// not change the per-build figure. When the binary exits, the shell prints [`EXIT_MARKER`]
    /// with the exit status and the terminal settings (`stty -a`), then sleeps until the
    /// session is killed so the pane can still be captured.
    fn start(test: &str, binary: PathBuf) -> WatchSession {
        let session = WatchSession::prepare(test, binary);
        let mut args: Vec<OsString> = ["watch", "--strategy", "a", "--layers"]
            .map(OsString::from)
            .into();
        args.push(LAYERS.to_string().into());
        args.push("--builders".into());
        args.push(BUILDERS.to_string().into());
        args.push("--store".into());
        args.push(session.dir.join("store").into());
        args.push("--log-file".into());
        args.push(session.dir.join("watch.log").into());
        session.launch(&args, true);
        session
    }

    /// Creates the session's temporary directory.
    fn prepare(test: &str, binary: PathBuf) -> WatchSession {
        let name = format!("mountscope-e2e-{}-{test}", std::process::id());
        let dir = env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("failed to create {}: {e}", dir.display()));
        WatchSession { name, dir, binary }
    }

    /// Runs the binary with `args` in a new tmux session, adding `--pid` with its own pid
    /// when `pin_pid` is set.
    fn launch(&self, args: &[OsString], pin_pid: bool) {
        let pid_filter = if pin_pid { " --pid \"$$\"" } else { "" };
        let script = format!(
            "sh -c 'echo \"$$\" > mountscope.pid; exec \"$0\" \"$@\"{pid_filter}' \"$@\"; \
             echo \"{EXIT_MARKER}$?\"; stty -a; exec sleep 600"
        );
        let mut command = self.tmux();
        command
            .args(["-f", "/dev/null", "new-session", "-d", "-s", &self.name])
            .args(["-x", &COLUMNS.to_string(), "-y", &ROWS.to_string()])
            .arg("-c")
            .arg(&self.dir)
            .args(["sh", "-c", &script, "watch-e2e"])
            .arg(&self.binary)
            .args(args);
        run_tmux(&mut command);
    }

    /// Returns a tmux command on this session's private server, whose socket lies in the
    /// temporary directory so that removing the directory removes the socket too.
    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env_remove("TMUX")
            .arg("-S")
            .arg(self.dir.join("tmux.sock"));
        command
    }

    /// Returns the visible screen as plain text. With `join`, lines the terminal wrapped are
    /// joined back.
    fn capture(&self, join: bool) -> String {
        let mut command = self.tmux();
        command.args(["capture-pane", "-p", "-t", &self.name]);
        if join {
            command.arg("-J");
        }
        String::from_utf8_lossy(&run_tmux(&mut command).stdout).into_owned()
    }

    /// Returns a tmux format variable of the pane, such as `alternate_on`.
    fn pane_variable(&self, variable: &str) -> String {
        let mut command = self.tmux();
        command.args([
            "display-message",
            "-p",
            "-t",
            &self.name,
            &format!("#{{{variable}}}"),
        ]);
        let output = run_tmux(&mut command);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn press(&self, key: &str) {
        run_tmux(self.tmux().args(["send-keys", "-t", &self.name, key]));
    }

    /// Captures the screen until `ready` accepts it, and returns that screen. Panics with
    /// `waiting_for` and the last screen after `timeout`.
    fn wait_for(
        &self,
        timeout: Duration,
        waiting_for: &str,
        mut ready: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture(false);
            if ready(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {waiting_for}\n{}",
                    framed(&screen)
                );
            }
            thread::sleep(POLL_PERIOD);
        }
    }

    /// Waits for the first frame whose executor panel `accept` takes, and returns both.
    fn wait_for_executor(
        &self,
        waiting_for: &str,
        mut accept: impl FnMut(&ExecutorPanel) -> bool,
    ) -> (ExecutorPanel, String) {
        let screen = self.wait_for(SCREEN_TIMEOUT, waiting_for, |screen| {
            ExecutorPanel::parse(screen).is_some_and(|panel| accept(&panel))
        });
        let panel = ExecutorPanel::parse(&screen).expect("the accepted frame has a panel");
        (panel, screen)
    }

    /// Waits until the executor builds at strategy A, then returns a frame of a later
    /// snapshot, so the figures cover a whole interval spent at strategy A.
    fn wait_for_steady_strategy_a(&self) -> (ExecutorPanel, String) {
        let first = self.wait_for(START_TIMEOUT, "strategy A with builds finishing", |s| {
            ExecutorPanel::parse(s).is_some_and(|p| p.strategy == 'A' && p.builds_per_s > 0.0)
        });
        let first = ExecutorPanel::parse(&first).expect("the accepted frame has a panel");
        self.wait_for_executor("a second snapshot at strategy A", |panel| {
            panel.strategy == 'A' && panel.builds_per_s > 0.0 && panel.uptime != first.uptime
        })
    }

    /// Presses `q` and waits until the pane's shell reports that the binary exited.
    fn quit(&self) -> String {
        self.press("q");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            let screen = self.capture(true);
            // `stty -a` runs after the marker and always prints the line speed, so waiting
            // for "speed" keeps a capture taken between the two from being read as raw mode.
            if screen.contains(EXIT_MARKER) && screen.contains("speed") {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "mountscope did not exit within {EXIT_TIMEOUT:?} of pressing q\n{}",
                    framed(&screen)
                );
            }
            thread::sleep(POLL_PERIOD);
        }
    }

    /// Returns the pid the inner shell wrote before it exec'd the binary.
    fn pid(&self) -> u32 {
        let path = self.dir.join("mountscope.pid");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("invalid pid `{}` in {}: {e}", text.trim(), path.display()))
    }

    /// Returns whether `pid` still runs this session's binary.
    fn is_running(&self, pid: u32) -> bool {
        fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.canonicalize().ok() == self.binary.canonicalize().ok())
    }
}

impl Drop for WatchSession {
    fn drop(&mut self) {
        let pid = fs::read_to_string(self.dir.join("mountscope.pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());

        // Killing the session hangs up the pane, which ends the binary if it still runs.
        let _ = self
            .tmux()
            .args(["kill-session", "-t", &self.name])
            .output();

        // The store must not be removed while the binary may still build overlays in it.
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while pid.is_some_and(|pid| self.is_running(pid)) && Instant::now() < deadline {
            thread::sleep(POLL_PERIOD);
        }
        if mountinfo_lines()
            .iter()
            .any(|line| line.contains(self.dir.to_str().unwrap_or("\0")))
        {
            eprintln!(
                "left {} in place because mounts under it remain; see /proc/self/mountinfo",
                self.dir.display()
            );
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Figures of the executor panel in one frame.
#[derive(Debug)]
struct ExecutorPanel {
    /// `A` or `B`.
    strategy: char,
    paused: bool,
    builds_per_s: f64,
    syscalls_per_build: f64,
    builds_total: u64,
    /// The header's uptime, which changes with every snapshot.
    uptime: String,
}

impl ExecutorPanel {
    /// Parses the panel, or returns `None` when the frame has none or it is incomplete.
    fn parse(screen: &str) -> Option<ExecutorPanel> {
        let strategy = if screen.contains("strategy A per-layer binds") {
            'A'
        } else if screen.contains("strategy B common parent") {
            'B'
        } else {
            return None;
        };

        let builds_per_s = screen.lines().find_map(|line| {
            let rate = line.strip_prefix("builds ")?.split("/s").next()?;
            parse_rate(rate)
        })?;
        let syscalls_per_build = word_after(screen, "mount syscalls/build ")?.parse().ok()?;
        let builds_total = screen.lines().find_map(|line| {
            let (total, rest) = line.split_once(" builds, ")?;
            rest.contains("failed").then(|| total.trim().parse().ok())?
        })?;

        Some(ExecutorPanel {
            strategy,
            paused: screen.contains("executor (paused)"),
            builds_per_s,
            syscalls_per_build,
            builds_total,
            uptime: uptime(screen)?,
        })
    }
}

/// Parses a rate as the TUI formats it: `43.1`, `171` or `12.3k`.
fn parse_rate(text: &str) -> Option<f64> {
    match text.strip_suffix('k') {
        Some(thousands) => thousands.parse::<f64>().ok().map(|k| k * 1000.0),
        None => text.parse().ok(),
    }
}

/// Returns the whitespace-separated word that follows the first `label` on the screen.
fn word_after<'a>(screen: &'a str, label: &str) -> Option<&'a str> {
    let (_, rest) = screen.split_once(label)?;
    rest.split_whitespace().next()
}

fn uptime(screen: &str) -> Option<String> {
    word_after(screen, "  up ").map(str::to_string)
}

/// Puts a captured screen between rules for a failure message.
fn framed(screen: &str) -> String {
    let rule = "-".repeat(usize::from(COLUMNS));
    format!("screen:\n{rule}\n{}\n{rule}", screen.trim_end())
}

fn run_tmux(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}

fn mountinfo_lines() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("failed to read /proc/self/mountinfo")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Returns the `mountscope` binary to test, or `None` after printing why the tests skip.
fn prerequisites() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the watch tests need root to load the eBPF programs and mount");
        return None;
    }
    if !Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: the watch tests need tmux, which is not installed or not in PATH");
        return None;
    }

    let candidates = binary_candidates();
    let Some(binary) = candidates.iter().find(|path| path.is_file()) else {
        eprintln!(
            "skipped: no mountscope binary at {}; run `cargo build -p mountscope-agent` or set \
             MOUNTSCOPE_BIN",
            candidates
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return None;
    };

    // `cargo test` does not rebuild the binary, so print which one runs and how old it is.
    let age = fs::metadata(binary)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok());
    eprintln!(
        "testing {} (built {} s ago)",
        binary.display(),
        age.map_or_else(|| "?".to_string(), |age| age.as_secs().to_string())
    );
    Some(binary.clone())
}

/// Paths where the binary may be, in order of preference.
fn binary_candidates() -> Vec<PathBuf> {
    if let Some(path) = env::var_os("MOUNTSCOPE_BIN") {
        return vec![PathBuf::from(path)];
    }

    let mut candidates = Vec::new();
    // This test runs as <target>/<profile>/deps/watch_e2e-<hash>, and the binary of the same
    // build is <target>/<profile>/mountscope, whatever CARGO_TARGET_DIR was.
    if let Some(profile_dir) = env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
    {
        candidates.push(profile_dir.join("mountscope"));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace");
    for profile in ["debug", "release"] {
        candidates.push(workspace.join("target").join(profile).join("mountscope"));
    }
    candidates
}

fn lock_one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn strategy_switch_and_quit() {
    let _serial = lock_one_at_a_time();
    let Some(binary) = prerequisites() else {
        return;
    };
    let mounts_before = mountinfo_lines();
    let session = WatchSession::start("switch", binary);

    let (a, screen) = session.wait_for_steady_strategy_a();
    let expected_a = f64::from(2 * LAYERS + 2);
    assert!(
        (a.syscalls_per_build - expected_a).abs() <= STRATEGY_A_TOLERANCE,
        "strategy A shows {} mount syscalls/build, expected {expected_a} ± \
         {STRATEGY_A_TOLERANCE} for {LAYERS} layers\n{}",
        a.syscalls_per_build,
        framed(&screen)
    );
    assert!(
        a.builds_total > 0,
        "no finished builds at strategy A\n{}",
        framed(&screen)
    );

    session.press("s");
    let (b, screen) = session.wait_for_executor(
        "strategy B at 4 mount syscalls/build after pressing s",
        |panel| {
            panel.strategy == 'B'
                && panel.builds_per_s > 0.0
                && (panel.syscalls_per_build - 4.0).abs() <= STRATEGY_B_TOLERANCE
        },
    );
    assert!(
        b.builds_total > a.builds_total,
        "the build total did not grow from {} after switching to B\n{}",
        a.builds_total,
        framed(&screen)
    );

    let pid = session.pid();
    let screen = session.quit();
    assert!(
        screen.contains(&format!("{EXIT_MARKER}0")),
        "mountscope exited with a nonzero status\n{}",
        framed(&screen)
    );
    assert!(
        !session.is_running(pid),
        "process {pid} still runs mountscope\n{}",
        framed(&screen)
    );
    assert_eq!(
        session.pane_variable("alternate_on"),
        "0",
        "the pane is still on the alternate screen\n{}",
        framed(&screen)
    );
    assert!(
        !screen.contains("mount syscalls/build"),
        "the TUI frame is still on the screen\n{}",
        framed(&screen)
    );
    let stty: Vec<&str> = screen.split_whitespace().collect();
    assert!(
        stty.contains(&"icanon"),
        "raw mode left on: no `icanon` in stty -a\n{}",
        framed(&screen)
    );
    assert!(
        stty.contains(&"echo"),
        "raw mode left on: no `echo` in stty -a\n{}",
        framed(&screen)
    );

    let mounts_after = mountinfo_lines();
    let added: Vec<&String> = mounts_after.difference(&mounts_before).collect();
    let removed: Vec<&String> = mounts_before.difference(&mounts_after).collect();
    assert_eq!(
        mounts_after.len(),
        mounts_before.len(),
        "the mount table changed: added {added:#?}, removed {removed:#?}"
    );
}

#[test]
fn export_and_pause_keys() {
    let _serial = lock_one_at_a_time();
    let Some(binary) = prerequisites() else {
        return;
    };
    let session = WatchSession::start("keys", binary);
    session.wait_for_steady_strategy_a();

    session.press("e");
    let screen = session.wait_for(
        SCREEN_TIMEOUT,
        "the export status line after pressing e",
        |s| s.contains("snapshot written to "),
    );
    let file_name = word_after(&screen, "snapshot written to ").expect("matched above");
    let path = session.dir.join(file_name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "failed to read the exported {}: {e}\n{}",
            path.display(),
            framed(&screen)
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    assert!(
        json["executor"]["settings"].is_object(),
        "{} has no executor settings:\n{text}",
        path.display()
    );
    assert_eq!(
        json["executor"]["settings"]["layers"],
        serde_json::json!(LAYERS),
        "{} has the wrong layer count",
        path.display()
    );

    session.press("p");
    let (paused, screen) = session.wait_for_executor("a paused frame at 0 builds/s", |panel| {
        panel.paused && panel.builds_per_s == 0.0
    });
    let (later, later_screen) = session.wait_for_executor("a later snapshot while paused", |p| {
        p.uptime != paused.uptime
    });
    assert_eq!(
        later.builds_per_s,
        0.0,
        "builds continued while paused\nfirst paused {}\nlater {}",
        framed(&screen),
        framed(&later_screen)
    );
    assert_eq!(
        later.builds_total,
        paused.builds_total,
        "the build total grew while paused\nfirst paused {}\nlater {}",
        framed(&screen),
        framed(&later_screen)
    );

    session.quit();
}

/// A `mountscope agent` with the executor, started in a test's directory. Dropping it stops
/// it with SIGTERM.
struct ExecutorAgent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl ExecutorAgent {
    /// Starts the agent with `--pid` set to its own pid, so that only the executor's mounts
    /// are counted, and waits until its socket accepts connections.
    fn start(binary: &Path, dir: &Path) -> ExecutorAgent {
        let socket = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let log_file = fs::File::create(&log)
            .unwrap_or_else(|e| panic!("failed to create {}: {e}", log.display()));
        let child = Command::new("sh")
            .args(["-c", "exec \"$0\" \"$@\" --pid \"$$\""])
            .arg(binary)
            .args(["agent", "--exec", "--strategy", "a", "--layers"])
            .arg(LAYERS.to_string())
            .arg("--builders")
            .arg(BUILDERS.to_string())
            .arg("--store")
            .arg(dir.join("store"))
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("failed to start the agent");
        let mut agent = ExecutorAgent { child, socket, log };

        let deadline = Instant::now() + START_TIMEOUT;
        while UnixStream::connect(&agent.socket).is_err() {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("the agent exited with {status}:\n{}", agent.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not listen within {START_TIMEOUT:?}:\n{}",
                agent.log_text()
            );
            thread::sleep(POLL_PERIOD);
        }
        agent
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and returns the exit status, or `None` when the agent still runs
    /// after `EXIT_TIMEOUT`.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill only sends a signal to the agent this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(POLL_PERIOD);
        }
        None
    }
}

impl Drop for ExecutorAgent {
    fn drop(&mut self) {
        if self.is_running() && self.terminate().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn connected_watch_controls_agent() {
    let _serial = lock_one_at_a_time();
    let Some(binary) = prerequisites() else {
        return;
    };
    let mounts_before = mountinfo_lines();
    // The session's directory contains the agent's store and socket, so the agent, declared
    // after it, is dropped first.
    let session = WatchSession::prepare("connect", binary.clone());
    let mut agent = ExecutorAgent::start(&binary, &session.dir);
    session.launch(
        &[
            "watch".into(),
            "--connect".into(),
            agent.socket.clone().into(),
        ],
        false,
    );

    let (a, screen) = session.wait_for_steady_strategy_a();
    let expected_a = f64::from(2 * LAYERS + 2);
    assert!(
        (a.syscalls_per_build - expected_a).abs() <= STRATEGY_A_TOLERANCE,
        "strategy A shows {} mount syscalls/build, expected {expected_a}\n{}",
        a.syscalls_per_build,
        framed(&screen)
    );

    session.press("s");
    session.wait_for_executor("the agent's executor at strategy B after pressing s", |p| {
        p.strategy == 'B' && (p.syscalls_per_build - 4.0).abs() <= STRATEGY_B_TOLERANCE
    });

    let screen = session.quit();
    assert!(
        screen.contains(&format!("{EXIT_MARKER}0")),
        "watch --connect exited with a nonzero status\n{}",
        framed(&screen)
    );
    assert!(
        agent.is_running(),
        "the agent stopped when its client quit:\n{}",
        agent.log_text()
    );

    // A second client reads the same agent: the strategy the first one chose stays in force.
    let record = session.dir.join("record.jsonl");
    let status = Command::new(&binary)
        .args(["record", "--snapshots-only", "--duration", "2", "--connect"])
        .arg(&agent.socket)
        .arg("-o")
        .arg(&record)
        .status()
        .expect("failed to run record --connect");
    assert!(status.success(), "record --connect exited with {status}");
    let text = fs::read_to_string(&record).unwrap_or_default();
    let snapshots: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert!(!snapshots.is_empty(), "record --connect wrote no snapshot");
    let last = &snapshots[snapshots.len() - 1];
    assert_eq!(
        last["executor"]["settings"]["strategy"],
        serde_json::json!("common_parent"),
        "{last}"
    );

    let status = agent.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent did not exit 0 on SIGTERM ({status:?}):\n{}",
        agent.log_text()
    );
    drop(agent);
    let mounts_after = mountinfo_lines();
    assert_eq!(
        mounts_after.len(),
        mounts_before.len(),
        "the mount table changed: added {:#?}",
        mounts_after.difference(&mounts_before).collect::<Vec<_>>()
    );
}
