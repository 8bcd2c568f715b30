//! The log lines a test binary writes, captured as the JSON lines an
//! operator's pipeline receives (`AGORA_LOG_FORMAT=json`, call ids
//! included), so tests can check what a line says and which call it names.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Everything logged since [`capture`] was first called.
#[derive(Clone, Debug, Default)]
pub struct CapturedLogs {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures this test binary's logs from now on (once; later calls return
/// the same capture). Call it before the servers under test start.
///
/// # Panics
/// When another log subscriber was installed first.
pub fn capture() -> &'static CapturedLogs {
    static CAPTURED: OnceLock<CapturedLogs> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = CapturedLogs::default();
        assert!(
            agora_interceptors::telemetry::json_logs_into(captured.clone()),
            "another log subscriber was installed before the capture"
        );
        captured
    })
}

impl CapturedLogs {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The first line containing every one of `parts`, waiting for it up to
    /// five seconds (lines may be written after the call that caused them
    /// has answered).
    pub async fn line_with(&self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self
                .lines()
                .into_iter()
                .find(|line| parts.iter().all(|part| line.contains(part)))
            {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {parts:?} in:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
