//! A tiny blocking HTTP/1.1 client over `TcpStream`, for the server's tests and the load
//! test: one request per connection (`Connection: close`), chunked bodies decoded, and a
//! reader of server-sent events that can stop (disconnect) at any point. Loopback only by
//! intent; it is not a general client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A whole response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{e}: {}", self.text()))
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// A request head and body as bytes (`Content-Length` set when there is a body).
pub fn request_bytes(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(b) = body {
        out += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        );
    }
    out += "\r\n";
    let mut out = out.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

/// An open response whose body is read as it arrives.
pub struct Streaming {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    chunked: bool,
    /// Bytes left: of the current chunk (chunked) or of the body (Content-Length).
    left: Option<usize>,
    done: bool,
    buf: Vec<u8>,
}

impl Streaming {
    /// Sends `raw` (a whole request) and reads the status line and headers.
    pub fn open(addr: SocketAddr, raw: &[u8], timeout: Duration) -> std::io::Result<Streaming> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        // The server may answer (413) and close before reading everything: still read the answer.
        let _ = stream.write_all(raw);
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let left = if chunked {
            None
        } else {
            get("content-length").and_then(|v| v.parse().ok())
        };
        Ok(Streaming {
            reader,
            status,
            headers,
            chunked,
            left,
            done: false,
            buf: Vec::new(),
        })
    }

    /// The next piece of the body; `None` at its end.
    pub fn read_some(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        if self.chunked {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                self.done = true;
                return Ok(None);
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            let mut data = vec![0; size];
            self.reader.read_exact(&mut data)?;
            let mut crlf = [0; 2];
            self.reader.read_exact(&mut crlf)?;
            if size == 0 {
                self.done = true;
                return Ok(None);
            }
            Ok(Some(data))
        } else {
            let mut data = vec![0; self.left.unwrap_or(64 * 1024).min(64 * 1024)];
            if data.is_empty() {
                self.done = true;
                return Ok(None);
            }
            let n = self.reader.read(&mut data)?;
            if n == 0 {
                self.done = true;
                return Ok(None);
            }
            data.truncate(n);
            if let Some(left) = &mut self.left {
                *left -= n;
            }
            Ok(Some(data))
        }
    }

    /// The whole (rest of the) body.
    pub fn read_all(mut self) -> std::io::Result<Response> {
        let mut body = std::mem::take(&mut self.buf);
        while let Some(d) = self.read_some()? {
            body.extend_from_slice(&d);
        }
        Ok(Response {
            status: self.status,
            headers: self.headers,
            body,
        })
    }

    /// The next server-sent event's `data` (`None` at the end of the body).
    pub fn next_event(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event[..end]).into_owned();
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return Ok(Some(data.join("\n")));
            }
            match self.read_some()? {
                Some(d) => self.buf.extend_from_slice(&d),
                None => return Ok(None),
            }
        }
    }
}

/// Sends `raw` and reads the whole response.
pub fn send_raw(addr: SocketAddr, raw: &[u8], timeout: Duration) -> std::io::Result<Response> {
    Streaming::open(addr, raw, timeout)?.read_all()
}

/// `POST path` with a JSON body.
pub fn post(
    addr: SocketAddr,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<Response> {
    send_raw(
        addr,
        &request_bytes("POST", path, Some(body.as_bytes())),
        timeout,
    )
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Response> {
    send_raw(addr, &request_bytes("GET", path, None), timeout)
}

/// The events of a whole streamed response, `[DONE]` included.
pub fn post_stream(
    addr: SocketAddr,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, Vec<String>)> {
    let mut s = Streaming::open(
        addr,
        &request_bytes("POST", path, Some(body.as_bytes())),
        timeout,
    )?;
    let status = s.status;
    let mut events = Vec::new();
    while let Some(e) = s.next_event()? {
        events.push(e);
    }
    Ok((status, events))
}
