//! An incremental Server-Sent Events parser (the WHATWG event-stream format): bytes in, events
//! out, whatever the chunking. Pure, bounded.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, `"message"` when absent.
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// The last event id in force when this event was dispatched (what `Last-Event-ID` sends back).
    pub id: Option<String>,
}

/// A line longer than the parser accepts (a misbehaving server, not a big snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line exceeds {0} bytes")]
pub struct LineTooLong(pub usize);

/// Largest line or event accepted by default: room for a configuration with many large flags.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Parser {
    max_line: usize,
    line: Vec<u8>,
    /// The previous chunk ended a line on `\r`: a `\n` opening the next chunk belongs to it.
    after_cr: bool,
    started: bool,
    event: String,
    data: String,
    last_id: Option<String>,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::new(DEFAULT_MAX_LINE)
    }
}

impl Parser {
    pub fn new(max_line: usize) -> Parser {
        Parser {
            max_line,
            line: Vec::new(),
            after_cr: false,
            started: false,
            event: String::new(),
            data: String::new(),
            last_id: None,
        }
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<Event>, LineTooLong> {
        let mut events = Vec::new();
        if !self.started && !chunk.is_empty() {
            self.started = true;
            chunk = chunk.strip_prefix("\u{feff}".as_bytes()).unwrap_or(chunk);
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&chunk[..end]);
            self.check_len()?;
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line) {
                events.push(event);
            }
            let was_cr = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            if was_cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(chunk);
        self.check_len()?;
        Ok(events)
    }

    fn check_len(&self) -> Result<(), LineTooLong> {
        if self.line.len() + self.data.len() > self.max_line {
            return Err(LineTooLong(self.max_line));
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            // `retry:` is not honoured: the client's own jittered backoff decides.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Event> {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        let event = if event.is_empty() { "message".to_owned() } else { event };
        Some(Event { event, data, id: self.last_id.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: Option<&str>) -> Event {
        Event { event: event.into(), data: data.into(), id: id.map(Into::into) }
    }

    const STREAM: &str = "event: snapshot\nid: 1\ndata: {\"flags\": []}\n\n: heartbeat\n\n\
                          event: change\nid: 2\ndata: {\"name\": \"a\",\ndata: \"deleted\": true}\n\n";

    fn expected() -> Vec<Event> {
        vec![
            ev("snapshot", "{\"flags\": []}", Some("1")),
            ev("change", "{\"name\": \"a\",\n\"deleted\": true}", Some("2")),
        ]
    }

    #[test]
    fn snapshot_heartbeat_and_change_parse_into_two_events() {
        let mut parser = Parser::default();
        assert_eq!(parser.push(STREAM.as_bytes()), Ok(expected()));
    }

    #[test]
    fn every_split_of_the_stream_yields_the_same_events() {
        for newline in ["\n", "\r\n", "\r"] {
            let stream = STREAM.replace('\n', newline);
            let bytes = stream.as_bytes();
            for cut in 0..=bytes.len() {
                let mut parser = Parser::default();
                let mut events = parser.push(&bytes[..cut]).expect("first half");
                events.extend(parser.push(&bytes[cut..]).expect("second half"));
                assert_eq!(events, expected(), "newline {newline:?} cut at {cut}");
            }
            let mut parser = Parser::default();
            let byte_by_byte: Vec<Event> =
                bytes.iter().flat_map(|b| parser.push(std::slice::from_ref(b)).expect("a byte")).collect();
            assert_eq!(byte_by_byte, expected(), "newline {newline:?} byte by byte");
        }
    }

    #[test]
    fn an_event_is_only_dispatched_by_its_blank_line() {
        let mut parser = Parser::default();
        assert_eq!(parser.push(b"event: change\ndata: x\n"), Ok(vec![]));
        assert_eq!(parser.push(b"\n"), Ok(vec![ev("change", "x", None)]));
    }

    #[test]
    fn fields_follow_the_spec_details() {
        let mut parser = Parser::default();
        let events = parser
            .push(
                "\u{feff}data:no space\n\ndata\n\nid: 7\nevent: x\n\nretry: 1500\nid: a\0b\ndata:  two\n\n".as_bytes(),
            )
            .expect("parse");
        // `data` without a colon is an empty data line; an event without data is not dispatched
        // but its id still counts; a NUL in an id is ignored; only the first space is stripped.
        assert_eq!(
            events,
            vec![ev("message", "no space", None), ev("message", "", None), ev("message", " two", Some("7"))]
        );
    }

    #[test]
    fn an_overlong_line_is_refused_instead_of_buffered() {
        let mut parser = Parser::new(16);
        assert_eq!(parser.push(b"data: 0123456789"), Ok(vec![]));
        assert_eq!(parser.push(b"abcdef"), Err(LineTooLong(16)));
    }
}
