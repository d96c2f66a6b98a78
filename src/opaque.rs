//! The pool of opaque values this side hands to the exchanges it starts.
//! Opaques are CBOR tag numbers: at least 266, at most 15309735, never one of
//! the tags CBOR reserves. The pool is a cursor going round the range (as the
//! reference does), skipping opaques still in use: a freed opaque comes back
//! only after every other one has had its turn, so a late frame for a
//! finished exchange is unlikely to meet a new one. It stores nothing per
//! opaque.

use crate::errors::{Error, Result};

pub const MIN_OPAQUE: u64 = 266;
pub const MAX_OPAQUE: u64 = 15_309_735;
const RESERVED: [u64; 5] = [1001, 1002, 1003, 22098, 55799];

pub fn is_valid(opaque: u64) -> bool {
    (MIN_OPAQUE..=MAX_OPAQUE).contains(&opaque) && !RESERVED.contains(&opaque)
}

pub fn validate_range(start: u64, end: u64) -> Result<()> {
    if start < MIN_OPAQUE || end > MAX_OPAQUE || start > end {
        return Err(Error::Settings(format!(
            "opaque range {start}..{end} must lie within {MIN_OPAQUE}..{MAX_OPAQUE}"
        )));
    }
    if (start..=end).all(|o| !is_valid(o)) {
        return Err(Error::Settings(format!(
            "opaque range {start}..{end} holds only reserved tags"
        )));
    }
    Ok(())
}

#[derive(Debug)]
pub struct OpaquePool {
    start: u64,
    end: u64,
    cursor: u64,
    capacity: u64,
}

impl OpaquePool {
    pub fn new(start: u64, end: u64) -> Result<Self> {
        validate_range(start, end)?;
        let capacity = (start..=end).filter(|o| is_valid(*o)).count() as u64;
        Ok(OpaquePool {
            start,
            end,
            cursor: start,
            capacity,
        })
    }

    /// Whether `opaque` lies in this side's range.
    pub fn contains(&self, opaque: u64) -> bool {
        (self.start..=self.end).contains(&opaque)
    }

    /// How many exchanges can be in flight at once.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The next opaque after the last one handed out that `in_use` rejects
    /// not; `None` when every one of the range is in use.
    pub fn take(&mut self, in_use: impl Fn(u64) -> bool) -> Option<u64> {
        let span = self.end - self.start + 1;
        for _ in 0..span {
            let o = self.cursor;
            self.cursor = if o == self.end { self.start } else { o + 1 };
            if is_valid(o) && !in_use(o) {
                return Some(o);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_round_the_range_skipping_reserved_and_busy() {
        let mut p = OpaquePool::new(1000, 1005).unwrap();
        assert_eq!(p.capacity(), 3);
        let free = |_| false;
        assert_eq!(p.take(free), Some(1000));
        assert_eq!(p.take(free), Some(1004));
        assert_eq!(p.take(|o| o == 1005), Some(1000), "1005 busy: wraps round");
        assert_eq!(p.take(free), Some(1004));
        assert_eq!(p.take(|_| true), None);
    }

    #[test]
    fn a_freed_opaque_waits_for_the_others() {
        let mut p = OpaquePool::new(2000, 2009).unwrap();
        let first = p.take(|_| false).unwrap();
        // `first` is free again at once, yet the other nine come first.
        let next: Vec<u64> = (0..9).map(|_| p.take(|_| false).unwrap()).collect();
        assert!(!next.contains(&first));
        assert_eq!(p.take(|_| false), Some(first));
    }

    #[test]
    fn rejects_invalid_ranges() {
        assert!(OpaquePool::new(100, 2000).is_err());
        assert!(OpaquePool::new(2000, 1000).is_err());
        assert!(OpaquePool::new(1001, 1003).is_err());
        assert!(OpaquePool::new(266, MAX_OPAQUE + 1).is_err());
        assert!(OpaquePool::new(22098, 22098).is_err());
    }
}
