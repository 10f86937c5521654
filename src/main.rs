use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: a GraphQL answer is thousands of small allocations, and
/// glibc's arenas made them a fifth of a request's CPU, with lock contention between workers
/// (measured in bench/load.sh; see the README's performance section). Built without
/// transparent huge pages (`no_thp`): with them a 100,000-transaction sync peaked at 96 MB of
/// RSS instead of about 42 MB (glibc: 30 MB), for no measurable speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = bankgraph::cli::Cli::parse();
    let otlp = bankgraph::telemetry::Otlp {
        endpoint: cli.otlp_endpoint.clone().filter(|e| !e.is_empty()),
        service_name: cli.otel_service_name.clone(),
    };
    // Kept to the end of main: dropping it flushes exported spans, outside the runtime.
    let _telemetry = match bankgraph::telemetry::init(cli.log_format == bankgraph::config::LogFormat::Json, &otlp) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bankgraph: configuration error: OTEL_EXPORTER_OTLP_ENDPOINT: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bankgraph: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(bankgraph::cli::run(cli));
    // Not `drop`: dropping a runtime waits for every task, and one stuck in CPU-bound work
    // would keep the process alive after SIGTERM. What has not stopped by now is abandoned.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
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
