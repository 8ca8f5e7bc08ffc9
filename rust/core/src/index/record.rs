//! Artifact records, their ids, label values and the string interner.
//!
//! Invariants:
//! - An `ArtifactId` is 128 bits: 48 bits of Unix milliseconds, then 24 bits of the writer's
//!   pid, then a 56-bit counter that starts at a random point and only grows within a process.
//!   Ids from one process are therefore strictly increasing; across processes they order by
//!   time to the millisecond. Rendered as 26 Crockford base32 characters (like a ULID).
//! - Metric values are finite; `-0.0` is stored as `0.0` so that equal values compare equal.
//! - Labels and metrics are kept sorted by key (interned symbol), each key at most once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::hash::Digest;

/// An interned string: an index into an `Interner`.
pub type Sym = u32;

/// Interns strings so that each distinct kind, scope id and label key/value is stored once.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    strings: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, Sym>,
}

impl Interner {
    /// An interner holding exactly `strings`, symbol `i` being `strings[i]`.
    pub fn from_strings(strings: Vec<Arc<str>>) -> Interner {
        let ids = strings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as Sym))
            .collect();
        Interner { strings, ids }
    }

    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as Sym;
        let arc: Arc<str> = Arc::from(s);
        self.strings.push(arc.clone());
        self.ids.insert(arc, id);
        id
    }

    /// The symbol of a string already interned, without adding it.
    pub fn lookup(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    pub fn get(&self, sym: Sym) -> &Arc<str> {
        &self.strings[sym as usize]
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    pub fn strings(&self) -> &[Arc<str>] {
        &self.strings
    }
}

/// An optional interned string in 4 bytes: the symbol plus one, 0 meaning none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptSym(u32);

impl OptSym {
    pub fn get(self) -> Option<Sym> {
        self.0.checked_sub(1)
    }
}

impl From<Option<Sym>> for OptSym {
    fn from(s: Option<Sym>) -> Self {
        OptSym(s.map_or(0, |s| s + 1))
    }
}

/// A time-ordered artifact id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactId(pub u128);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl ArtifactId {
    /// A new id for the current time; strictly greater than every id this process made before.
    pub fn generate(now_ms: u64) -> ArtifactId {
        if COUNTER.load(Ordering::Relaxed) == 0 {
            // A random start (from the clock's nanoseconds and the pid) keeps two processes
            // with a recycled pid from producing the same ids in the same millisecond.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(1);
            let seed = (nanos ^ (u64::from(std::process::id()) << 20))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> 24;
            let _ = COUNTER.compare_exchange(
                0,
                seed.max(1) & ((1 << 55) - 1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) & ((1 << 56) - 1);
        let pid = u128::from(std::process::id() & 0xFF_FFFF);
        ArtifactId((u128::from(now_ms & ((1 << 48) - 1)) << 80) | (pid << 56) | u128::from(n))
    }

    pub fn millis(self) -> u64 {
        (self.0 >> 80) as u64
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 26];
        let mut v = self.0;
        for slot in out.iter_mut().rev() {
            *slot = CROCKFORD[(v & 31) as usize];
            v >>= 5;
        }
        // 26 * 5 = 130 bits: the first character only carries the top 3 bits.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for ArtifactId {
    type Err = Error;

    fn from_str(s: &str) -> Result<ArtifactId> {
        let bad = || {
            Error::invalid(format!(
                "{s:?} is not an artifact id (26 base32 characters)"
            ))
        };
        if s.len() != 26 {
            return Err(bad());
        }
        let mut v: u128 = 0;
        for (i, c) in s.bytes().enumerate() {
            let d = match c.to_ascii_uppercase() {
                c @ b'0'..=b'9' => c - b'0',
                b'O' => 0,
                b'I' | b'L' => 1,
                c => match CROCKFORD.iter().position(|&x| x == c) {
                    Some(p) => p as u8,
                    None => return Err(bad()),
                },
            };
            if i == 0 && d > 7 {
                return Err(bad());
            }
            v = (v << 5) | u128::from(d);
        }
        Ok(ArtifactId(v))
    }
}

/// A label value, with strings interned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Str(Sym),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// A hashable, exact form of a `Value`: the key of a label posting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKey {
    Str(Sym),
    Int(i64),
    Float(u64),
    Bool(bool),
}

impl Value {
    pub fn key(self) -> ValueKey {
        match self {
            Value::Str(s) => ValueKey::Str(s),
            Value::Int(i) => ValueKey::Int(i),
            Value::Float(f) => ValueKey::Float(normalize_f64(f).to_bits()),
            Value::Bool(b) => ValueKey::Bool(b),
        }
    }
}

/// A label value that owns its string: what callers pass in and get back.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedValue {
    Str(Arc<str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

pub fn normalize_f64(v: f64) -> f64 {
    if v == 0.0 { 0.0 } else { v }
}

/// One artifact, as the index keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: ArtifactId,
    pub kind: Sym,
    pub digest: Digest,
    pub size: u64,
    /// Set only when the URI is not the blob's own `file://` path (derived from the digest).
    pub uri: Option<Arc<str>>,
    pub mime: OptSym,
    pub created_us: i64,
    pub run_id: OptSym,
    pub graph_id: OptSym,
    pub node_id: OptSym,
    pub project_id: OptSym,
    pub labels: Box<[(Sym, Value)]>,
    pub metrics: Box<[(Sym, f64)]>,
    pub pinned: bool,
}

impl Record {
    pub fn metric(&self, key: Sym) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, v)| v)
    }
}

/// A record with its strings resolved: what leaves the index.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedRecord {
    pub id: ArtifactId,
    pub kind: Arc<str>,
    pub digest: Digest,
    pub size: u64,
    pub uri: Option<Arc<str>>,
    pub mime: Option<Arc<str>>,
    pub created_us: i64,
    pub run_id: Option<Arc<str>>,
    pub graph_id: Option<Arc<str>>,
    pub node_id: Option<Arc<str>>,
    pub project_id: Option<Arc<str>>,
    pub labels: Vec<(Arc<str>, OwnedValue)>,
    pub metrics: Vec<(Arc<str>, f64)>,
    pub pinned: bool,
}

/// What a caller says about a new artifact (everything but its bytes, id and time).
#[derive(Debug, Clone, Default)]
pub struct RecordMeta {
    pub kind: String,
    pub mime: Option<String>,
    pub uri: Option<String>,
    pub run_id: Option<String>,
    pub graph_id: Option<String>,
    pub node_id: Option<String>,
    pub project_id: Option<String>,
    pub labels: Vec<(Arc<str>, OwnedValue)>,
    pub metrics: Vec<(Arc<str>, f64)>,
    pub pinned: bool,
}

impl RecordMeta {
    /// The record these fields describe, for the given blob, id and time.
    pub fn to_record(
        &self,
        id: ArtifactId,
        created_us: i64,
        digest: Digest,
        size: u64,
    ) -> OwnedRecord {
        let a = |s: &Option<String>| s.as_deref().map(Arc::from);
        OwnedRecord {
            id,
            kind: Arc::from(self.kind.as_str()),
            digest,
            size,
            uri: a(&self.uri),
            mime: a(&self.mime),
            created_us,
            run_id: a(&self.run_id),
            graph_id: a(&self.graph_id),
            node_id: a(&self.node_id),
            project_id: a(&self.project_id),
            labels: self.labels.clone(),
            metrics: self.metrics.clone(),
            pinned: self.pinned,
        }
    }
}

/// Checks what a caller asks to record; every problem is an `InvalidArgument` error.
pub fn validate_new(r: &OwnedRecord) -> Result<()> {
    validate_kind(&r.kind)?;
    let mut seen = std::collections::HashSet::new();
    for (k, v) in &r.labels {
        if !seen.insert(k.as_ref()) {
            return Err(Error::invalid(format!("label {k:?} given twice")));
        }
        if let OwnedValue::Float(f) = v
            && !f.is_finite()
        {
            return Err(Error::invalid(format!(
                "label {k:?} must be finite, got {f}"
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in &r.metrics {
        if !seen.insert(k.as_ref()) {
            return Err(Error::invalid(format!("metric {k:?} given twice")));
        }
        if !v.is_finite() {
            return Err(Error::invalid(format!(
                "metric {k:?} must be a finite number, got {v}"
            )));
        }
    }
    for (name, v) in [
        ("run_id", &r.run_id),
        ("graph_id", &r.graph_id),
        ("node_id", &r.node_id),
        ("project_id", &r.project_id),
    ] {
        if let Some(v) = v
            && v.contains('\0')
        {
            return Err(Error::invalid(format!("{name} must not contain NUL")));
        }
    }
    Ok(())
}

pub fn validate_kind(kind: &str) -> Result<()> {
    if kind.is_empty() {
        return Err(Error::invalid("kind must not be empty"));
    }
    if kind.contains(['/', '\\', '\0']) || kind == "." || kind == ".." {
        return Err(Error::invalid(format!(
            "kind {kind:?} must not contain path separators or NUL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_order() {
        let a = ArtifactId::generate(1_795_423_267_500);
        let b = ArtifactId::generate(1_795_423_267_500);
        assert!(b > a);
        let (sa, sb) = (a.to_string(), b.to_string());
        assert_eq!(sa.len(), 26);
        assert!(sb > sa, "string order follows id order");
        assert_eq!(sa.parse::<ArtifactId>().unwrap(), a);
        assert_eq!(a.millis(), 1_795_423_267_500);
        assert!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<ArtifactId>().is_err());
        assert!("short".parse::<ArtifactId>().is_err());
    }

    #[test]
    fn interner_dedups() {
        let mut i = Interner::default();
        let a = i.intern("x");
        assert_eq!(i.intern("x"), a);
        assert_ne!(i.intern("y"), a);
        assert_eq!(&**i.get(a), "x");
        assert_eq!(i.lookup("z"), None);
    }
}
