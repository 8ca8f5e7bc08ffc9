//! Blob objects: uploads of bytes and files (multipart above `MULTIPART_MIN`, create-only),
//! whether the bucket holds one, and fetching one.
//!
//! Invariant (the writer half of the gc protocol, see [`super::gc`]): a blob is relied on
//! (not uploaded again) only under a key that no gc marker known here names, and only on a
//! confirmation younger than the lease allows; uploads never go to a marked key. A
//! confirmation is dated by the marker view it was made with (never later), so the time an
//! upload or a `HEAD` takes counts against the lease.

use super::*;

impl Inner {
    /// Uploads a blob held in memory unless the bucket has it.
    pub(super) fn upload_bytes(&self, d: &Digest, data: Bytes) -> Result<()> {
        // An upload slower than half the lease may have outlived a gc's mark and sweep of
        // the very object it wrote (the server stored it long before answering): look again,
        // and upload again if it is gone.
        for _ in 0..3 {
            self.upload_bytes_once(d, data.clone())?;
            if self.locate_with(d, false, true)?.is_some() {
                return Ok(());
            }
        }
        Err(Error::new(
            ErrorKind::Io,
            format!("blob {d}: uploads keep outlasting the gc lease; nothing was recorded"),
        ))
    }

    fn upload_bytes_once(&self, d: &Digest, data: Bytes) -> Result<()> {
        if self.locate(d, false)?.is_some() {
            return Ok(());
        }
        let view = self.view_time();
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
        self.confirm(d, &rel, view);
        Ok(())
    }

    /// When this process's view of the gc markers was taken (now, if it has none).
    fn view_time(&self) -> Instant {
        self.state.lock().condemned_at.unwrap_or_else(Instant::now)
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

    fn confirm(&self, d: &Digest, rel: &str, at: Instant) {
        self.state
            .lock()
            .remote_blobs
            .insert(*d.bytes(), (Arc::from(rel), at));
    }

    /// The key under which the bucket holds `d` and that no known gc marker names, or `None`.
    /// A recent confirmation is trusted unless `force`. When every key of `d` is marked, one
    /// is copied (inside the bucket) to a new key, which no marker can name. `copies`: also
    /// look for copies when the primary key is simply absent (a caller about to upload need
    /// not: uploading to the primary key is correct too, and costs no listing).
    pub(super) fn locate(&self, d: &Digest, force: bool) -> Result<Option<Arc<str>>> {
        self.locate_with(d, force, force)
    }

    pub(super) fn locate_with(
        &self,
        d: &Digest,
        force: bool,
        copies: bool,
    ) -> Result<Option<Arc<str>>> {
        if !force
            && let Some((k, t)) = self.state.lock().remote_blobs.get(d.bytes())
            && t.elapsed() < self.lease_trust()
        {
            return Ok(Some(k.clone()));
        }
        self.condemned_fresh()?;
        let view = self.view_time();
        let primary = self.blob_rel(d);
        if !self.is_condemned(&primary) {
            let key = self.key_path(&primary);
            match self.rt.block_on(self.s3.head(&key)) {
                Ok(_) => {
                    self.confirm(d, &primary, view);
                    return Ok(Some(Arc::from(primary.as_str())));
                }
                Err(object_store::Error::NotFound { .. }) if !copies => return Ok(None),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(obj_err("head", key.as_ref(), e)),
            }
        }
        let keys = self.rt.block_on(self.keys_of(d))?;
        if let Some(k) = keys.iter().find(|k| !self.is_condemned(k)) {
            self.confirm(d, k, view);
            return Ok(Some(Arc::from(k.as_str())));
        }
        let rel = self.fresh_key(d);
        for from in &keys {
            let r = self
                .rt
                .block_on(self.s3.copy(&self.key_path(from), &self.key_path(&rel)));
            match r {
                Ok(()) => {
                    self.confirm(d, &rel, view);
                    return Ok(Some(Arc::from(rel.as_str())));
                }
                Err(object_store::Error::NotFound { .. }) => continue, // deleted meanwhile
                Err(e) => return Err(obj_err("copy", from, e)),
            }
        }
        Ok(None)
    }

    /// Every key (relative to the prefix) holding blob `d`: its primary key and its copies,
    /// from one listing that starts just before them.
    pub(super) async fn keys_of(&self, d: &Digest) -> Result<Vec<String>> {
        let primary = self.blob_rel(d);
        // Prefixes are whole path segments: list the fan-out directory from an offset.
        let dir = self.key_path(&primary[..primary.len() - 62]);
        let stem = &primary[..primary.len() - 1];
        let offset = self.key_path(stem);
        let mut listed = self.s3.list_with_offset(Some(&dir), &offset);
        let copy_prefix = format!("{primary}.");
        let mut keys = Vec::new();
        while let Some(m) = listed.next().await {
            let m = m.map_err(|e| obj_err("list", dir.as_ref(), e))?;
            let Some(rel) = m.location.as_ref().strip_prefix(&self.prefix) else {
                continue;
            };
            if !rel.starts_with(stem) {
                break; // sorted: nothing of `d` follows
            }
            if rel == primary
                || (rel.starts_with(&copy_prefix) && self.digest_of_key(rel).is_some())
            {
                keys.push(rel.to_string());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Uploads a file as blob `d` unless the bucket has it. Large files go up in parts that
    /// are hashed as they are read; a mismatch with `d` (the file changed) aborts the upload.
    pub(super) fn upload_file(&self, d: &Digest, src: &Path) -> Result<()> {
        for _ in 0..3 {
            self.upload_file_once(d, src)?;
            if self.locate_with(d, false, true)?.is_some() {
                return Ok(()); // see upload_bytes
            }
        }
        Err(Error::new(
            ErrorKind::Io,
            format!("blob {d}: uploads keep outlasting the gc lease; nothing was recorded"),
        ))
    }

    fn upload_file_once(&self, d: &Digest, src: &Path) -> Result<()> {
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
            return self.upload_bytes_once(d, Bytes::from(data));
        }
        let view = self.view_time();
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
        self.confirm(d, &rel, view);
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
        Ok(self.locate_with(d, false, true)?.is_some())
    }

    /// Streams a blob into the cache, hashing as it comes: from its primary key, else from
    /// one of its copies. Bytes that do not match the digest are refused (CorruptError, when
    /// no key holds good bytes) and not cached.
    pub(super) async fn fetch_blob(&self, d: &Digest) -> Result<PathBuf> {
        let primary = self.blob_rel(d);
        let mut last = match self.fetch_key(d, &primary).await {
            Ok(p) => return Ok(p),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => e,
            Err(e) => return Err(e),
        };
        for k in self.keys_of(d).await? {
            if k == primary {
                continue;
            }
            match self.fetch_key(d, &k).await {
                Ok(p) => return Ok(p),
                Err(e) if e.kind() == ErrorKind::Corrupt => last = e,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn fetch_key(&self, d: &Digest, rel: &str) -> Result<PathBuf> {
        let key = self.key_path(rel);
        let got = self
            .s3
            .get(&key)
            .await
            .map_err(|e| obj_err("read", key.as_ref(), e))?;
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
