//! The pool of opaque values this side hands to the exchanges it starts.
//! Opaques are CBOR tag numbers: at least 266, at most 15309735, never one of
//! the tags CBOR reserves. Fresh values are minted lazily (no preallocation),
//! and freed ones are reused oldest-first so a late frame for a finished
//! exchange is unlikely to meet a new one on the same opaque.

use std::collections::VecDeque;

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
    end: u64,
    next_fresh: u64,
    freed: VecDeque<u64>,
    capacity: u64,
}

impl OpaquePool {
    pub fn new(start: u64, end: u64) -> Result<Self> {
        validate_range(start, end)?;
        let capacity = (start..=end).filter(|o| is_valid(*o)).count() as u64;
        Ok(OpaquePool {
            end,
            next_fresh: start,
            freed: VecDeque::new(),
            capacity,
        })
    }

    /// How many exchanges can be in flight at once.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn take(&mut self) -> Option<u64> {
        if let Some(o) = self.freed.pop_front() {
            return Some(o);
        }
        while self.next_fresh <= self.end {
            let o = self.next_fresh;
            self.next_fresh += 1;
            if is_valid(o) {
                return Some(o);
            }
        }
        None
    }

    pub fn give(&mut self, opaque: u64) {
        self.freed.push_back(opaque);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_reserved_and_reuses_oldest_first() {
        let mut p = OpaquePool::new(1000, 1005).unwrap();
        assert_eq!(p.capacity(), 3);
        let got: Vec<u64> = std::iter::from_fn(|| p.take()).collect();
        assert_eq!(got, vec![1000, 1004, 1005]);
        p.give(1004);
        p.give(1000);
        assert_eq!(p.take(), Some(1004));
        assert_eq!(p.take(), Some(1000));
        assert_eq!(p.take(), None);
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
