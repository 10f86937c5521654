//! Logging and tracing: human-readable by default, JSON with `LOG_FORMAT=json`, filtered by
//! `RUST_LOG`; spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where spans go, besides the log.
#[derive(Debug, Clone, Default)]
pub struct Otlp {
    /// e.g. `http://collector:4318` (spans are posted to `/v1/traces`).
    pub endpoint: Option<String>,
    pub service_name: String,
}

/// Flushes exported spans and buffered log lines when dropped (at the end of `main`, outside
/// the async runtime).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    _log_writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("bankgraph: could not flush OTLP spans: {e}");
        }
    }
}

/// Log lines that may wait for the writer thread; past that, loggers wait (nothing is dropped).
const LOG_QUEUE_LINES: usize = 4096;

/// Installs the global subscriber once. Logs go to stderr so stdout stays for output, written
/// by a thread of their own: a request formats its line and hands it over instead of making a
/// `write` call; the writer thread writes whatever has queued up at once.
/// Nothing is dropped: when the writer falls behind, loggers wait for it. Colours only on a
/// terminal. Call it before the async runtime starts (the OTLP exporter's client is a
/// blocking one).
pub fn init(json: bool, otlp: &Otlp) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match &otlp.endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .with_timeout(std::time::Duration::from_secs(5))
                .with_headers(Default::default())
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(otlp.service_name.clone()).build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("bankgraph")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // The writer thread takes every line queued, then flushes: one write for a burst of lines.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    // At most LOG_QUEUE_LINES lines wait for the writer (tracing-appender's default is 128,000:
    // tens of megabytes held while the writer lags under load).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .finish(stderr);
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(std::io::stderr().is_terminal());
    let installed = if json { registry.with(fmt.json()).try_init() } else { registry.with(fmt).try_init() };
    Ok(Telemetry { provider, _log_writer: installed.is_ok().then_some(guard) })
}

/// For tests: logs only when `TEST_LOG` is set, so test output stays readable.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("info")).try_init();
    }
}
