//! The `uns-kafka` binary: parses the command line and hands over to the
//! library. Nothing here knows about MQTT, Kafka or wasm.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uns_kafka::error::CliError;

#[derive(Parser)]
#[command(
    name = "uns-kafka",
    version,
    about = "MQTT (UNS, Sparkplug B) to Apache Kafka bridge with WebAssembly transforms",
    // `uns-kafka --config /etc/uns check` would otherwise parse `--config`
    // as `run`'s and then check `conf`: a usage error says where flags go.
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Arguments of `run`, the default when no subcommand is given.
    #[command(flatten)]
    run: uns_kafka::pipeline::RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Bridge MQTT to Kafka (the default).
    Run(uns_kafka::pipeline::RunArgs),
    /// Check the settings and the component as `run` would, then exit.
    Check(uns_kafka::check::CheckArgs),
    /// Run a component over messages offline, with no broker.
    Transform(uns_kafka::offline::TransformArgs),
    /// The whole job on an embedded MQTT broker and a mock Kafka cluster.
    Demo(uns_kafka::demo::DemoArgs),
    /// Probe a running bridge's health endpoint (for Docker HEALTHCHECK).
    Health {
        /// The bridge's /health URL (bridge.health_listen).
        #[arg(long, default_value = "http://127.0.0.1:8080/health")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with success; everything
            // else is a usage error (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // With --log-json the line that says why `run` stopped is a JSON log
    // line like the rest, so a log shipper does not drop the one that
    // matters most.
    let log_json = match &cli.command {
        None => cli.run.log_json,
        Some(Command::Run(args)) => args.log_json,
        Some(_) => false,
    };
    let result: Result<(), CliError> = match cli.command {
        None => uns_kafka::pipeline::main(cli.run),
        Some(Command::Run(args)) => uns_kafka::pipeline::main(args),
        Some(Command::Check(args)) => uns_kafka::check::main(args),
        Some(Command::Transform(args)) => uns_kafka::offline::main(args),
        Some(Command::Demo(args)) => uns_kafka::demo::main(args),
        Some(Command::Health { url }) => uns_kafka::health::probe(&url)
            .map_err(|e| CliError::Other(anyhow::anyhow!("unhealthy: {e}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Unless RUST_LOG filters our errors out: the reason must show.
        Err(e) if log_json && tracing::enabled!(tracing::Level::ERROR) => {
            tracing::error!(exit_code = e.exit_code(), "{e:#}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}
