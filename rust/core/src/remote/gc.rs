//! Garbage collection on S3: delete blob objects that no live record names, while writers on
//! other machines keep writing, with no lock to share.
//!
//! The hazard is a writer between "the blob is in the bucket" (it uploaded it, or found it
//! there and skipped the upload) and "the segment naming it is stored": a gc that lists the
//! log in between sees the blob unreferenced. S3 has no conditional delete, so a gc cannot
//! delete "only if nobody relies on it now". Instead gc works in two phases separated by a
//! safety interval, and keys, once marked, are never relied on again:
//!
//! 1. **Mark.** A gc lists `blobs/`, refreshes the index and writes a marker object
//!    `gc/<ms>-<writer><clock>.json` (a name never used twice) naming the keys that no live record names and that are older
//!    than the caller's grace. Nothing is deleted.
//! 2. **Sweep.** A later gc, once a marker is older than `S = 1.25 L + 1 s` (`L`: the store's
//!    gc lease, `gc_lease_ms` in `STORE.json`, default 10 minutes; ages by the bucket's clock,
//!    which may count whole seconds only),
//!    refreshes the index *after* reading that clock, deletes the keys of the marker whose
//!    blob is still not live, then deletes the marker.
//!
//! Writers ([`super::upload`]) keep the other half:
//! - they never upload to, nor rely on, a key named by a marker they know of; their view of
//!   the markers is at most `L/8` old when they rely on a key. A blob whose every key is
//!   marked is copied (inside the bucket) to a fresh key `<primary>.<suffix>`;
//! - a confirmation that a blob is in the bucket is dated by the marker view it was made
//!   with, and trusted for `L/4`; a segment is stored only if every blob object its records
//!   name (directly, through a directory manifest, or as the record a pin may bring back) was
//!   confirmed less than `L/2` ago (otherwise it is confirmed again first); the segment upload
//!   itself must finish within the remaining `L/2`: the lease must exceed twice the longest
//!   a request can take with its retries (30 s x 4 by default, far below 10 minutes).
//!   In `"os"` durability a batch older than `L/4` goes up at the next write; a batch kept
//!   longer than `S` (no write, no flush) may find its blob swept, and its upload then fails
//!   naming the blob.
//!
//! Why nothing live is deleted: take a key `K` marked at `t` and deleted after `t + S`. A
//! writer that relied on `K` did so with a marker view that lacked the marker, so the view
//! was taken before `t` and the reliance happened before `t + L/8`; its segment was stored
//! before `t + L/8 + L < t + S`, so the sweep's refresh sees the record and keeps `K`. A
//! writer whose view has the marker uses another key, which no marker names.
//!
//! Blobs packed in segments are not objects of their own: compaction, not gc, reclaims them.

use super::*;

use crate::gc::GcReport;
use crate::live::LiveSet;

/// A gc marker: the keys it names (relative to the prefix), and when the bucket stored it.
pub(super) struct Marker {
    pub name: String,
    pub modified_ms: i64,
    pub keys: Arc<HashSet<String>>,
}

/// A blob object as listed.
pub(super) struct BlobObject {
    pub key: String,
    /// `None` when the key is not a blob key (a stray object).
    pub digest: Option<Digest>,
    pub size: u64,
    pub modified_ms: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MarkerBody {
    keys: Vec<String>,
}

impl Inner {
    /// The blob a key holds, from its name: `blobs/<2 hex>/<rest>` or a copy's
    /// `blobs/<2 hex>/<rest>.<suffix>`.
    pub(super) fn digest_of_key(&self, rel: &str) -> Option<Digest> {
        let rest = rel.strip_prefix("blobs/")?;
        let (head, tail) = rest.split_once('/')?;
        let tail = match tail.split_once('.') {
            // A copy's suffix: this writer id and a clock value, in hex (see `fresh_key`).
            Some((t, sfx)) if sfx.len() > 16 && sfx.bytes().all(|b| b.is_ascii_hexdigit()) => t,
            Some(_) => return None,
            None => tail,
        };
        let hex = format!("{head}{tail}");
        if head.len() != 2 || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        format!("{}:{}", self.algo.name(), hex.to_ascii_lowercase())
            .parse()
            .ok()
    }

    pub(super) async fn blob_objects(&self) -> Result<Vec<BlobObject>> {
        Ok(self
            .list_meta("blobs/")
            .await?
            .into_iter()
            .map(|(key, size, modified_ms)| BlobObject {
                digest: self.digest_of_key(&key),
                key,
                size,
                modified_ms,
            })
            .collect())
    }

    /// Every gc marker in the bucket. Marker bodies are immutable: those read before come
    /// from memory.
    pub(super) async fn markers(&self) -> Result<Vec<Marker>> {
        let listed = self.list_meta("gc/").await?;
        let mut out = Vec::new();
        for (name, _, modified_ms) in listed {
            if !is_marker_name(&name) {
                continue; // clock probes, and objects that are not runstash's
            }
            let known = self.state.lock().marker_keys.get(&name).cloned();
            let keys = match known {
                Some(k) => k,
                None => {
                    let Some(bytes) = self.get_bytes(&name).await? else {
                        continue; // swept meanwhile
                    };
                    // One that does not parse is not runstash's (or is damaged): it names
                    // nothing, so it deletes nothing and protects nothing.
                    let Ok(body) = serde_json::from_slice::<MarkerBody>(&bytes) else {
                        continue;
                    };
                    let keys = Arc::new(body.keys.into_iter().collect::<HashSet<_>>());
                    self.state
                        .lock()
                        .marker_keys
                        .insert(name.clone(), keys.clone());
                    keys
                }
            };
            out.push(Marker {
                name,
                modified_ms,
                keys,
            });
        }
        Ok(out)
    }

    /// Reads the markers again when this process's view of them is older than `L/8`.
    pub(super) fn condemned_fresh(&self) -> Result<()> {
        let fresh = self
            .state
            .lock()
            .condemned_at
            .is_some_and(|t| t.elapsed() < self.condemned_staleness());
        if fresh {
            return Ok(());
        }
        let started = Instant::now();
        let markers = self.rt.block_on(self.markers())?;
        let mut guard = self.state.lock();
        let st = &mut *guard;
        st.condemned = markers
            .iter()
            .flat_map(|m| m.keys.iter().cloned())
            .collect();
        let names: HashSet<&str> = markers.iter().map(|m| m.name.as_str()).collect();
        st.marker_keys.retain(|n, _| names.contains(n.as_str()));
        st.condemned_at = Some(started);
        // A confirmation of a key that is marked now is no confirmation.
        let condemned = &st.condemned;
        st.remote_blobs
            .retain(|_, (k, _)| !condemned.contains(&**k));
        Ok(())
    }

    pub(super) fn is_condemned(&self, rel: &str) -> bool {
        self.state.lock().condemned.contains(rel)
    }

    /// Before a segment is stored: every blob object its records name was confirmed less
    /// than `L/2` ago, or is confirmed again now. A blob that is gone fails the segment.
    pub(super) fn check_leases(&self, seg: &SegmentBuf) -> Result<()> {
        let stale: Vec<Digest> = {
            let st = self.state.lock();
            let in_seg: HashSet<[u8; 32]> = seg.packed.iter().map(|(d, _, _)| *d.bytes()).collect();
            let mut v: Vec<Digest> = seg
                .ops
                .iter()
                .filter_map(|op| match op {
                    Op::Put(r) => Some(r.digest),
                    // A pin or unpin ordered after a delete brings the record back.
                    Op::Pin { id, .. } => st.ledger.digest_of(*id),
                    _ => None,
                })
                .flat_map(|d| {
                    let members = st.tree_members.get(d.bytes()).cloned();
                    std::iter::once(d).chain(members.into_iter().flat_map(|m| m.to_vec()))
                })
                .filter(|d| {
                    !in_seg.contains(d.bytes())
                        && !st.packed.contains_key(d.bytes())
                        && st
                            .remote_blobs
                            .get(d.bytes())
                            .is_none_or(|(_, t)| t.elapsed() >= self.lease_store())
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        for d in stale {
            if self.locate(&d, true)?.is_none() {
                return Err(Error::not_found(format!(
                    "blob {d} is no longer in the bucket (deleted by a gc before the record \
                     naming it was stored, which the gc lease should prevent: was the writer \
                     paused longer than the lease?); its records were not stored"
                )));
            }
        }
        Ok(())
    }

    /// Deletes objects (keys relative to the prefix), [`FETCH_CONCURRENCY`] at a time; one
    /// already gone is fine.
    pub(super) async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        futures::stream::iter(keys)
            .map(|k| async move {
                match self.s3.delete(&self.key_path(&k)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(obj_err("delete", &k, e)),
                }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// The bucket's clock now, in ms: the modification time of an object written now.
    async fn bucket_now_ms(&self) -> Result<i64> {
        let key = self.key_path(&format!("gc/clock-{}{:x}", self.writer, self.tick()));
        self.s3
            .put(&key, PutPayload::from_static(b""))
            .await
            .map_err(|e| obj_err("write", key.as_ref(), e))?;
        let m = self
            .s3
            .head(&key)
            .await
            .map_err(|e| obj_err("head", key.as_ref(), e))?;
        let _ = self.s3.delete(&key).await;
        Ok(m.last_modified.timestamp_millis())
    }
}

/// `gc/<16 digits>-<writer id and clock: 32 hex>.json`.
fn is_marker_name(name: &str) -> bool {
    name.strip_prefix("gc/")
        .and_then(|n| n.strip_suffix(".json"))
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(ms, w)| {
            ms.len() == 16
                && ms.bytes().all(|b| b.is_ascii_digit())
                && w.len() == 32
                && w.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

impl RemoteStore {
    /// The live set of the current view (records minus `except`), with the members of live
    /// directory artifacts read from their manifests.
    pub(super) fn live_set(&self, except: &HashSet<ArtifactId>) -> Result<LiveSet> {
        let mut live = self.read(|m| LiveSet::of_index(m, except))?;
        for (_, manifest) in live.trees.clone() {
            let parsed = self
                .read_blob(&manifest, true)
                .and_then(|b| crate::tree::parse_manifest(&b));
            match parsed {
                Ok(files) => live.members.extend(files.into_iter().map(|f| f.hash)),
                Err(e) => live
                    .unreadable_trees
                    .push((manifest, e.message().to_string())),
            }
        }
        Ok(live)
    }

    /// Garbage collection (see the module docs): deletes the blob objects that earlier gcs
    /// marked at least `1.25 L` ago and that are still not live, and marks the unreferenced
    /// ones older than `grace`; computed as if the records `except` were deleted (only with
    /// `dry_run`: a preview of retention). With `dry_run`, only reports.
    pub fn gc_assuming_deleted(
        &self,
        dry_run: bool,
        grace: Duration,
        except: &HashSet<ArtifactId>,
    ) -> Result<GcReport> {
        self.alive()?;
        if !dry_run && !except.is_empty() {
            return Err(Error::invalid("assume_deleted is for dry runs only"));
        }
        let inner = &*self.inner;
        if !dry_run {
            inner.flush()?;
        }
        let now = inner.rt.block_on(inner.bucket_now_ms())?;
        // After reading the clock: this view holds every segment stored before `now`.
        self.refresh()?;
        let markers = inner.rt.block_on(inner.markers())?;
        let objects = inner.rt.block_on(inner.blob_objects())?;
        let live = self.live_set(except)?;
        live.refuse_unreadable_trees("gc")?;
        let sizes: std::collections::HashMap<&str, u64> =
            objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
        // Plus 1 s: the bucket may keep modification times to the second only.
        let safety = (inner.lease * 5 / 4).as_millis() as i64 + 1000;
        let mut r = GcReport {
            dry_run,
            scanned: objects.len() as u64,
            ..GcReport::default()
        };
        let mut marked: HashSet<&str> = HashSet::new();
        let mut sweep: Vec<(String, Digest, u64)> = Vec::new();
        let mut done_markers = Vec::new();
        for m in &markers {
            let due = m.modified_ms <= now - safety;
            for k in m.keys.iter() {
                marked.insert(k.as_str());
                let (Some(size), Some(d)) = (sizes.get(k.as_str()), inner.digest_of_key(k)) else {
                    continue; // gone already
                };
                if !due {
                    r.pending += 1;
                    r.pending_bytes += size;
                } else if live.contains(&d) {
                    r.revived += 1;
                } else {
                    sweep.push((k.clone(), d, *size));
                }
            }
            if due {
                done_markers.push(m.name.clone());
            }
        }
        sweep.sort();
        sweep.dedup();
        let mut new_marks = Vec::new();
        for o in &objects {
            let Some(d) = o.digest else { continue };
            if live.contains(&d) || marked.contains(o.key.as_str()) {
                continue;
            }
            if o.modified_ms > now - grace.as_millis() as i64 {
                r.recent += 1;
                r.recent_bytes += o.size;
            } else {
                new_marks.push(o.key.clone());
                r.pending += 1;
                r.pending_bytes += o.size;
            }
        }
        for (_, d, size) in &sweep {
            r.deleted.push((*d, *size));
            r.deleted_bytes += size;
        }
        if dry_run {
            return Ok(r);
        }
        inner.rt.block_on(async {
            inner
                .delete_all(sweep.iter().map(|(k, _, _)| k.clone()).collect())
                .await?;
            // Only once its keys are gone: a writer that still sees it avoids them.
            for name in &done_markers {
                match inner.s3.delete(&inner.key_path(name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(obj_err("delete", name, e)),
                }
            }
            if !new_marks.is_empty() {
                let name = format!(
                    "gc/{:016}-{}{:016x}.json",
                    now.max(0),
                    inner.writer,
                    inner.tick()
                );
                let body = serde_json::to_vec(&MarkerBody { keys: new_marks })
                    .map_err(|e| Error::invalid(format!("gc marker: {e}")))?;
                let key = inner.key_path(&name);
                inner
                    .s3
                    .put(&key, PutPayload::from(body))
                    .await
                    .map_err(|e| obj_err("write gc marker", key.as_ref(), e))?;
            }
            Ok::<(), Error>(())
        })?;
        // This process's own view of the markers is stale now.
        inner.state.lock().condemned_at = None;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::is_marker_name;

    #[test]
    fn marker_names() {
        let w = "0123456789abcdef0123456789abcdef";
        assert!(is_marker_name(&format!("gc/0001796394822000-{w}.json")));
        assert!(!is_marker_name("gc/clock-ab12"));
        assert!(!is_marker_name("gc/README.json"));
        assert!(!is_marker_name("gc/12-.json"));
        assert!(!is_marker_name("gc/2024-notes.json"));
        assert!(!is_marker_name(&format!("gc/0001796394822000-{w}0.json")));
    }
}
