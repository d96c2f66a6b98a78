//! Per-transport settings: the validated, typed form of the Python settings
//! dict. Defaults live here so the Rust core and `default_settings()` agree.

use std::time::Duration;

use crate::codec::compress::{parse_tags, Encoding};
use crate::errors::{Error, Result};
use crate::opaque;

/// Which end of the connection a transport is. It only picks the default
/// opaque range, so that two peers of this package never overlap, and both
/// stay clear of the reference's default 1000..5000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

pub const DIALER_OPAQUES: (u64, u64) = (10_000, 19_999);
pub const ACCEPTOR_OPAQUES: (u64, u64) = (30_000, 39_999);

#[derive(Clone, Debug)]
pub struct Settings {
    /// Advertised to the peer in whoami; also the read buffer's capacity
    /// (only the pages traffic writes become resident).
    pub buffersize: u64,
    /// Frames queued before a write is due without an explicit flush.
    pub batchsize: usize,
    /// Encodings this side wants to *receive*, told to the peer in whoami.
    pub tags: Vec<Encoding>,
    pub opaque_start: u64,
    pub opaque_end: u64,
    pub gzip_level: u32,
    /// Largest frame accepted from the peer; a longer one closes the connection.
    pub max_frame: usize,
    /// Bytes queued for the socket before application senders block.
    pub max_pending: usize,
    /// How long batched frames may wait; `None` = only batchsize/flush.
    pub flush_period: Option<Duration>,
    /// Default timeout of `request()`; `None` waits until the connection ends.
    pub request_timeout: Option<Duration>,
    /// Most live streams the peer may have opened at once; a STREAM-START
    /// beyond it is answered with FINISH and dropped.
    pub max_streams: usize,
    /// Closes the connection after this long without a received byte;
    /// `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Advertise the `x-errors` extension (docs/protocol.md §9); on by
    /// default, it is used only when the peer's whoami advertises it too
    /// (the Go reference never does: it logs the tag once and ignores it).
    pub errors_ext: bool,
    /// Read by the process's shared reader (one epoll thread for every such
    /// transport) rather than a reader thread of its own: `reader: "shared"`.
    pub shared_reader: bool,
}

/// The largest opaque range a peer with default settings uses (ours are
/// 10,000 opaques; the Go reference's 1000..5000 is 4,001): no such peer
/// can be refused a stream, while a hostile one is held to a bounded table.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;

/// The longest `idle.timeout`: poll()'s limit, i32::MAX milliseconds.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl Settings {
    pub fn defaults(role: Role) -> Self {
        let (opaque_start, opaque_end) = match role {
            Role::Dialer => DIALER_OPAQUES,
            Role::Acceptor => ACCEPTOR_OPAQUES,
        };
        Settings {
            buffersize: 256 * 1024,
            batchsize: 1,
            tags: Vec::new(),
            opaque_start,
            opaque_end,
            gzip_level: 1,
            max_frame: 16 * 1024 * 1024,
            max_pending: 1024 * 1024,
            flush_period: Some(Duration::from_millis(5)),
            request_timeout: Some(Duration::from_secs(30)),
            max_streams: DEFAULT_MAX_STREAMS,
            idle_timeout: None,
            errors_ext: true,
            shared_reader: false,
        }
    }

    /// Checks the combination; each message names the setting at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Settings(m));
        opaque::validate_range(self.opaque_start, self.opaque_end)?;
        if self.batchsize == 0 {
            return bad("batchsize must be at least 1".into());
        }
        if !(1024..=(1 << 31)).contains(&self.max_frame) {
            return bad(format!(
                "frame.max {} must be within 1 KiB..2 GiB",
                self.max_frame
            ));
        }
        if self.max_pending < 64 * 1024 {
            return bad(format!(
                "pending.max {} must be at least 64 KiB",
                self.max_pending
            ));
        }
        if self.gzip_level > 9 {
            return bad(format!(
                "gzip.level {} must be within 0..9",
                self.gzip_level
            ));
        }
        if self.buffersize < 512 || self.buffersize > self.max_frame as u64 {
            return bad(format!(
                "buffersize {} must be within 512..frame.max",
                self.buffersize
            ));
        }
        if self.flush_period.is_some_and(|p| p.is_zero()) {
            return bad("flush.period must be positive or None".into());
        }
        if self.request_timeout.is_some_and(|p| p.is_zero()) {
            return bad("request.timeout must be positive or None".into());
        }
        if self.max_streams == 0 {
            return bad("streams.max must be at least 1".into());
        }
        // poll() takes whole milliseconds in an i32: 1 ms .. 24 days.
        if self
            .idle_timeout
            .is_some_and(|t| t < Duration::from_millis(1) || t > MAX_IDLE_TIMEOUT)
        {
            return bad(format!(
                "idle.timeout must be within 0.001..{} s, or None",
                MAX_IDLE_TIMEOUT.as_secs()
            ));
        }
        Ok(())
    }

    pub fn set_tags(&mut self, csv: &str) -> Result<()> {
        let tags =
            parse_tags(csv).map_err(|t| Error::Settings(format!("tags: unknown tag {t:?}")))?;
        if let Some(twice) = tags
            .iter()
            .find(|t| tags.iter().filter(|u| u == t).count() > 1)
        {
            return Err(Error::Settings(format!(
                "tags: {:?} is given twice in {csv:?}",
                twice.name()
            )));
        }
        self.tags = tags;
        Ok(())
    }

    /// The tags string carried in whoami, e.g. `gzip` or `gzip,lzw`.
    pub fn tags_csv(&self) -> String {
        let names: Vec<&str> = self.tags.iter().map(|e| e.name()).collect();
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ranges_avoid_each_other_and_the_reference() {
        for (s, e) in [DIALER_OPAQUES, ACCEPTOR_OPAQUES] {
            assert!(s > 5000 && e > s);
        }
        assert!(DIALER_OPAQUES.1 < ACCEPTOR_OPAQUES.0);
        Settings::defaults(Role::Dialer).validate().unwrap();
        Settings::defaults(Role::Acceptor).validate().unwrap();
    }

    #[test]
    fn rejects_bad_values() {
        let mut s = Settings::defaults(Role::Dialer);
        s.batchsize = 0;
        assert!(s.validate().is_err());
        let mut s = Settings::defaults(Role::Dialer);
        s.opaque_start = 100;
        assert!(s.validate().is_err());
        let mut s = Settings::defaults(Role::Dialer);
        s.max_streams = 0;
        assert!(s.validate().is_err());
        let mut s = Settings::defaults(Role::Dialer);
        s.idle_timeout = Some(Duration::ZERO);
        assert!(s.validate().is_err());
        s.idle_timeout = Some(MAX_IDLE_TIMEOUT + Duration::from_millis(1));
        assert!(s.validate().is_err());
        for ok in [Duration::from_millis(1), MAX_IDLE_TIMEOUT] {
            s.idle_timeout = Some(ok);
            s.validate().unwrap();
        }
        let mut s = Settings::defaults(Role::Dialer);
        assert!(s.set_tags("zstd").is_err());
        assert!(s.set_tags("gzip,gzip").is_err());
        let mut s = Settings::defaults(Role::Dialer);
        s.request_timeout = Some(Duration::ZERO);
        assert!(s.validate().is_err());
        let mut s = Settings::defaults(Role::Dialer);
        s.set_tags(" gzip , lzw").unwrap();
        assert_eq!(s.tags_csv(), "gzip,lzw");
    }
}
