//! Blob objects: uploads of bytes and files (multipart above `MULTIPART_MIN`, create-only)
//! and whether the bucket holds one.

use super::*;

impl Inner {
    /// Uploads a blob held in memory unless the bucket has it.
    pub(super) fn upload_bytes(&self, d: &Digest, data: Bytes) -> Result<()> {
        if self.remote_has(d)? {
            return Ok(());
        }
        let key = ObjPath::from(self.blob_key(d));
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
        self.state.lock().remote_blobs.insert(*d.bytes());
        Ok(())
    }

    /// Uploads a file as blob `d` unless the bucket has it. Large files go up in parts that
    /// are hashed as they are read; a mismatch with `d` (the file changed) aborts the upload.
    pub(super) fn upload_file(&self, d: &Digest, src: &Path) -> Result<()> {
        if self.remote_has(d)? {
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
        let key = ObjPath::from(self.blob_key(d));
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
        self.state.lock().remote_blobs.insert(*d.bytes());
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
        if self.state.lock().remote_blobs.contains(d.bytes()) {
            return Ok(true);
        }
        let key = self.blob_key(d);
        match self.rt.block_on(self.s3.head(&ObjPath::from(key.as_str()))) {
            Ok(_) => {
                self.state.lock().remote_blobs.insert(*d.bytes());
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(obj_err("head", &key, e)),
        }
    }

    /// Streams a blob object into the cache, hashing as it comes; a blob whose bytes do not
    /// match its name is refused (CorruptError) and not cached.
    pub(super) async fn fetch_blob(&self, d: &Digest) -> Result<PathBuf> {
        let key = ObjPath::from(self.blob_key(d));
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
