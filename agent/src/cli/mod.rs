//! Command-line interface: one module per subcommand, shared options here.

mod agent;
mod args;
mod bench;
mod doctor;
mod logging;
mod overhead;
mod record;
mod session;
mod watch;

use clap::{Parser, Subcommand};

/// An error that its command already logged, with a timestamp, to the same stderr, so `main`
/// does not print it a second time.
#[derive(Debug, thiserror::Error)]
#[error("the error was logged above")]
pub struct Logged;

/// Watch mount syscalls and namespace_sem contention with eBPF, and build overlay root
/// filesystems to measure them.
#[derive(Debug, Parser)]
#[command(name = "mountscope", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log verbosity for messages on stderr or in the log file: error, warn, info, debug,
    /// trace, or a tracing filter such as `mountscope_agent=debug`.
    #[arg(long, global = true, default_value = "info", env = "MOUNTSCOPE_LOG")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the probes once and serve snapshots, events and metrics to clients until SIGTERM.
    Agent(agent::AgentArgs),
    /// Show mount syscalls and namespace_sem contention live, with the overlay executor.
    Watch(watch::WatchArgs),
    /// Write events and snapshots as JSON Lines, without a screen.
    Record(record::RecordArgs),
    /// Compare per-layer bind mounts (A) with one common-parent bind mount (B).
    Bench(bench::BenchArgs),
    /// Measure what the probes add to a bind mount + umount, against no probes and bpftrace.
    Overhead(overhead::OverheadArgs),
    /// Check what this kernel allows and which measurement tier mountscope will use.
    Doctor(doctor::DoctorArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Agent(args) => agent::run(args, &cli.log),
        Command::Watch(args) => watch::run(args, &cli.log),
        Command::Record(args) => {
            logging::to_stderr(&cli.log)?;
            record::run(args)
        }
        Command::Bench(args) => {
            logging::to_stderr(&cli.log)?;
            bench::run(args)
        }
        Command::Overhead(args) => {
            logging::to_stderr(&cli.log)?;
            overhead::run(args)
        }
        Command::Doctor(args) => {
            logging::to_stderr(&cli.log)?;
            doctor::run(args)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, CommandFactory as _, Parser as _, error::ErrorKind};

    use super::{
        Cli,
        args::{EXECUTOR_FLAGS, ExecutorArgs},
    };

    #[test]
    fn command_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connect_rejects_probe_options() {
        for args in [
            [
                "mountscope",
                "watch",
                "--connect",
                "/tmp/agent.sock",
                "--wait-sites",
            ],
            [
                "mountscope",
                "record",
                "--connect",
                "/tmp/agent.sock",
                "--sample-period-us=200",
            ],
            [
                "mountscope",
                "record",
                "--connect",
                "/tmp/agent.sock",
                "--layers=4",
            ],
        ] {
            let error = Cli::try_parse_from(args).expect_err("a conflict");
            assert_eq!(error.kind(), ErrorKind::ArgumentConflict, "{args:?}");
        }
    }

    #[test]
    fn executor_flags_list_every_executor_option() {
        let command = ExecutorArgs::augment_args(clap::Command::new("executor"));
        let mut ids: Vec<&str> = command
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .collect();
        let mut listed = EXECUTOR_FLAGS.to_vec();
        ids.sort_unstable();
        listed.sort_unstable();
        assert_eq!(ids, listed);
    }

    #[test]
    fn executor_options_require_exec() {
        for command in ["record", "agent"] {
            let args = ["mountscope", command, "--layers=4"];
            let error = Cli::try_parse_from(args).expect_err("--exec is missing");
            assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument, "{args:?}");
        }
    }

    #[test]
    fn executor_options_accepted_with_exec() {
        for command in ["record", "agent"] {
            let args = ["mountscope", command, "--exec", "--layers=4"];
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn watch_no_exec_rejects_executor_options() {
        let args = ["mountscope", "watch", "--no-exec", "--layers=4"];
        let error = Cli::try_parse_from(args).expect_err("a conflict");
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn watch_executor_options_need_no_exec() {
        assert!(Cli::try_parse_from(["mountscope", "watch", "--layers=4"]).is_ok());
    }
}
