//! The commit pipeline: operations into the pending segment, clock values, group commit,
//! uploading segments (and retrying stuck ones).

use super::*;

impl Inner {
    /// Queues operations (and a packed blob) into the pending segment, each with a fresh
    /// clock value. In `"fsync"` durability, returns once that segment is in the bucket; in
    /// `"os"`, at once (the operations are applied here already), uploading when the batch
    /// is full.
    pub(super) fn submit(&self, blob: Option<(&Digest, &[u8])>, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() && blob.is_none() {
            return Ok(());
        }
        let durable = self.durability == Durability::Fsync;
        let n = {
            let mut c = self.commit.lock();
            let hlc = self.tick();
            if c.pending.is_empty() {
                c.pending_since = Some(Instant::now());
            }
            if let Some((d, data)) = blob {
                c.pending.push_blob(d, data);
            }
            if !durable {
                // Visible here at once, with the keys the segment will give them, and so are
                // the packed bytes they name.
                let first = c.pending.ops.len() as u32;
                let mut st = self.state.lock();
                if let Some((d, data)) = blob {
                    st.unsent.insert(*d.bytes(), Arc::from(data));
                }
                // A record (or a pin that may revive one) naming packed bytes not stored yet
                // carries them in its own segment: whichever segment goes up first, and
                // even if the first one is stuck, no stored segment names a missing blob.
                for op in &ops {
                    let d = match op {
                        Op::Put(r) => Some(r.digest),
                        Op::Pin { id, .. } => st.ledger.digest_of(*id),
                        _ => None,
                    };
                    if let Some(data) = d.and_then(|d| st.unsent.get(d.bytes()).map(|b| (d, b))) {
                        c.pending.push_blob(&data.0, data.1);
                    }
                }
                for (i, op) in ops.iter().enumerate() {
                    st.ledger.apply(op, self.key(hlc, first + i as u32));
                }
            }
            for op in ops {
                c.pending.push_op(op, hlc);
            }
            let young = c
                .pending_since
                .is_some_and(|t| t.elapsed() < self.lease_trust());
            if !durable
                && young
                && c.pending.ops.len() < BATCH_OPS
                && c.pending.len_bytes() < BATCH_BYTES
            {
                return Ok(());
            }
            c.taken
        };
        let r = self.wait_for(n);
        if durable { r } else { Ok(()) } // a failed "os" batch is kept and retried by flush
    }

    pub(super) fn key(&self, hlc: u64, idx: u32) -> Key {
        Key {
            hlc,
            writer: self.writer.clone(),
            idx,
        }
    }

    /// A new clock value: after every value seen or made here.
    pub(super) fn tick(&self) -> u64 {
        let mut st = self.state.lock();
        st.hlc = (now_ms() << 16).max(st.hlc + 1);
        st.hlc
    }

    /// Waits until segment `n` is finished, uploading pending segments meanwhile when no one
    /// else is (group commit: one upload carries every operation queued while the previous
    /// one was in flight). Returns the segment's upload result.
    pub(super) fn wait_for(&self, n: u64) -> Result<()> {
        let mut c = self.commit.lock();
        loop {
            if c.finished > n {
                return match c.failed.get(&n) {
                    Some((kind, msg)) => Err(Error::new(*kind, msg.clone())),
                    None => Ok(()),
                };
            }
            if !c.flushing && !c.pending.is_empty() {
                c.flushing = true;
                let seg = std::mem::take(&mut c.pending);
                c.pending_since = None;
                let num = c.taken;
                c.taken += 1;
                drop(c);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.upload_segment(&seg, num)
                }))
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Io,
                        "internal error: segment upload panicked",
                    ))
                });
                c = self.commit.lock();
                c.flushing = false;
                c.finished = num + 1;
                if let Err(e) = r {
                    c.failed.insert(num, (e.kind(), e.message().to_string()));
                    if c.failed.len() > 4096 {
                        c.failed.pop_first();
                    }
                    if self.durability == Durability::Os {
                        c.stuck.push((num, seg));
                    }
                }
                self.committed.notify_all();
                continue;
            }
            self.committed.wait(&mut c);
        }
    }

    pub(super) fn flush(&self) -> Result<()> {
        if self.durability == Durability::Fsync {
            // Every acknowledged operation is stored already; a failed one was reported to
            // its caller and is not this call's to report again.
            return Ok(());
        }
        let last = {
            let c = self.commit.lock();
            if !c.pending.is_empty() {
                Some(c.taken)
            } else {
                c.taken.checked_sub(1)
            }
        };
        if let Some(n) = last {
            // A batch that fails here is kept as stuck and retried just below.
            let _ = self.wait_for(n);
        }
        // Segments that failed before: again, in order.
        let stuck = std::mem::take(&mut self.commit.lock().stuck);
        let mut first_err = None;
        let mut still = Vec::new();
        for (num, seg) in stuck {
            match self.upload_segment(&seg, num) {
                Ok(()) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                    still.push((num, seg));
                }
            }
        }
        if !still.is_empty() {
            let mut c = self.commit.lock();
            still.append(&mut c.stuck);
            c.stuck = still;
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Uploads one segment (their sequence numbers start at 1) and applies it here.
    pub(super) fn upload_segment(&self, seg: &SegmentBuf, num: u64) -> Result<()> {
        self.check_leases(seg)?;
        let seq = num + 1;
        let name = format!("log/{}/{seq:016}", self.writer);
        let (bytes, base) = seg.encode(&self.writer, seq);
        let bytes = Bytes::from(bytes);
        let key = self.key_path(&name);
        self.rt
            .block_on(self.s3.put(&key, PutPayload::from(bytes.clone())))
            .map_err(|e| obj_err("write index segment", key.as_ref(), e))?;
        // Stored: from here on nothing may fail the write. Without a cached copy the packed
        // bytes are fetched again by the next refresh that needs them.
        let cached = if seg.packed.is_empty() {
            None
        } else {
            self.cache_segment(&name, &bytes).ok()
        };
        let mut st = self.state.lock();
        if cached.is_some() || seg.packed.is_empty() {
            st.seen.insert(name);
        }
        if let Some(path) = cached {
            for (d, off, len) in &seg.packed {
                st.packed
                    .insert(*d.bytes(), (path.clone(), (base + off) as u64, *len));
                st.unsent.remove(d.bytes());
            }
        }
        if self.durability == Durability::Fsync {
            for (i, (op, hlc)) in seg.ops.iter().zip(&seg.hlcs).enumerate() {
                st.ledger.apply(op, self.key(*hlc, i as u32));
            }
        }
        Ok(())
    }

    /// Keeps a segment's bytes in the cache (for its packed blobs).
    pub(super) fn cache_segment(&self, name: &str, bytes: &[u8]) -> Result<Arc<Path>> {
        let path = self.segments_dir.join(name.replace('/', "-"));
        if !path.is_file() {
            crate::atomic::write_atomic(&path, bytes, Durability::Os)?;
        }
        Ok(Arc::from(path.as_path()))
    }
}
