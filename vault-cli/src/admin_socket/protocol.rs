//! The admin socket's wire format: one request per connection, then one reply. Each is a 4-byte
//! big-endian length and that many bytes of JSON. A reply is either the command's outcome
//! (`{"stdout", "stderr", "code"}`) or a protocol error (`{"error"}`: the request was not run).

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{Request, Response};

/// The largest request a server reads: arguments and a working directory are small, and a
/// client must not make the server allocate at will.
pub const MAX_REQUEST: u32 = 64 * 1024;

/// The largest reply a client reads (an `audit show` or `export` of a big vault can be large).
pub const MAX_RESPONSE: u32 = 1 << 30;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The announced length is over the cap; the body was not read.
    TooLarge(u32),
    /// The peer closed the connection, timed out or failed.
    Io(std::io::Error),
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Reads one frame of at most `max` bytes. The buffer is wiped on drop: a request can carry a
/// value to find, and a reply an export.
pub fn read_frame(r: &mut impl Read, max: u32) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Zeroizing::new(vec![0u8; len as usize]);
    r.read_exact(&mut body).map_err(FrameError::Io)?;
    Ok(body)
}

impl Request {
    /// The request as JSON (`None` if the working directory is not UTF-8).
    pub fn encode(&self) -> Option<Zeroizing<Vec<u8>>> {
        let v = json!({
            "argv": self.argv,
            "cwd": self.cwd.to_str()?,
            "actor": self.actor,
            "stdin_line": self.stdin_line,
            "vault": self.vault,
        });
        Some(Zeroizing::new(v.to_string().into_bytes()))
    }

    /// Reads a request; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Request> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let argv = v
            .get("argv")?
            .as_array()?
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        let stdin_line = match v.get("stdin_line") {
            None | Some(Value::Null) => None,
            Some(s) => Some(s.as_str()?.to_owned()),
        };
        let vault = match v.get("vault") {
            None | Some(Value::Null) => None,
            Some(s) => Some(s.as_str()?.to_owned()),
        };
        Some(Request {
            argv,
            cwd: PathBuf::from(v.get("cwd")?.as_str()?),
            actor: v.get("actor")?.as_str()?.to_owned(),
            stdin_line,
            vault,
        })
    }
}

impl Response {
    /// The reply carrying this outcome, as JSON.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let v = json!({ "stdout": self.stdout, "stderr": self.stderr, "code": self.code });
        Zeroizing::new(v.to_string().into_bytes())
    }
}

/// A protocol-error reply, as JSON.
pub fn encode_error(message: &str) -> Vec<u8> {
    json!({ "error": message }).to_string().into_bytes()
}

/// Reads a reply: the command's outcome, or the server's protocol error message.
pub fn decode_reply(bytes: &[u8]) -> Result<Response, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|_| "a reply that is not JSON")?;
    if let Some(e) = v.get("error") {
        return Err(e.as_str().unwrap_or("an unreadable error").to_owned());
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let code = v
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u8::try_from(c).ok());
    match (text("stdout"), text("stderr"), code) {
        (Some(stdout), Some(stderr), Some(code)) => Ok(Response {
            stdout,
            stderr,
            code,
        }),
        _ => Err("a reply without stdout, stderr and code".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_round_trip() {
        let req = Request {
            argv: vec!["status".into(), "--json".into()],
            cwd: PathBuf::from("/tmp/x"),
            actor: "alice".into(),
            stdin_line: None,
            vault: None,
        };
        let mut wire = Vec::new();
        write_frame(&mut wire, &req.encode().unwrap()).unwrap();
        let body = read_frame(&mut wire.as_slice(), MAX_REQUEST).unwrap();
        assert_eq!(Request::decode(&body), Some(req));
        let resp = Response {
            stdout: "a\n".into(),
            stderr: String::new(),
            code: 5,
        };
        assert_eq!(decode_reply(&resp.encode()), Ok(resp));
        assert_eq!(decode_reply(&encode_error("busy")), Err("busy".to_owned()));
    }

    #[test]
    fn an_oversized_frame_is_refused_unread() {
        let wire = (MAX_REQUEST + 1).to_be_bytes();
        assert!(matches!(
            read_frame(&mut wire.as_slice(), MAX_REQUEST),
            Err(FrameError::TooLarge(n)) if n == MAX_REQUEST + 1
        ));
    }
}
