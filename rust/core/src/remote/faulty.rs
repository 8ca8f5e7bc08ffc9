//! A fault-injecting object store for the S3 protocol's unit tests: object_store's `InMemory`
//! behind switches that fail PUTs (before they are stored, or after: the request landed but
//! its answer was lost) and hide objects from listings (a listing that lags behind writes).
//! Test code only.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use parking_lot::Mutex;

/// How the next matching PUTs fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutFault {
    /// Nothing is stored; the caller gets an error.
    Refused,
    /// The object is stored; the caller gets an error all the same.
    AnswerLost,
}

#[derive(Debug, Default)]
pub(crate) struct Faulty {
    inner: InMemory,
    /// (key substring, fault, how many more PUTs it hits).
    put_fault: Mutex<Option<(String, PutFault, usize)>>,
    /// Keys containing this are left out of listings.
    hidden: Mutex<Option<String>>,
    /// PUT requests seen.
    pub(crate) puts: AtomicUsize,
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl Faulty {
    /// The next `n` PUTs of a key containing `key_part` fail as `fault` says.
    pub(crate) fn fail_puts(&self, key_part: &str, fault: PutFault, n: usize) {
        *self.put_fault.lock() = Some((key_part.to_string(), fault, n));
    }

    /// Listings leave out the keys containing `key_part` (`None`: list everything again).
    pub(crate) fn hide(&self, key_part: Option<&str>) {
        *self.hidden.lock() = key_part.map(str::to_string);
    }

    /// The keys under `prefix`, listed without faults.
    pub(crate) async fn keys(&self, prefix: &str) -> Vec<String> {
        let p = Path::from(prefix);
        let mut v: Vec<String> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap_or_default();
        v.sort();
        v
    }

    fn fault_for(&self, location: &Path) -> Option<PutFault> {
        let mut g = self.put_fault.lock();
        let (part, fault, left) = g.as_mut()?;
        if *left == 0 || !location.as_ref().contains(part.as_str()) {
            return None;
        }
        *left -= 1;
        Some(*fault)
    }

    fn visible(&self, location: &Path) -> bool {
        self.hidden
            .lock()
            .as_deref()
            .is_none_or(|h| !location.as_ref().contains(h))
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "Faulty",
        source: format!("injected fault: {what}").into(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        match self.fault_for(location) {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(PutFault::Refused) => Err(injected("PUT refused")),
            Some(PutFault::AnswerLost) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected("PUT stored, answer lost"))
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let hidden = self.hidden.lock().clone();
        self.inner
            .list(prefix)
            .try_filter(move |m| {
                let keep = hidden
                    .as_deref()
                    .is_none_or(|h| !m.location.as_ref().contains(h));
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects.retain(|m| self.visible(&m.location));
        Ok(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
