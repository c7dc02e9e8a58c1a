//! A lean HTTP/1.1 keep-alive client for the load generator, in the manner of wrk: one connection per
//! sender, the request's bytes built once, and of the answer only the status and the length read.
//! The load generator shares two cores with the broker and ingest, so every microsecond it spends
//! per request is taken from what it measures; a general client (reqwest) spends about three times
//! as much.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct KeepAliveClient {
    stream: TcpStream,
    request: Vec<u8>,
    buffer: Vec<u8>,
}

impl KeepAliveClient {
    /// A connection to `host_port` (`127.0.0.1:PORT`) that will POST `body` to `path`, again and again.
    pub async fn connect(host_port: &str, path: &str, body: &[u8]) -> io::Result<Self> {
        let stream = TcpStream::connect(host_port).await?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        Ok(KeepAliveClient { stream, request, buffer: Vec::with_capacity(1024) })
    }

    /// Sends the request once and reads the whole answer; returns its status code.
    pub async fn post(&mut self) -> io::Result<u16> {
        self.stream.write_all(&self.request).await?;
        self.buffer.clear();
        loop {
            if let Some(answer) = parse_answer(&self.buffer)? {
                if self.buffer.len() >= answer.length {
                    return Ok(answer.status);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// Head and body together, in bytes.
    length: usize,
}

/// The status and total length of the answer at the start of `bytes`, once its head is complete.
fn parse_answer(bytes: &[u8]) -> io::Result<Option<Answer>> {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else { return Ok(None) };
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("an HTTP answer without {what}"));
    let head = std::str::from_utf8(&bytes[..head_end]).map_err(|_| invalid("a readable head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("a status"))?;
    let body_length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>().map_err(|_| invalid("a readable content-length")))
        .transpose()?
        .ok_or_else(|| invalid("a content-length"))?;
    Ok(Some(Answer { status, length: head_end + body_length }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_once_its_head_is_complete() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: application/json\r\n\r\n{\"a\"}";
        assert_eq!(parse_answer(&answer[..20]).unwrap(), None);
        let parsed = parse_answer(answer).unwrap().unwrap();
        assert_eq!(parsed, Answer { status: 200, length: answer.len() });
        assert_eq!(
            parse_answer(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap().status,
            503
        );
    }

    #[test]
    fn an_answer_without_a_length_is_an_error() {
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
    }
}
