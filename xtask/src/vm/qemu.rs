//! Booting the guest under qemu with a time limit and reading its result from the serial
//! console.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::command;

/// The line `/init` prints last, followed by `PASS` or `FAIL`.
const RESULT_MARKER: &str = "MOUNTSCOPE-VM-RESULT: ";
/// Prefix of every line `/init` prints about itself and its checks.
const INIT_PREFIX: &str = "MOUNTSCOPE-VM-";

/// Kernel command line: serial console, and any panic (an oops included) ends the boot at once,
/// which `-no-reboot` turns into a qemu exit.
const KERNEL_ARGUMENTS: &str = "console=ttyS0 panic=-1 oops=panic edd=off";

/// Exit status of qemu when the guest writes `value` to the isa-debug-exit port.
const fn debug_exit_status(value: i32) -> i32 {
    (value << 1) | 1
}

/// What a boot produced.
pub struct Boot {
    pub passed: bool,
    pub elapsed: Duration,
}

/// Options of one boot.
pub struct BootOptions<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub log: &'a Path,
    pub timeout: Duration,
    pub cpus: u32,
    pub bench: bool,
    /// Print every console line, kernel messages included, not only those of `/init` and the
    /// test binaries.
    pub verbose: bool,
}

/// Boots the guest, streams its console to `options.log` and to stderr, and returns whether
/// `/init` reported success. qemu is killed by its PID when `options.timeout` passes.
pub fn boot(options: &BootOptions) -> Result<Boot> {
    let mut append = KERNEL_ARGUMENTS.to_string();
    if options.bench {
        append.push_str(" mountscope.bench=1");
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "2G"])
        .args(["-smp", &options.cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(options.vmlinuz)
        .arg("-initrd")
        .arg(options.initramfs)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command_line = command::display(&qemu);
    eprintln!("    $ {command_line}");

    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("failed to start `{command_line}`"))?;
    let lines = stream_console(&mut child)?;

    let mut log = fs::File::create(options.log)
        .with_context(|| format!("failed to create {}", options.log.display()))?;
    let deadline = start + options.timeout;
    let mut result = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            kill(&mut child);
            bail!(
                "the VM did not finish within {} s and was killed; its console is in {}",
                options.timeout.as_secs(),
                options.log.display()
            );
        }
        match lines.recv_timeout(deadline - now) {
            Ok(line) => {
                writeln!(log, "{line}")
                    .with_context(|| format!("failed to write {}", options.log.display()))?;
                if options.verbose || is_guest_output(&line) {
                    eprintln!("    | {line}");
                }
                if let Some(verdict) = line.trim_end().strip_prefix(RESULT_MARKER) {
                    result = Some(verdict == "PASS");
                }
            }
            // Both pipes closed: qemu exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
        }
    }

    let status = child.wait().context("failed to wait for qemu")?;
    let elapsed = start.elapsed();
    let Some(passed) = result else {
        bail!(
            "the VM exited ({status}) without printing `{RESULT_MARKER}PASS` or `FAIL`; its \
             console is in {}",
            options.log.display()
        );
    };
    let expected_status = debug_exit_status(if passed { 0 } else { 1 });
    if status.code() != Some(expected_status) {
        bail!(
            "the VM printed its result but qemu exited with {status}, not status \
             {expected_status} from the isa-debug-exit device; its console is in {}",
            options.log.display()
        );
    }
    Ok(Boot { passed, elapsed })
}

/// Reads qemu's stdout (the serial console) and stderr on two threads and sends their lines
/// on one channel, which disconnects when both reach end of file.
fn stream_console(child: &mut Child) -> Result<mpsc::Receiver<String>> {
    let (sender, receiver) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu's stdout is not piped")?;
    let stderr = child.stderr.take().context("qemu's stderr is not piped")?;
    let stderr_sender = sender.clone();
    thread::spawn(move || forward_lines(stdout, &sender));
    thread::spawn(move || forward_lines(stderr, &stderr_sender));
    Ok(receiver)
}

fn forward_lines(stream: impl std::io::Read, sender: &mpsc::Sender<String>) {
    for line in BufReader::new(stream).split(b'\n') {
        let Ok(line) = line else {
            return;
        };
        // The console ends lines with CR LF and may carry invalid UTF-8 early in the boot.
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_string();
        if sender.send(text).is_err() {
            return;
        }
    }
}

/// Whether a console line comes from `/init` or the programs it runs rather than the kernel,
/// whose messages start with a `[ seconds.micros]` timestamp.
fn is_guest_output(line: &str) -> bool {
    line.starts_with(INIT_PREFIX) || !line.trim_start().starts_with('[')
}

/// Kills qemu by its PID and reaps it.
fn kill(child: &mut Child) {
    eprintln!("    killing qemu (pid {})", child.id());
    if let Err(error) = child.kill() {
        eprintln!("    failed to kill qemu (pid {}): {error}", child.id());
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exit_status_shifts_and_sets_bit_zero() {
        assert_eq!(debug_exit_status(0), 1);
        assert_eq!(debug_exit_status(1), 3);
    }

    #[test]
    fn kernel_lines_are_not_guest_output() {
        assert!(!is_guest_output("[    0.000000] Linux version 6.1.0"));
        assert!(is_guest_output("MOUNTSCOPE-VM-RESULT: PASS"));
        assert!(is_guest_output("test exact_tier ... ok"));
    }
}
