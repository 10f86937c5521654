use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bankgraph::cli::Cli::parse();
    let json = match cli.log_format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            eprintln!("bankgraph: configuration error: LOG_FORMAT must be text or json, got {other:?}");
            return ExitCode::from(2);
        }
    };
    bankgraph::telemetry::init(json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bankgraph: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bankgraph::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // One line that names what is wrong; the detail chain is joined with ": ".
        Err(e) if e.downcast_ref::<bankgraph::config::ConfigError>().is_some() => {
            eprintln!("bankgraph: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("bankgraph: {e:#}");
            ExitCode::FAILURE
        }
    }
}
