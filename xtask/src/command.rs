//! Running external programs: each command is printed before it runs, and a failure names it.

use std::{
    ffi::OsStr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Formats `command` the way a shell user would type it, with the variables it sets first.
pub fn display(command: &Command) -> String {
    let mut words = Vec::new();
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                name.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    words.push(command.get_program().to_string_lossy().into_owned());
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// Prints `command`, runs it with the terminal's stdin, stdout and stderr, and fails unless it
/// exits with status 0.
pub fn run(command: &mut Command) -> Result<()> {
    let command_line = display(command);
    eprintln!("    $ {command_line}");
    let status = command
        .status()
        .with_context(|| format!("failed to start `{command_line}`"))?;
    if !status.success() {
        bail!("`{command_line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` without printing it and returns its stdout; the error contains its stderr.
pub fn output(command: &mut Command) -> Result<String> {
    let command_line = display(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{command_line}`"))?;
    if !output.status.success() {
        bail!(
            "`{command_line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{command_line}` printed invalid UTF-8"))
}

/// Runs `command` silently and returns its stdout, or `None` if it could not start or failed.
///
/// For checks where a missing program is an expected answer, not an error.
pub fn probe(command: &mut Command) -> Option<String> {
    output(command.stderr(Stdio::null())).ok()
}

/// Returns whether `program` is an executable found in `PATH`.
pub fn in_path(program: impl AsRef<OsStr>) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let candidate = dir.join(program.as_ref());
        std::fs::metadata(&candidate).is_ok_and(|metadata| {
            use std::os::unix::fs::PermissionsExt as _;
            metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
        })
    })
}
