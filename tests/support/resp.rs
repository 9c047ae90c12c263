//! One Redis command sent by hand: the tests that prove a server really echoes
//! what it is sent (so a "never shows the password" check cannot pass vacuously).

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// One command in RESP to `127.0.0.1:port`, and the first line of the reply.
pub fn raw_exchange(port: u16, parts: &[&str], timeout: Duration) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut frame = format!("*{}\r\n", parts.len());
    for part in parts {
        frame.push_str(&format!("${}\r\n{part}\r\n", part.len()));
    }
    stream.write_all(frame.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}
