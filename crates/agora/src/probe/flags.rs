//! grpc_health_probe's command line, parsed as Go's `flag` package parses it,
//! so an exec probe written for the probe works unchanged with `agora health`.
//!
//! Hand-written: no Rust argument parser takes Go's rules (single- or
//! double-dash long names, `-flag value` except for booleans, which take only
//! `-flag` or `-flag=bool`, parsing stops at the first non-flag argument) and
//! its duration syntax (`time.ParseDuration`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the probe was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOptions {
    /// `-addr`: host:port (`:port` is this host), or `unix:path`.
    pub addr: String,
    /// `-service`: the service to ask about; empty is the server as a whole.
    pub service: String,
    /// `-connect-timeout`: TCP, TLS and the HTTP/2 handshake together.
    pub connect_timeout: Duration,
    /// `-rpc-timeout`: the Check call.
    pub rpc_timeout: Duration,
    /// `-tls` and its options.
    pub tls: Option<TlsOptions>,
    /// `-rpc-header`: metadata sent with the call, in order.
    pub rpc_headers: Vec<(String, String)>,
    /// `-gzip`: compress the request and accept a compressed reply.
    pub gzip: bool,
    /// `-user-agent`.
    pub user_agent: String,
    /// `-v`: say what is done, and how long it took.
    pub verbose: bool,
}

/// `-tls-*`: how to speak TLS to the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `-tls-no-verify`: accept any server certificate.
    pub no_verify: bool,
    /// `-tls-ca-cert`: the CAs to trust instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// `-tls-client-cert` and `-tls-client-key`: a client certificate (mTLS).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// `-tls-server-name`: the name to verify instead of the address's host.
    pub server_name: Option<String>,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Probe.
    Probe(Box<ProbeOptions>),
    /// `-version`.
    Version,
}

/// A command line the probe refuses (exit code 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagError {
    /// Go's `flag` refused it (an unknown flag, a missing or bad value, or
    /// `-h`); the usage follows the message.
    Syntax(String),
    /// The flags parse but do not go together.
    Invalid(String),
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Syntax(message) => write!(f, "{message}\n{USAGE}"),
            FlagError::Invalid(message) => write!(f, "error: {message}"),
        }
    }
}

/// The flags, described as `agora health -h` prints them.
pub const USAGE: &str = "Usage of agora health (grpc_health_probe's flags and exit codes):
  -addr string
    \t(required) tcp host:port to connect
  -connect-timeout duration
    \ttimeout for establishing connection (default 1s)
  -gzip
    \tuse GZIPCompressor for requests and GZIPDecompressor for response (default: false)
  -rpc-header value
    \tadditional RPC headers in 'name: value' format. May specify more than one via multiple flags.
  -rpc-timeout duration
    \ttimeout for health check rpc (default 1s)
  -service string
    \tservice name to check (default: \"\")
  -tls
    \tuse TLS (default: false, INSECURE plaintext transport)
  -tls-ca-cert string
    \t(with -tls, optional) file containing trusted certificates for verifying server
  -tls-client-cert string
    \t(with -tls, optional) client certificate for authenticating to the server (requires -tls-client-key)
  -tls-client-key string
    \t(with -tls) client private key for authenticating to the server (requires -tls-client-cert)
  -tls-no-verify
    \t(with -tls) don't verify the certificate (INSECURE) presented by the server (default: false)
  -tls-server-name string
    \t(with -tls) override the hostname used to verify the server certificate
  -user-agent string
    \tuser-agent header value of health check requests (default \"grpc_health_probe\")
  -v\tverbose logs
  -version
    \tshow probe version and exit
Exit codes: 0 SERVING, 1 invalid arguments, 2 connection failed, 3 RPC failed, 4 not SERVING.";

/// The raw values, before they are checked together.
#[derive(Debug)]
struct Raw {
    addr: String,
    service: String,
    connect_timeout: i128,
    rpc_timeout: i128,
    tls: bool,
    tls_no_verify: bool,
    tls_ca_cert: String,
    tls_client_cert: String,
    tls_client_key: String,
    tls_server_name: String,
    rpc_headers: Vec<(String, String)>,
    gzip: bool,
    user_agent: String,
    verbose: bool,
    version: bool,
}

const SECOND: i128 = 1_000_000_000;

impl Default for Raw {
    fn default() -> Self {
        Self {
            addr: String::new(),
            service: String::new(),
            connect_timeout: SECOND,
            rpc_timeout: SECOND,
            tls: false,
            tls_no_verify: false,
            tls_ca_cert: String::new(),
            tls_client_cert: String::new(),
            tls_client_key: String::new(),
            tls_server_name: String::new(),
            rpc_headers: Vec::new(),
            gzip: false,
            user_agent: "grpc_health_probe".into(),
            verbose: false,
            version: false,
        }
    }
}

/// Parses `args` (without the program and subcommand names).
pub fn parse(args: &[String]) -> Result<Parsed, FlagError> {
    let mut raw = Raw::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(flag) = arg.strip_prefix('-').filter(|flag| !flag.is_empty()) else {
            break; // the first non-flag argument ends the flags
        };
        let flag = match flag.strip_prefix('-') {
            Some("") => break, // "--"
            Some(flag) => flag,
            None => flag,
        };
        if flag.starts_with('-') || flag.starts_with('=') {
            return Err(syntax(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        if let Some(target) = raw.boolean(name) {
            *target = match inline {
                None => true,
                Some(value) => parse_bool(value).ok_or_else(|| {
                    syntax(format!(
                        "invalid boolean value {value:?} for -{name}: parse error"
                    ))
                })?,
            };
            continue;
        }
        if matches!(name, "h" | "help") {
            return Err(syntax("flag: help requested".into()));
        }
        if !raw.takes_value(name) {
            return Err(syntax(format!("flag provided but not defined: -{name}")));
        }
        let value = match inline {
            Some(value) => value,
            None => rest
                .next()
                .ok_or_else(|| syntax(format!("flag needs an argument: -{name}")))?,
        };
        raw.set(name, value).map_err(|reason| {
            syntax(format!(
                "invalid value {value:?} for flag -{name}: {reason}"
            ))
        })?;
    }
    if raw.version {
        return Ok(Parsed::Version);
    }
    raw.check().map(|options| Parsed::Probe(Box::new(options)))
}

fn syntax(message: String) -> FlagError {
    FlagError::Syntax(message)
}

impl Raw {
    fn boolean(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "tls" => &mut self.tls,
            "tls-no-verify" => &mut self.tls_no_verify,
            "gzip" => &mut self.gzip,
            "v" => &mut self.verbose,
            "version" => &mut self.version,
            _ => return None,
        })
    }

    fn takes_value(&self, name: &str) -> bool {
        matches!(
            name,
            "addr"
                | "service"
                | "connect-timeout"
                | "rpc-timeout"
                | "tls-ca-cert"
                | "tls-client-cert"
                | "tls-client-key"
                | "tls-server-name"
                | "rpc-header"
                | "user-agent"
        )
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let text = value.to_owned();
        match name {
            "addr" => self.addr = text,
            "service" => self.service = text,
            "connect-timeout" => self.connect_timeout = parse_go_duration(value)?,
            "rpc-timeout" => self.rpc_timeout = parse_go_duration(value)?,
            "tls-ca-cert" => self.tls_ca_cert = text,
            "tls-client-cert" => self.tls_client_cert = text,
            "tls-client-key" => self.tls_client_key = text,
            "tls-server-name" => self.tls_server_name = text,
            "user-agent" => self.user_agent = text,
            "rpc-header" => {
                let (key, value) = value.split_once(':').ok_or_else(|| {
                    format!("invalid RPC header, expected 'key: value', got {value:?}")
                })?;
                self.rpc_headers
                    .push((key.to_lowercase(), value.trim_start().to_owned()));
            }
            _ => unreachable!("takes_value lists every flag set handles"),
        }
        Ok(())
    }

    /// The probe's own checks, in its order, with its messages.
    fn check(self) -> Result<ProbeOptions, FlagError> {
        let invalid = |message: String| Err(FlagError::Invalid(message));
        if self.addr.is_empty() {
            return invalid("-addr not specified".into());
        }
        if self.connect_timeout <= 0 {
            return invalid(format!(
                "-connect-timeout must be greater than zero (specified: {})",
                format_go_duration(self.connect_timeout)
            ));
        }
        if self.rpc_timeout <= 0 {
            return invalid(format!(
                "-rpc-timeout must be greater than zero (specified: {})",
                format_go_duration(self.rpc_timeout)
            ));
        }
        let without_tls = [
            (self.tls_no_verify, "-tls-no-verify"),
            (!self.tls_ca_cert.is_empty(), "-tls-ca-cert"),
            (!self.tls_client_cert.is_empty(), "-tls-client-cert"),
            (!self.tls_server_name.is_empty(), "-tls-server-name"),
        ];
        if !self.tls
            && let Some((_, flag)) = without_tls.iter().find(|(set, _)| *set)
        {
            return invalid(format!("specified {flag} without specifying -tls"));
        }
        match (
            self.tls_client_cert.is_empty(),
            self.tls_client_key.is_empty(),
        ) {
            (false, true) => {
                return invalid(
                    "specified -tls-client-cert without specifying -tls-client-key".into(),
                );
            }
            (true, false) => {
                return invalid(
                    "specified -tls-client-key without specifying -tls-client-cert".into(),
                );
            }
            _ => {}
        }
        if self.tls_no_verify && !self.tls_ca_cert.is_empty() {
            return invalid(
                "cannot specify -tls-ca-cert with -tls-no-verify (CA cert would not be used)"
                    .into(),
            );
        }
        if self.tls_no_verify && !self.tls_server_name.is_empty() {
            return invalid(
                "cannot specify -tls-server-name with -tls-no-verify (server name would not be used)"
                    .into(),
            );
        }
        let nonempty = |text: String| (!text.is_empty()).then_some(text);
        let tls = self.tls.then(|| TlsOptions {
            no_verify: self.tls_no_verify,
            ca_cert: nonempty(self.tls_ca_cert).map(PathBuf::from),
            client_identity: nonempty(self.tls_client_cert)
                .map(|cert| (PathBuf::from(cert), PathBuf::from(&self.tls_client_key))),
            server_name: nonempty(self.tls_server_name),
        });
        Ok(ProbeOptions {
            addr: self.addr,
            service: self.service,
            connect_timeout: positive(self.connect_timeout),
            rpc_timeout: positive(self.rpc_timeout),
            tls,
            rpc_headers: self.rpc_headers,
            gzip: self.gzip,
            user_agent: self.user_agent,
            verbose: self.verbose,
        })
    }
}

fn positive(nanos: i128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]` then one or more
/// `<decimal><unit>` with units ns, us (µs, μs), ms, s, m, h; "0" alone is
/// allowed without a unit.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    let error = || "parse error".to_owned();
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(error());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(error)?;
        let number = &rest[..number_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(error());
        }
        let value: f64 = number.parse().map_err(|_| error())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(error()),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    if total > i64::MAX as f64 {
        return Err(error());
    }
    let nanos = total.round() as i128;
    Ok(if negative { -nanos } else { nanos })
}

/// A duration as Go's `time.Duration.String()` writes it (`1.5s`, `2m0s`,
/// `100ms`, `1µs`), for messages.
pub fn format_go_duration(nanos: i128) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let decimal = |value: u128, unit: u128, suffix: &str| {
        let whole = value / unit;
        let fraction = value % unit;
        if fraction == 0 {
            format!("{whole}{suffix}")
        } else {
            let digits = unit.ilog10() as usize;
            let fraction = format!("{fraction:0digits$}");
            format!("{whole}.{}{suffix}", fraction.trim_end_matches('0'))
        }
    };
    let body = if n < 1_000 {
        format!("{n}ns")
    } else if n < 1_000_000 {
        decimal(n, 1_000, "µs")
    } else if n < 1_000_000_000 {
        decimal(n, 1_000_000, "ms")
    } else {
        let hours = n / 3_600_000_000_000;
        let minutes = n / 60_000_000_000 % 60;
        let seconds = decimal(n % 60_000_000_000, 1_000_000_000, "s");
        match (hours, minutes) {
            (0, 0) => seconds,
            (0, m) => format!("{m}m{seconds}"),
            (h, m) => format!("{h}h{m}m{seconds}"),
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn probe(line: &str) -> ProbeOptions {
        match parse(&args(line)) {
            Ok(Parsed::Probe(options)) => *options,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn go_flag_forms_are_all_accepted() {
        for line in [
            "-addr :50051 -service s",
            "--addr :50051 --service=s",
            "-addr=:50051 -service s extra -ignored",
        ] {
            let options = probe(line);
            assert_eq!(
                (options.addr.as_str(), options.service.as_str()),
                (":50051", "s")
            );
        }
        let mut line = args("-addr a:1 -tls -tls-no-verify=true -gzip=false -v -rpc-header x-a:b");
        line.extend(["-rpc-header".to_owned(), "X-B:  c".to_owned()]);
        let options = match parse(&line) {
            Ok(Parsed::Probe(options)) => *options,
            other => panic!("{other:?}"),
        };
        assert!(options.tls.unwrap().no_verify);
        assert!(!options.gzip && options.verbose);
        assert_eq!(
            options.rpc_headers,
            [("x-a".into(), "b".into()), ("x-b".into(), "c".into())]
        );
        assert_eq!(parse(&args("-version")), Ok(Parsed::Version));
    }

    #[test]
    fn refusals_are_the_probes() {
        for line in [
            "",
            "-addr",
            "-addr a:1 -bogus",
            "-addr a:1 -h",
            "-addr a:1 -tls=maybe",
            "-addr a:1 -rpc-header nocolon",
            "-addr a:1 -rpc-timeout 0",
            "-addr a:1 -connect-timeout -1s",
            "-addr a:1 -connect-timeout 1",
            "-addr a:1 -tls-no-verify",
            "-addr a:1 -tls-ca-cert x",
            "-addr a:1 -tls -tls-client-cert x",
            "-addr a:1 -tls -tls-client-key x",
            "-addr a:1 -tls -tls-no-verify -tls-ca-cert x",
            "-addr a:1 -tls -tls-no-verify -tls-server-name x",
            "---addr a:1",
        ] {
            assert!(parse(&args(line)).is_err(), "{line:?} was accepted");
        }
    }

    #[test]
    fn durations_parse_and_print_as_in_go() {
        let cases = [
            ("1s", 1_000_000_000),
            ("1ms", 1_000_000),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("1.5s", 1_500_000_000),
            ("1h2m", 3_720_000_000_000),
            ("-1s", -1_000_000_000),
            ("0", 0),
            ("250ns", 250),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse_go_duration(text), Ok(nanos), "{text}");
        }
        for bad in ["1", "s", "", "1x", "1.2.3s", "-"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        for (nanos, text) in [
            (0, "0s"),
            (1_000, "1µs"),
            (1_000_000, "1ms"),
            (1_500_000_000, "1.5s"),
            (-1_000_000_000, "-1s"),
            (120_000_000_000, "2m0s"),
        ] {
            assert_eq!(format_go_duration(nanos), text);
        }
    }
}
