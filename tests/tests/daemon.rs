//! Privileged tests of `mountscope agent` as a process: the real binary, a socket in a temp
//! directory, metrics on a loopback port, and bind mounts made in a private mount namespace
//! that the agent is filtered to. They need root and a built `mountscope` binary; without
//! either they print why and pass without checking anything.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use prometheus_parse::{Scrape, Value};

/// Time the agent may take to load its programs and find namespace_sem by calibration.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Snapshot interval given to the agent, in seconds.
const INTERVAL_S: &str = "0.5";

/// Finds the `mountscope` binary: `MOUNTSCOPE_BIN`, else the debug or release build under
/// `CARGO_TARGET_DIR` or the workspace's `target/`.
fn agent_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MOUNTSCOPE_BIN") {
        return Some(PathBuf::from(path));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join("mountscope"))
        .find(|path| path.is_file())
}

fn preconditions() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to load eBPF programs and mount");
        return None;
    }
    let binary = agent_binary();
    if binary.is_none() {
        eprintln!(
            "skipped: no mountscope binary; build it with `cargo build -p mountscope-agent` \
             or set MOUNTSCOPE_BIN"
        );
    }
    binary
}

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("mountscope-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Requests to the thread that lives in the private mount namespace.
enum NsRequest {
    /// Make this many bind mounts and unmount them again, then reply with the count made.
    BindMounts(usize),
    /// Try this many bind mounts onto a missing directory, each failing with ENOENT, then
    /// reply with the count tried.
    FailedMounts(usize),
    /// Reply with the lines of this namespace's mountinfo that mention the scratch path.
    ScratchMounts,
    Quit,
}

/// A thread in its own private mount namespace, mounting on request.
struct Namespace {
    mntns_id: u64,
    requests: mpsc::Sender<NsRequest>,
    replies: mpsc::Receiver<Vec<String>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Namespace {
    fn start(scratch: PathBuf) -> Namespace {
        let (request_tx, request_rx) = mpsc::channel();
        let (reply_tx, reply_rx) = mpsc::channel();
        let (id_tx, id_rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / private");
            let id = fs::metadata("/proc/thread-self/ns/mnt")
                .expect("stat /proc/thread-self/ns/mnt")
                .ino();
            id_tx.send(id).unwrap();
            for request in request_rx {
                match request {
                    NsRequest::BindMounts(count) => {
                        bind_mounts(&scratch, count);
                        reply_tx.send(vec![count.to_string()]).unwrap();
                    }
                    NsRequest::FailedMounts(count) => {
                        let missing = scratch.join("missing");
                        for _ in 0..count {
                            let result = mount(
                                Some(&scratch.join("src")),
                                &missing,
                                None::<&str>,
                                MsFlags::MS_BIND,
                                None::<&str>,
                            );
                            assert_eq!(result, Err(nix::errno::Errno::ENOENT));
                        }
                        reply_tx.send(vec![count.to_string()]).unwrap();
                    }
                    NsRequest::ScratchMounts => {
                        let text = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
                        let scratch = scratch.to_string_lossy().into_owned();
                        let lines = text
                            .lines()
                            .filter(|l| l.contains(&scratch))
                            .map(str::to_string)
                            .collect();
                        reply_tx.send(lines).unwrap();
                    }
                    NsRequest::Quit => return,
                }
            }
        });
        let mntns_id = id_rx.recv().expect("the namespace thread failed to start");
        Namespace {
            mntns_id,
            requests: request_tx,
            replies: reply_rx,
            thread: Some(thread),
        }
    }

    fn call(&self, request: NsRequest) -> Vec<String> {
        self.requests.send(request).unwrap();
        self.replies
            .recv_timeout(Duration::from_secs(30))
            .expect("the namespace thread did not reply")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.requests.send(NsRequest::Quit);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `count` bind mounts of `scratch/src` on `scratch/dst`, each unmounted right away.
fn bind_mounts(scratch: &Path, count: usize) {
    let src = scratch.join("src");
    let dst = scratch.join("dst");
    for _ in 0..count {
        mount(
            Some(&src),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount");
        umount2(&dst, MntFlags::empty()).expect("umount");
    }
}

/// The running agent process, killed on drop if a check failed before it was stopped.
struct Agent {
    child: Child,
    socket: PathBuf,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Agent {
    fn start(binary: &Path, dir: &Path, mntns_id: u64) -> Agent {
        let socket = dir.join("run/agent.sock");
        let metrics = free_loopback_port();
        let log = dir.join("agent.log");
        let child = Command::new(binary)
            .args(["agent", "--interval", INTERVAL_S, "--log", "debug"])
            .arg("--socket")
            .arg(&socket)
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--mntns")
            .arg(mntns_id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("failed to start the agent");
        let mut agent = Agent {
            child,
            socket,
            metrics,
            log,
        };
        agent.wait_until_serving();
        agent
    }

    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the agent exited with {status} before serving:\n{}",
                    self.log_text()
                );
            }
            // The agent takes its socket and port before it loads the programs, so it serves
            // only once its log reports the programs as loaded.
            if UnixStream::connect(&self.socket).is_ok()
                && TcpStream::connect(self.metrics).is_ok()
                && self.log_text().contains("kernel programs loaded")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not serve within {START_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent ignored SIGTERM for 30 s"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Returns a loopback address with a port that was free a moment ago.
fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A line-oriented client of the agent socket.
struct SocketClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl SocketClient {
    fn connect(path: &Path) -> SocketClient {
        let stream = UnixStream::connect(path).expect("connect to the agent socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        SocketClient {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, line: &[u8]) {
        self.writer.write_all(line).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    fn next(&mut self) -> serde_json::Value {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("read from the agent");
        assert!(n > 0, "the agent closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("invalid line {line:?}: {e}"))
    }

    /// Skips snapshot lines until one of type `kind`.
    fn next_of_type(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let value = self.next();
            if value["type"] == kind {
                return value;
            }
            assert_eq!(value["type"], "snapshot", "unexpected line {value}");
        }
    }

    /// Reads lines up to the next snapshot and returns how many were mount syscall events.
    fn mount_events_until_snapshot(&mut self) -> usize {
        let mut mount_events = 0;
        loop {
            let line = self.next();
            if line["type"] == "snapshot" {
                return mount_events;
            }
            if line["type"] == "event" && line["kind"] == "syscall" && line["syscall"] == "mount" {
                mount_events += 1;
            }
        }
    }

    fn subscribe_snapshots(&mut self) {
        self.send(br#"{"subscribe": {"snapshots": true, "events": false}}"#);
        self.next_of_type("ok");
    }
}

/// Parses `GET /metrics` with a Prometheus text-format parser.
fn scrape(addr: SocketAddr) -> (String, Scrape) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("no HTTP head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = Scrape::parse(lines).expect("the metrics do not parse");
    (body.to_string(), parsed)
}

/// Returns the counter with all of `labels`, or `None` when the series does not exist yet.
fn counter_with(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) => v,
            ref other => panic!("{metric} is not a counter: {other:?}"),
        })
}

fn counter(scrape: &Scrape, metric: &str, label: (&str, &str)) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
        .map(|s| match s.value {
            Value::Counter(v) => v,
            ref other => panic!("{metric} is not a counter: {other:?}"),
        })
        .unwrap_or_else(|| panic!("{metric}{{{}=\"{}\"}} missing", label.0, label.1))
}

fn histogram_count(scrape: &Scrape, metric: &str, label: (&str, &str)) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
        .unwrap_or_else(|| panic!("{metric} missing"));
    let Value::Histogram(buckets) = &sample.value else {
        panic!("{metric} is not a histogram: {:?}", sample.value);
    };
    let infinite = buckets.iter().find(|b| b.less_than.is_infinite());
    infinite.expect("no +Inf bucket").count
}

/// Returns the ids of the BPF programs `pid` has open, from its fdinfo `prog_id:` lines.
fn prog_ids(pid: Pid) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in entries.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("prog_id:") {
                ids.insert(id.trim().parse().unwrap());
            }
        }
    }
    ids
}

/// Returns whether a BPF program with this id is still loaded anywhere.
fn prog_exists(id: u32) -> bool {
    /// `union bpf_attr` as `BPF_PROG_GET_FD_BY_ID` reads it.
    #[repr(C)]
    struct GetFdById {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let attr = GetFdById {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: `attr` is a valid, initialised prefix of `union bpf_attr` for this command and
    // outlives the call; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            &attr as *const GetFdById,
            size_of::<GetFdById>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    let errno = std::io::Error::last_os_error();
    assert_eq!(
        errno.raw_os_error(),
        Some(libc::ENOENT),
        "BPF_PROG_GET_FD_BY_ID: {errno}"
    );
    false
}

fn bpffs_entries() -> BTreeSet<String> {
    fs::read_dir("/sys/fs/bpf")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `/metrics` until the mount counter reaches `at_least`, then returns it after two
/// more intervals, so a late extra count would show.
fn settled_mount_count(addr: SocketAddr, at_least: f64) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = scrape(addr);
        let mounts = counter(
            &metrics,
            "mountscope_mount_syscalls_total",
            ("syscall", "mount"),
        );
        if mounts >= at_least {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mount counter stayed at {mounts}, below {at_least}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(1500));
    let (_, metrics) = scrape(addr);
    (
        counter(
            &metrics,
            "mountscope_mount_syscalls_total",
            ("syscall", "mount"),
        ),
        counter(
            &metrics,
            "mountscope_mount_syscalls_total",
            ("syscall", "umount2"),
        ),
        histogram_count(
            &metrics,
            "mountscope_mount_syscall_duration_seconds",
            ("syscall", "mount"),
        ),
    )
}

#[test]
fn agent_serves_socket_and_metrics() {
    let Some(binary) = preconditions() else {
        return;
    };
    let dir = TempDir::new("daemon");
    let scratch = dir.0.join("scratch");
    fs::create_dir_all(scratch.join("src")).unwrap();
    fs::create_dir_all(scratch.join("dst")).unwrap();
    let namespace = Namespace::start(scratch.clone());
    let bpffs_before = bpffs_entries();

    let mut agent = Agent::start(&binary, &dir.0, namespace.mntns_id);
    let socket_mode = fs::metadata(&agent.socket).unwrap().mode() & 0o777;
    assert_eq!(socket_mode, 0o600, "socket mode");
    let dir_mode = fs::metadata(agent.socket.parent().unwrap()).unwrap().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "socket directory mode");
    let loaded = prog_ids(agent.pid());
    assert!(!loaded.is_empty(), "the agent holds no BPF programs");

    // Two subscribers see the same snapshot.
    let mut first = SocketClient::connect(&agent.socket);
    let mut second = SocketClient::connect(&agent.socket);
    first.subscribe_snapshots();
    second.subscribe_snapshots();
    let shared = second.next_of_type("snapshot")["time_unix_ms"]
        .as_u64()
        .unwrap();
    let mut seen_by_first = Vec::new();
    loop {
        let time = first.next_of_type("snapshot")["time_unix_ms"]
            .as_u64()
            .unwrap();
        seen_by_first.push(time);
        if time >= shared {
            break;
        }
    }
    assert!(
        seen_by_first.contains(&shared),
        "first client saw {seen_by_first:?}, second {shared}"
    );

    // Malformed and oversized lines get errors; the connection and the agent keep serving.
    let mut third = SocketClient::connect(&agent.socket);
    third.send(b"this is not json");
    let reply = third.next();
    assert_eq!(reply["type"], "error", "{reply}");
    third.send(&vec![b'x'; 70 * 1024]);
    let reply = third.next();
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("longer than"),
        "{reply}"
    );
    third.send(br#"{"control": {"action": "toggle_strategy"}}"#);
    let reply = third.next();
    assert_eq!(reply["type"], "error", "no executor runs: {reply}");
    third.send(br#"{"reset": false}"#);
    assert_eq!(third.next()["type"], "ok");
    drop(third);
    first.next_of_type("snapshot");

    // Metrics parse, carry HELP for every family, and count exactly the namespace's mounts.
    let (text, metrics) = scrape(agent.metrics);
    for sample in &metrics.samples {
        let family = sample
            .metric
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            metrics.docs.contains_key(family),
            "{} has no HELP line",
            sample.metric
        );
    }
    assert!(text.contains("# TYPE mountscope_mount_syscalls_total counter"));
    assert!(text.contains("# TYPE mountscope_mount_syscall_duration_seconds histogram"));
    let mounts_before = counter(
        &metrics,
        "mountscope_mount_syscalls_total",
        ("syscall", "mount"),
    );
    let umounts_before = counter(
        &metrics,
        "mountscope_mount_syscalls_total",
        ("syscall", "umount2"),
    );
    let histogram_before = histogram_count(
        &metrics,
        "mountscope_mount_syscall_duration_seconds",
        ("syscall", "mount"),
    );

    const BINDS: usize = 7;
    namespace.call(NsRequest::BindMounts(BINDS));
    let (mounts, umounts, histogram) =
        settled_mount_count(agent.metrics, mounts_before + BINDS as f64);
    assert_eq!(mounts - mounts_before, BINDS as f64, "mount counter delta");
    assert_eq!(
        umounts - umounts_before,
        BINDS as f64,
        "umount2 counter delta"
    );
    assert_eq!(
        histogram - histogram_before,
        BINDS as f64,
        "histogram count delta"
    );

    // Failed mounts are counted by errno, and the ENOENT series appears with the first one.
    const FAILED: usize = 3;
    let enoent = [("syscall", "mount"), ("errno", "ENOENT")];
    let enoent_before = counter_with(&metrics, "mountscope_mount_syscall_errors_total", &enoent);
    namespace.call(NsRequest::FailedMounts(FAILED));
    let (_, _, _) = settled_mount_count(agent.metrics, mounts + FAILED as f64);
    let (_, metrics) = scrape(agent.metrics);
    let enoent_after = counter_with(&metrics, "mountscope_mount_syscall_errors_total", &enoent);
    assert_eq!(
        enoent_after.unwrap_or(0.0) - enoent_before.unwrap_or(0.0),
        FAILED as f64,
        "ENOENT counter delta"
    );

    // Per-call records are written only while a client subscribes to events. The agent turns
    // them on before it replies `ok` to the subscribe, so every mount made after the reply
    // arrives as an event, at the latest with the second snapshot after the mounts.
    let mut listener = SocketClient::connect(&agent.socket);
    listener.send(br#"{"subscribe": {"snapshots": true, "events": true}}"#);
    assert_eq!(
        listener.next()["type"],
        "ok",
        "first reply to the subscribe"
    );
    namespace.call(NsRequest::BindMounts(BINDS));
    let streamed = listener.mount_events_until_snapshot() + listener.mount_events_until_snapshot();
    assert_eq!(streamed, BINDS, "mount events streamed to the subscriber");

    // A client subscribed to events only, which no write reaches while nothing mounts, is
    // still found gone soon after it closes its socket. The previous client is found gone at
    // its next snapshot line, and that is waited for first.
    let disconnected = |agent: &Agent| agent.log_text().matches("client disconnected").count();
    let wait_for_more = |agent: &Agent, than: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while disconnected(agent) <= than && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
    };
    let before = disconnected(&agent);
    drop(listener);
    wait_for_more(&agent, before);
    let before = disconnected(&agent);
    let mut quiet = SocketClient::connect(&agent.socket);
    quiet.send(br#"{"subscribe": {"snapshots": false, "events": true}}"#);
    assert_eq!(
        quiet.next()["type"],
        "ok",
        "reply to the events-only subscribe"
    );
    drop(quiet);
    wait_for_more(&agent, before);
    assert_eq!(
        disconnected(&agent),
        before + 1,
        "disconnections logged after an events-only client closed"
    );

    // A reset clears snapshot totals but not the exported counters.
    let mut resetter = SocketClient::connect(&agent.socket);
    resetter.send(br#"{"reset": true}"#);
    assert_eq!(resetter.next()["type"], "ok");
    thread::sleep(Duration::from_millis(1200));
    let (_, after_reset) = scrape(agent.metrics);
    let mounts_after_reset = counter(
        &after_reset,
        "mountscope_mount_syscalls_total",
        ("syscall", "mount"),
    );
    assert_eq!(
        mounts_after_reset,
        mounts + (FAILED + BINDS) as f64,
        "counter after reset"
    );

    drop(first);
    drop(second);
    drop(resetter);

    // SIGTERM: exit 0, socket removed, programs unloaded, no mounts left.
    let status = agent.terminate();
    let log = agent.log_text();
    assert!(status.success(), "agent exit status {status}:\n{log}");
    assert!(!agent.socket.exists(), "socket file left behind");
    let deadline = Instant::now() + Duration::from_secs(10);
    while loaded.iter().any(|&id| prog_exists(id)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    let remaining: Vec<u32> = loaded
        .iter()
        .copied()
        .filter(|&id| prog_exists(id))
        .collect();
    assert!(remaining.is_empty(), "programs still loaded: {remaining:?}");
    assert_eq!(bpffs_entries(), bpffs_before, "/sys/fs/bpf changed");
    assert!(
        namespace.call(NsRequest::ScratchMounts).is_empty(),
        "mounts left in the test namespace"
    );
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&*dir.0.to_string_lossy()),
        "mounts left on the host"
    );

    assert!(log.contains("client connected"), "{log}");
    assert!(log.contains("client disconnected"), "{log}");
    assert!(log.contains("rejected a malformed request"), "{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
}

/// `record` writes a line per mount syscall, and with `--snapshots-only` none.
#[test]
fn record_writes_a_line_per_call() {
    let Some(binary) = preconditions() else {
        return;
    };
    let dir = TempDir::new("record");
    let scratch = dir.0.join("scratch");
    fs::create_dir_all(scratch.join("src")).unwrap();
    fs::create_dir_all(scratch.join("dst")).unwrap();
    let namespace = Namespace::start(scratch);

    let mut mount_lines = Vec::new();
    for (name, extra) in [("all", None), ("snapshots", Some("--snapshots-only"))] {
        let output = dir.0.join(format!("{name}.jsonl"));
        let mut child = Command::new(&binary)
            .args(["record", "--duration", "4", "--interval", "0.5", "--mntns"])
            .arg(namespace.mntns_id.to_string())
            .arg("--output")
            .arg(&output)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.0.join(format!("{name}.log"))).unwrap())
            .spawn()
            .expect("failed to start record");
        // The first snapshot line shows that the probes are attached.
        let deadline = Instant::now() + START_TIMEOUT;
        while !fs::read_to_string(&output).is_ok_and(|t| t.contains("\"type\":\"snapshot\"")) {
            assert!(Instant::now() < deadline, "record wrote no snapshot");
            thread::sleep(Duration::from_millis(100));
        }
        namespace.call(NsRequest::BindMounts(5));
        let status = child.wait().unwrap();
        assert!(status.success(), "record exit status {status}");
        let text = fs::read_to_string(&output).unwrap();
        let count = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == "event" && v["kind"] == "syscall" && v["syscall"] == "mount")
            .count();
        mount_lines.push(count);
    }
    assert_eq!(mount_lines[0], 5, "mount lines of `record`");
    assert_eq!(
        mount_lines[1], 0,
        "mount lines of `record --snapshots-only`"
    );
}
