//! Stats and verification of an S3 store: the same reports as a local store's
//! ([`crate::audit`]), over the bucket's objects and the merged index. A "path" in these
//! reports is an object's `s3://` URI. (Retention is one function for both stores:
//! [`crate::retention::keep_best`].)

use super::*;

use crate::audit::{IntegrityReport, MissingBlob, StoreStats, VerifyProgress};

impl RemoteStore {
    /// The `s3://` URI of an object, from its key relative to the prefix.
    fn object_uri(&self, rel: &str) -> PathBuf {
        let base = self.inner.uri_prefix.strip_suffix("blobs/").unwrap_or("");
        PathBuf::from(format!("{base}{rel}"))
    }

    /// The digests packed in segments this process has (their bytes live in the index).
    fn packed_digests(&self) -> HashSet<Digest> {
        let algo = self.inner.algo;
        let st = self.inner.state.lock();
        let keys = st.packed.keys().chain(st.unsent.keys());
        keys.map(|k| Digest::new(algo, *k)).collect()
    }

    /// Counts records, blobs and leftovers, and their bytes, from one listing of `blobs/`,
    /// `log/` and `snap/` and the index; hashes nothing.
    pub fn stats(&self) -> Result<StoreStats> {
        self.alive()?;
        self.refresh()?;
        let inner = &*self.inner;
        let objects = inner.rt.block_on(inner.blob_objects())?;
        let mut index_bytes = 0;
        for dir in ["log/", "snap/"] {
            index_bytes += inner
                .rt
                .block_on(inner.list_meta(dir))?
                .iter()
                .map(|(_, size, _)| size)
                .sum::<u64>();
        }
        let live = self.live_set(&HashSet::new())?;
        let mut s = StoreStats {
            index_bytes,
            ..StoreStats::of_live(&live)
        };
        let mut stored: HashSet<Digest> = self.packed_digests();
        for o in &objects {
            let Some(d) = o.digest else {
                s.stray_files += 1;
                continue;
            };
            stored.insert(d);
            s.disk_blobs += 1;
            s.disk_bytes += o.size;
            if !live.contains(&d) {
                s.orphan_blobs += 1;
                s.orphan_bytes += o.size;
            }
        }
        s.missing_blobs = live
            .named
            .keys()
            .chain(live.members.iter())
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|d| !stored.contains(d))
            .count() as u64;
        (s.staging_files, s.staging_bytes) =
            crate::audit::entries_and_bytes(inner.cache.staging_dir())?;
        Ok(s)
    }

    /// Re-hashes every blob object (streamed, not cached) and every packed blob, and
    /// compares the bucket with the index (see [`crate::Store::verify_report`]).
    pub fn verify_report(
        &self,
        progress: &mut dyn FnMut(&VerifyProgress) -> bool,
    ) -> Result<IntegrityReport> {
        self.alive()?;
        self.refresh()?;
        let inner = &*self.inner;
        let objects = inner.rt.block_on(inner.blob_objects())?;
        let mut p = VerifyProgress {
            total: objects.len() as u64,
            total_bytes: objects.iter().map(|o| o.size).sum(),
            ..VerifyProgress::default()
        };
        let mut r = IntegrityReport::default();
        let mut stored: HashSet<Digest> = HashSet::new();
        let mut present = Vec::new();
        for o in objects {
            p.done += 1;
            p.bytes += o.size;
            match o.digest {
                None => r.stray.push(self.object_uri(&o.key)),
                Some(d) => match inner.rt.block_on(inner.hash_object(&o.key)) {
                    Ok(Some(got)) => {
                        r.checked += 1;
                        r.checked_bytes += o.size;
                        if got != d {
                            r.corrupt.push((d, self.object_uri(&o.key)));
                        } else {
                            stored.insert(d);
                        }
                        present.push((d, o.key, o.size));
                    }
                    Ok(None) => {} // deleted since listed (a gc)
                    Err(e) => r
                        .unreadable
                        .push((self.object_uri(&o.key), e.message().to_string())),
                },
            }
            if !progress(&p) {
                return Err(Error::new(ErrorKind::Io, "verify was stopped"));
            }
        }
        let live = self.live_set(&HashSet::new())?;
        for (d, why) in &live.unreadable_trees {
            r.unreadable.push((
                self.object_uri(&inner.blob_rel(d)),
                format!("directory manifest: {why}"),
            ));
        }
        for d in self.packed_digests() {
            if !live.contains(&d) {
                continue;
            }
            match inner.read_packed(&d) {
                Ok(Some(data)) => {
                    r.checked += 1;
                    r.checked_bytes += data.len() as u64;
                    stored.insert(d);
                }
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    r.corrupt.push((d, PathBuf::from(format!("packed:{d}"))));
                    stored.insert(d); // damaged, not missing
                }
                Err(e) => r.unreadable.push((
                    PathBuf::from(format!("packed:{d}")),
                    e.message().to_string(),
                )),
            }
        }
        // Corrupt objects count as stored (damaged, not missing).
        stored.extend(r.corrupt.iter().map(|(d, _)| *d));
        for (d, key, size) in present {
            if !live.contains(&d) {
                r.orphaned.push((d, self.object_uri(&key), size));
            }
        }
        let absent: HashSet<Digest> = live
            .named
            .keys()
            .chain(live.members.iter())
            .filter(|d| !stored.contains(d))
            .copied()
            .collect();
        if !absent.is_empty() {
            r.missing = self.read(|m| {
                let mut by: std::collections::HashMap<Digest, Vec<ArtifactId>> =
                    std::collections::HashMap::new();
                for rec in m.iter() {
                    if absent.contains(&rec.digest) {
                        by.entry(rec.digest).or_default().push(rec.id);
                    }
                }
                let mut v: Vec<MissingBlob> = by
                    .into_iter()
                    .map(|(digest, records)| MissingBlob { digest, records })
                    .collect();
                v.sort_by_key(|b| b.digest);
                v
            })?;
            // Files of live directories that are missing: named by their directory.
            let named: HashSet<Digest> = r.missing.iter().map(|b| b.digest).collect();
            for d in absent.iter().filter(|d| !named.contains(d)) {
                r.missing.push(MissingBlob {
                    digest: *d,
                    records: Vec::new(),
                });
            }
        }
        r.corrupt.sort();
        r.orphaned.sort();
        r.stray.sort();
        r.unreadable.sort();
        Ok(r)
    }
}

impl Inner {
    /// The digest of an object's bytes, streamed (`None`: the object is gone).
    async fn hash_object(&self, rel: &str) -> Result<Option<Digest>> {
        let key = self.key_path(rel);
        let got = match self.s3.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(obj_err("read", key.as_ref(), e)),
        };
        let mut h = Hasher::new(self.algo);
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            h.update(&chunk.map_err(|e| obj_err("read", key.as_ref(), e))?);
        }
        Ok(Some(h.finalize()))
    }
}
