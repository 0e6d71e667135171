//! Running the deployment tools (helm, kubernetes-validate, envoy, promtool, hadolint, rotel,
//! grpcurl) and long-lived processes from the deploy tests. scripts/test.sh installs every tool;
//! a missing one fails the test, because a check that did not run must not pass.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root (tests/ is one level down).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root")
}

pub fn repo_path(rel: &str) -> PathBuf {
    repo_root().join(rel)
}

/// A program from PATH, or from the environment variable `env` when it is set (for tools that
/// are not on PATH in some setups).
pub fn tool(program: &str, env: &str) -> PathBuf {
    std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(program))
}

/// Output of a finished tool run, with the exit status and both streams as text.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for assertion messages.
    pub fn both(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_success(&self, what: &str) {
        assert!(self.status.success(), "{what} failed ({}):\n{}", self.status, self.both());
    }
}

/// Runs `program args` in the repo root with `stdin` fed in, killing it after `limit`.
#[track_caller]
pub fn run(program: impl AsRef<Path>, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Run {
    let program = program.as_ref();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} is required (scripts/test.sh installs it): {e}", program.display()));
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let bytes = bytes.to_vec();
        // A writer thread: a large input must not deadlock against a full stdout pipe.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let out = wait_output(child, limit).unwrap_or_else(|| panic!("{} {args:?} ran longer than {limit:?}", program.display()));
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Collects a child's output, or kills it and returns None once `limit` has passed.
fn wait_output(mut child: Child, limit: Duration) -> Option<Output> {
    let (mut out, mut err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    Some(Output { status, stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() })
}

/// A background process that is killed when dropped, its output going to a log file so a
/// failing test can show it.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    #[track_caller]
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).expect("log file");
        let file2 = file.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({:?}) failed; scripts/test.sh installs it: {e}", cmd.get_program()));
        Daemon { name: name.into(), child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last `n` lines under a header naming the process, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- {} (last {n} lines) ---\n{}\n", self.name, lines[lines.len().saturating_sub(n)..].join("\n"))
    }

    /// Panics with the log if the process has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }

    /// SIGKILL: the process gets no chance to drain, like a crashed node.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 100 ms until it returns Some, or panics with `what` after `limit`.
#[track_caller]
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free loopback port (bound, then released for the process under test to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A fresh scratch directory under the target dir, removed first if a previous run left it.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// HTTP/1.1 GET on loopback (Envoy's admin refuses HTTP/1.0); the body of a 200 answer, None
/// otherwise.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !(head.starts_with("HTTP/1.") && head.contains(" 200 ")) {
        return None;
    }
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
    if chunked { dechunk(body) } else { Some(body.to_string()) }
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n..)?.strip_prefix("\r\n")?;
    }
}

/// `helm template` of the chart with `--set`-style arguments; panics on a render error.
#[track_caller]
pub fn helm_template(extra: &[&str]) -> String {
    let mut args = vec!["template", "hangar", "deploy/helm/hangar", "--namespace", "hangar"];
    args.extend_from_slice(extra);
    let r = run("helm", &args, None, Duration::from_secs(120));
    r.assert_success("helm template");
    r.stdout
}

/// The rendered document that came from `templates/<file>`.
#[track_caller]
pub fn rendered<'a>(all: &'a str, file: &str) -> &'a str {
    let marker = format!("# Source: hangar/templates/{file}\n");
    let start = all.find(&marker).unwrap_or_else(|| panic!("no {file} in the rendered chart:\n{all}")) + marker.len();
    let rest = &all[start..];
    &rest[..rest.find("\n---").unwrap_or(rest.len())]
}

/// `hangar` with the `serve` subcommand: $HANGAR_BIN, else the one cargo built beside this test.
pub fn hangar_bin() -> PathBuf {
    let bin = std::env::var_os("HANGAR_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("test path");
        exe.parent().and_then(Path::parent).expect("target dir").join("hangar")
    });
    assert!(bin.is_file(), "no hangar binary at {} (build -p hangar-services or set HANGAR_BIN)", bin.display());
    bin
}

/// Whether grpc.health.v1 at `addr` answers SERVING for `service` ("" is the whole server).
pub fn health_serving(addr: &str, service: &str) -> bool {
    let req = format!("{{\"service\":\"{service}\"}}");
    let r = run("grpcurl", &["-plaintext", "-d", &req, addr, "grpc.health.v1.Health/Check"], None, Duration::from_secs(20));
    r.status.success() && r.stdout.contains("\"SERVING\"")
}
