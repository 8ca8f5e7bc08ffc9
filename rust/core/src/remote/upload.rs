//! Blob objects: uploads of bytes and files (multipart above `MULTIPART_MIN`, create-only),
//! whether the bucket holds one, and fetching one.
//!
//! Invariant (the writer half of the gc protocol, see [`super::gc`]): a blob is relied on
//! (not uploaded again) only under a key that no gc marker known here names, and only on a
//! confirmation younger than the lease allows; uploads never go to a marked key.

use super::*;

impl Inner {
    /// Uploads a blob held in memory unless the bucket has it.
    pub(super) fn upload_bytes(&self, d: &Digest, data: Bytes) -> Result<()> {
        if self.locate(d, false)?.is_some() {
            return Ok(());
        }
        let rel = self.fresh_key(d);
        let key = self.key_path(&rel);
        self.rt.block_on(async {
            if data.len() <= MULTIPART_MIN {
                self.s3
                    .put(&key, PutPayload::from(data))
                    .await
                    .map(|_| ())
                    .map_err(|e| obj_err("upload", key.as_ref(), e))
            } else {
                let chunks = (0..data.len())
                    .step_by(MEM_PART)
                    .map(|at| data.slice(at..(at + MEM_PART).min(data.len())));
                self.multipart(&key, futures::stream::iter(chunks.map(Ok)), None)
                    .await
            }
        })?;
        self.confirm(d, &rel);
        Ok(())
    }

    /// Where a new upload of `d` goes: its primary key, unless a gc marked that key.
    fn fresh_key(&self, d: &Digest) -> String {
        let primary = self.blob_rel(d);
        if self.is_condemned(&primary) {
            let n = self.tick();
            format!("{primary}.{}{n:x}", self.writer)
        } else {
            primary
        }
    }

    fn confirm(&self, d: &Digest, rel: &str) {
        self.state
            .lock()
            .remote_blobs
            .insert(*d.bytes(), (Arc::from(rel), Instant::now()));
    }

    /// The key under which the bucket holds `d` and that no known gc marker names, or `None`.
    /// A recent confirmation is trusted unless `force`. When every key of `d` is marked, one
    /// is copied (inside the bucket) to a new key, which no marker can name.
    pub(super) fn locate(&self, d: &Digest, force: bool) -> Result<Option<Arc<str>>> {
        if !force
            && let Some((k, t)) = self.state.lock().remote_blobs.get(d.bytes())
            && t.elapsed() < self.lease_trust()
        {
            return Ok(Some(k.clone()));
        }
        self.condemned_fresh()?;
        let primary = self.blob_rel(d);
        if !self.is_condemned(&primary) {
            let key = self.key_path(&primary);
            return match self.rt.block_on(self.s3.head(&key)) {
                Ok(_) => {
                    self.confirm(d, &primary);
                    Ok(Some(Arc::from(primary.as_str())))
                }
                // A copy under another key may exist, but uploading to the primary key is
                // correct too, and costs no listing in the common case of a new blob.
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(obj_err("head", key.as_ref(), e)),
            };
        }
        let keys = self.rt.block_on(self.keys_of(d))?;
        if let Some(k) = keys.iter().find(|k| !self.is_condemned(k)) {
            self.confirm(d, k);
            return Ok(Some(Arc::from(k.as_str())));
        }
        let rel = self.fresh_key(d);
        for from in &keys {
            let r = self
                .rt
                .block_on(self.s3.copy(&self.key_path(from), &self.key_path(&rel)));
            match r {
                Ok(()) => {
                    self.confirm(d, &rel);
                    return Ok(Some(Arc::from(rel.as_str())));
                }
                Err(object_store::Error::NotFound { .. }) => continue, // deleted meanwhile
                Err(e) => return Err(obj_err("copy", from, e)),
            }
        }
        Ok(None)
    }

    /// Every key (relative to the prefix) holding blob `d`: its primary key and its copies.
    pub(super) async fn keys_of(&self, d: &Digest) -> Result<Vec<String>> {
        let primary = self.blob_rel(d);
        // Listing is by directory (object_store's prefixes are whole path segments).
        let dir = &primary[..primary.len() - 62];
        let mut keys: Vec<String> = self
            .list_meta(dir)
            .await?
            .into_iter()
            .map(|m| m.0)
            .filter(|k| k == &primary || k.starts_with(&format!("{primary}.")))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Uploads a file as blob `d` unless the bucket has it. Large files go up in parts that
    /// are hashed as they are read; a mismatch with `d` (the file changed) aborts the upload.
    pub(super) fn upload_file(&self, d: &Digest, src: &Path) -> Result<()> {
        if self.locate(d, false)?.is_some() {
            return Ok(());
        }
        let size = std::fs::metadata(src).ctx("stat", src)?.len();
        if size <= READ_WHOLE_MAX {
            let data = std::fs::read(src).ctx("read", src)?;
            if hash_bytes(self.algo, &data) != *d {
                return Err(Error::invalid(format!(
                    "{} changed while it was being stored",
                    src.display()
                )));
            }
            return self.upload_bytes(d, Bytes::from(data));
        }
        let rel = self.fresh_key(d);
        let key = self.key_path(&rel);
        let file = std::fs::File::open(src).ctx("open", src)?;
        let src_owned = src.to_path_buf();
        let parts = futures::stream::unfold((file, 0u64), move |(f, at)| {
            let src = src_owned.clone();
            async move {
                if at >= size {
                    return None;
                }
                let n = (size - at).min(FILE_PART as u64) as usize;
                let mut buf = vec![0u8; n];
                let r = std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, at)
                    .ctx("read", &src)
                    .map(|()| Bytes::from(buf));
                Some((r, (f, at + n as u64)))
            }
        });
        self.rt
            .block_on(self.multipart(&key, parts, Some((d, src))))?;
        self.confirm(d, &rel);
        Ok(())
    }

    /// A multipart upload of the parts from `parts`, up to 4 in flight. With `check`, the
    /// parts are hashed as they go and the upload is completed only if they hash to the
    /// digest; otherwise (and on any error) it is aborted.
    pub(super) async fn multipart(
        &self,
        key: &ObjPath,
        parts: impl futures::Stream<Item = Result<Bytes>>,
        check: Option<(&Digest, &Path)>,
    ) -> Result<()> {
        let mut up = self
            .s3
            .put_multipart(key)
            .await
            .map_err(|e| obj_err("start upload", key.as_ref(), e))?;
        let mut hasher = check.map(|(d, _)| Hasher::new(d.algo()));
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut parts = std::pin::pin!(parts);
        let r: Result<()> = async {
            while let Some(part) = parts.next().await {
                let part = part?;
                if let Some(h) = hasher.as_mut() {
                    h.update(&part);
                }
                in_flight.push(up.put_part(PutPayload::from(part)));
                while in_flight.len() >= 4 {
                    if let Some(r) = in_flight.next().await {
                        r.map_err(|e| obj_err("upload part", key.as_ref(), e))?;
                    }
                }
            }
            while let Some(r) = in_flight.next().await {
                r.map_err(|e| obj_err("upload part", key.as_ref(), e))?;
            }
            if let (Some(h), Some((d, src))) = (&hasher, check)
                && h.finalize() != *d
            {
                return Err(Error::invalid(format!(
                    "{} changed while it was being stored",
                    src.display()
                )));
            }
            Ok(())
        }
        .await;
        drop(in_flight);
        match r {
            Ok(()) => up
                .complete()
                .await
                .map(|_| ())
                .map_err(|e| obj_err("complete upload", key.as_ref(), e)),
            Err(e) => {
                let _ = up.abort().await;
                Err(e)
            }
        }
    }

    pub(super) fn remote_has(&self, d: &Digest) -> Result<bool> {
        Ok(self.locate(d, false)?.is_some())
    }

    /// Streams a blob object into the cache, hashing as it comes; a blob whose bytes do not
    /// match its name is refused (CorruptError) and not cached. The primary key first, then
    /// the blob's copies.
    pub(super) async fn fetch_blob(&self, d: &Digest) -> Result<PathBuf> {
        let primary = self.key_path(&self.blob_rel(d));
        let got = match self.s3.get(&primary).await {
            Ok(g) => Ok(g),
            Err(object_store::Error::NotFound { .. }) => {
                let mut found = Err(Error::not_found(format!(
                    "read {}: not found in the bucket",
                    primary.as_ref()
                )));
                for k in self.keys_of(d).await? {
                    match self.s3.get(&self.key_path(&k)).await {
                        Ok(g) => {
                            found = Ok(g);
                            break;
                        }
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(obj_err("read", &k, e)),
                    }
                }
                found
            }
            Err(e) => Err(obj_err("read", primary.as_ref(), e)),
        }?;
        let key = got.meta.location.clone();
        let mut w = self.cache.writer("")?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| obj_err("read", key.as_ref(), e))?;
            w.write_all(&chunk)?;
        }
        let info = w.commit()?;
        if info.digest != *d {
            if info.created {
                let _ = std::fs::remove_file(&info.path);
            }
            return Err(Error::corrupt(format!(
                "blob object {} holds bytes that hash to {}",
                key.as_ref(),
                info.digest
            )));
        }
        Ok(info.path)
    }
}
