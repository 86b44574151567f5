//! The client side, in `main`: an allowed command goes to the server holding the vault when one
//! answers on the admin socket, and runs locally otherwise.

use std::io::{BufRead, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{self, FrameError, MAX_RESPONSE};
use super::{refusal, socket_path, Request, Response};
use crate::exit;
use crate::{Cli, Command};

/// How long sending the request may take (the command itself may run for long: no read timeout).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `cli`'s command through the admin socket when it may and a server answers there: prints
/// the server's stdout and stderr as they came and returns the exit code. `None`: run it locally
/// (no socket, nobody listening, or a command that does not go through a server). Reads no
/// credentials.
pub fn forward_if_served(cli: &Cli) -> Option<u8> {
    if refusal(&cli.command).is_some() {
        return None;
    }
    let path = socket_path(&cli.global)?;
    // Nothing at the path (or no such directory): no server to forward to.
    std::fs::symlink_metadata(&path).ok()?;
    if let Err(why) = owned_by_us(&path) {
        return Some(fail(&path, why));
    }
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        // No server, or (InvalidInput) a path longer than a socket address holds, which no
        // server can have bound either: run locally.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::InvalidInput
            ) =>
        {
            return None;
        }
        Err(e) => {
            return Some(fail(
                &path,
                &format!(
                    "cannot connect ({}): check its owner; nothing was run",
                    e.kind()
                ),
            ))
        }
    };
    let req = match request(cli) {
        Ok(r) => r,
        Err(why) => return Some(fail(&path, &format!("{why}; nothing was run"))),
    };
    match exchange(stream, &req) {
        Ok(resp) => Some(print(&resp)),
        Err(why) => Some(fail(&path, &why)),
    }
}

/// The request for this process's command line.
fn request(cli: &Cli) -> Result<Request, &'static str> {
    let argv = std::env::args_os()
        .skip(1)
        .map(std::ffi::OsString::into_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the arguments are not UTF-8 text, which the socket cannot carry")?;
    let cwd = std::env::current_dir().map_err(|_| "cannot read the working directory")?;
    let stdin_line = match &cli.command {
        Command::Find(a) if a.value == "-" => Some(read_stdin_line()?),
        _ => None,
    };
    let vault = cli.global.vault.as_ref().map(|v| match v.is_absolute() {
        true => v.display().to_string(),
        false if v.to_str().is_some_and(|t| t.contains("://")) => v.display().to_string(),
        false => cwd.join(v).display().to_string(),
    });
    Ok(Request {
        argv,
        cwd,
        actor: cli.global.actor.clone(),
        stdin_line,
        vault,
    })
}

/// Refuses a socket another user owns: a server of ours binds as us, and a socket someone else
/// put at the path (a shared directory) must not get our arguments or print into our terminal.
/// A missing path is fine (nothing to connect to). Root may use anyone's.
fn owned_by_us(path: &std::path::Path) -> Result<(), &'static str> {
    use std::os::unix::fs::MetadataExt;
    let Ok(socket) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    // Our effective uid without `unsafe`: the owner of /proc/self is the process's euid.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    match me {
        Some(0) => Ok(()),
        Some(uid) if uid == socket.uid() => Ok(()),
        Some(_) => Err("the socket belongs to another user; nothing was run"),
        None => Err("cannot tell who owns the socket (/proc is not mounted); nothing was run"),
    }
}

/// The first line of stdin, as `kluis find` reads its value locally.
fn read_stdin_line() -> Result<String, &'static str> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|_| "cannot read the value from stdin")?;
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

/// Sends `req` and reads the reply.
pub(super) fn exchange(mut stream: UnixStream, req: &Request) -> Result<Response, String> {
    let body = req.encode().ok_or(
        "the working directory is not UTF-8 text, which the socket cannot carry; nothing was run",
    )?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .and_then(|()| protocol::write_frame(&mut stream, &body))
        .map_err(|e| format!("sending the command failed ({}); nothing was run", e.kind()))?;
    let reply = protocol::read_frame(&mut stream, MAX_RESPONSE).map_err(|e| match e {
        FrameError::TooLarge(n) => format!("the reply is too large ({n} bytes)"),
        FrameError::Io(e) => format!(
            "the server did not answer ({}); the command may or may not have run: check before \
             running it again",
            e.kind()
        ),
    })?;
    protocol::decode_reply(&reply)
        .map_err(|e| format!("the server refused the request ({e}); nothing was run"))
}

/// Prints the forwarded command's output as it came and returns its exit code.
fn print(resp: &Response) -> u8 {
    let out = std::io::stdout()
        .lock()
        .write_all(resp.stdout.as_bytes())
        .and_then(|()| std::io::stdout().lock().flush());
    let _ = std::io::stderr().lock().write_all(resp.stderr.as_bytes());
    match out {
        // A closed pipe is not an error worth reporting, as for a local run.
        Err(e) if e.kind() != ErrorKind::BrokenPipe => exit::FAILURE,
        _ => resp.code,
    }
}

/// Reports a failure to use the admin socket at `path`; exit 1.
fn fail(path: &Path, why: &str) -> u8 {
    crate::output::stderr_line(&format!(
        "kluis: error: the admin socket {}: {why}",
        path.display()
    ));
    exit::FAILURE
}
