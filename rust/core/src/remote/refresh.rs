//! Reading what other writers stored: listing, fetching and applying segments and
//! snapshots, and packed bytes from cached segments.

use super::*;

impl Inner {
    /// The bytes of a packed blob this process has: from a cached segment, or acknowledged
    /// and not yet stored (`"os"` durability).
    pub(super) fn read_packed(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        let loc = {
            let st = self.state.lock();
            if let Some(data) = st.unsent.get(d.bytes()) {
                return Ok(Some(data.to_vec()));
            }
            st.packed.get(d.bytes()).cloned()
        };
        let Some((path, off, len)) = loc else {
            return Ok(None);
        };
        let f = std::fs::File::open(&*path).ctx("open", &path)?;
        let mut data = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut data, off).ctx("read", &path)?;
        if hash_bytes(self.algo, &data) != *d {
            return Err(Error::corrupt(format!(
                "packed blob {d} in cached segment {} does not match its digest",
                path.display()
            )));
        }
        Ok(Some(data))
    }

    /// Applies a segment's bytes (from the bucket or a snapshot).
    pub(super) fn apply_segment(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let seg = decode_segment(bytes, name)?;
        let cached = if seg.packed.is_empty() {
            None
        } else {
            Some(self.cache_segment(name, bytes)?)
        };
        let mut st = self.state.lock();
        if !st.seen.insert(name.to_string()) {
            return Ok(());
        }
        st.hlc = st.hlc.max(seg.hlc);
        if let Some(path) = cached {
            for (d, off, len) in &seg.packed {
                st.packed
                    .entry(*d.bytes())
                    .or_insert((path.clone(), *off as u64, *len));
                st.unsent.remove(d.bytes());
            }
        }
        for (i, (op, hlc)) in seg.ops.iter().zip(&seg.hlcs).enumerate() {
            st.ledger.apply(
                op,
                Key {
                    hlc: *hlc,
                    writer: seg.writer.clone(),
                    idx: i as u32,
                },
            );
        }
        Ok(())
    }

    /// Objects under `rel` (relative to the prefix): (key relative to the prefix, size,
    /// last-modified in ms by the bucket's clock).
    pub(super) async fn list_meta(&self, rel: &str) -> Result<Vec<(String, u64, i64)>> {
        let prefix = self.key_path(rel);
        let metas: Vec<object_store::ObjectMeta> = self
            .s3
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| obj_err("list", prefix.as_ref(), e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let rel = m.location.as_ref().strip_prefix(&self.prefix)?.to_string();
                Some((rel, m.size, m.last_modified.timestamp_millis()))
            })
            .collect())
    }

    /// The keys under `dir` (relative to the prefix), sorted.
    pub(super) async fn list_names(&self, dir: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list_meta(dir)
            .await?
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    pub(super) async fn get_bytes(&self, name: &str) -> Result<Option<Bytes>> {
        let key = self.key_path(name);
        let r = match self.s3.get(&key).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match r {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(obj_err("read", key.as_ref(), e)),
        }
    }

    /// Fetches objects by name, [`FETCH_CONCURRENCY`] at a time: (name, bytes or `None` if
    /// it is gone), in completion order.
    pub(super) fn fetch_all(
        &self,
        names: Vec<String>,
    ) -> impl futures::Stream<Item = (String, Result<Option<Bytes>>)> + '_ {
        futures::stream::iter(names)
            .map(move |n| async move {
                let b = self.get_bytes(&n).await;
                (n, b)
            })
            .buffer_unordered(FETCH_CONCURRENCY)
    }

    pub(super) async fn refresh(&self) -> Result<()> {
        let started = Instant::now();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let mut missing = false;
            // Segments first: a compaction writes its snapshot before it deletes the segments
            // in it, so a segment listed here and gone when fetched is in a snapshot listed
            // after it.
            for dir in ["log/", "snap/"] {
                let names: Vec<String> = {
                    let listed = self.list_names(dir).await?;
                    let st = self.state.lock();
                    listed
                        .into_iter()
                        .filter(|n| !st.seen.contains(n))
                        .collect()
                };
                let mut fetched = self.fetch_all(names);
                while let Some((name, got)) = fetched.next().await {
                    match got? {
                        // Deleted since listed: a compaction put it in a snapshot.
                        None => missing = true,
                        Some(bytes) if dir == "snap/" => self.apply_snapshot(&name, &bytes)?,
                        Some(bytes) => self.apply_segment(&name, &bytes)?,
                    }
                }
            }
            if !missing {
                break;
            }
            if rounds >= 5 {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{}: index objects kept disappearing while being read (5 rounds)",
                        self.url
                    ),
                ));
            }
        }
        self.state.lock().refreshed = Some(started);
        Ok(())
    }

    pub(super) fn apply_snapshot(&self, name: &str, bytes: &[u8]) -> Result<()> {
        for (part, range) in decode_snapshot(bytes, name)? {
            if part.starts_with("snap/") {
                self.state.lock().seen.insert(part);
            } else {
                self.apply_segment(&part, &bytes[range])?;
            }
        }
        self.state.lock().seen.insert(name.to_string());
        Ok(())
    }

    pub(super) async fn compact(&self) -> Result<usize> {
        self.refresh().await?;
        let names: Vec<String> = {
            let st = self.state.lock();
            let mut v: Vec<String> = st.seen.iter().cloned().collect();
            v.sort();
            v
        };
        let segs: Vec<&String> = names.iter().filter(|n| n.starts_with("log/")).collect();
        if segs.len() < 2 && names.iter().filter(|n| n.starts_with("snap/")).count() < 2 {
            return Ok(0);
        }
        // The bytes of every segment applied: from the bucket, or from the snapshots that
        // hold them.
        let mut parts: Vec<(String, Bytes)> = Vec::new();
        let mut have: HashSet<String> = HashSet::new();
        for snap in names.iter().filter(|n| n.starts_with("snap/")) {
            let Some(bytes) = self.get_bytes(snap).await? else {
                continue; // another compaction holds its bytes now
            };
            for (part, range) in decode_snapshot(&bytes, snap)? {
                if !part.starts_with("snap/") && have.insert(part.clone()) {
                    parts.push((part, bytes.slice(range)));
                }
            }
        }
        let wanted: Vec<String> = segs
            .iter()
            .filter(|n| !have.contains(n.as_str()))
            .map(|n| n.to_string())
            .collect();
        let mut fetched = self.fetch_all(wanted);
        let mut gone = Vec::new();
        while let Some((name, got)) = fetched.next().await {
            match got? {
                Some(b) => parts.push((name, b)),
                None => gone.push(name),
            }
        }
        drop(fetched);
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        let hlc = self.tick();
        let snap_name = format!("snap/{hlc:016x}-{}", self.writer);
        let mut listing: Vec<(String, &[u8])> =
            parts.iter().map(|(n, b)| (n.clone(), &b[..])).collect();
        // Older snapshots are named too, so a reader of this one knows them as seen.
        for old in names.iter().filter(|n| n.starts_with("snap/")) {
            listing.push((old.clone(), &[]));
        }
        let body = encode_snapshot(&listing);
        let key = self.key_path(&snap_name);
        self.s3
            .put(&key, PutPayload::from(body))
            .await
            .map_err(|e| obj_err("write snapshot", key.as_ref(), e))?;
        self.state.lock().seen.insert(snap_name);
        // Now every byte of these objects is in the new snapshot.
        let doomed: Vec<String> = parts
            .iter()
            .map(|(n, _)| n.clone())
            .chain(names.iter().filter(|n| n.starts_with("snap/")).cloned())
            .collect();
        let n = doomed.len();
        self.delete_all(doomed).await?;
        let _ = gone; // held by another snapshot already
        Ok(n)
    }
}
