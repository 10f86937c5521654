//! Every log line and every response body of the test binary, for the leak tests.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Every log line of the test binary, for the leak test.
pub fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Every response body any test received, for the leak test.
pub fn bodies() -> &'static Mutex<Vec<String>> {
    static BODIES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    BODIES.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,h2=info,rustls=info,reqwest=info")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}
