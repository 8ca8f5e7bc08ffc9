//! The bucket's `STORE.json`, and random writer ids.

use super::*;

/// Reads or creates `STORE.json` under `prefix`; returns the store's hash algorithm and gc
/// lease (`gc_lease_ms`; stores made before it have the default). Every process of a store
/// must use the same lease, so it is the store's, not an option of one handle.
pub(super) fn store_meta(
    rt: &tokio::runtime::Runtime,
    s3: &dyn ObjectStore,
    prefix: &str,
    url: &str,
    want: Option<HashAlgo>,
    lease: Option<Duration>,
    create: bool,
) -> Result<(HashAlgo, Duration)> {
    let key = ObjPath::from(format!("{prefix}STORE.json"));
    let got = rt.block_on(async {
        match s3.get(&key).await {
            Ok(r) => r.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    });
    let got = got.map_err(|e| obj_err("read", key.as_ref(), e))?;
    if let Some(bytes) = got {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("{}: {e}", key.as_ref())))?;
        let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format > u64::from(FORMAT) {
            return Err(Error::incompatible(format!(
                "{url} was made by a newer runstash (format {format}, this one reads {FORMAT})"
            )));
        }
        let algo: HashAlgo = v
            .get("hash")
            .and_then(|h| h.as_str())
            .unwrap_or("")
            .parse()?;
        if let Some(w) = want
            && w != algo
        {
            return Err(Error::incompatible(format!(
                "{url} hashes with {}, not {}",
                algo.name(),
                w.name()
            )));
        }
        let stored = match v.get("gc_lease_ms") {
            None => DEFAULT_GC_LEASE,
            Some(ms) => match ms.as_u64() {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(Error::corrupt(format!(
                        "{}: gc_lease_ms is {ms}, not a positive integer",
                        key.as_ref()
                    )));
                }
            },
        };
        return Ok((algo, stored));
    }
    if !create {
        return Err(Error::not_found(format!(
            "no runstash store at {url} (no {})",
            key.as_ref()
        )));
    }
    let algo = want.unwrap_or(HashAlgo::Blake3);
    let lease = lease.unwrap_or(DEFAULT_GC_LEASE);
    if lease.as_millis() == 0 || lease.as_millis() > u128::from(u32::MAX) {
        return Err(Error::invalid(format!(
            "gc_lease must be between 1 ms and {} s, not {lease:?}",
            u32::MAX / 1000
        )));
    }
    let body = serde_json::json!({
        "format": FORMAT, "hash": algo.name(), "kind": "runstash-s3",
        "gc_lease_ms": lease.as_millis() as u64,
    });
    let data = serde_json::to_vec_pretty(&body).unwrap_or_default();
    // Create-only, so two first openers cannot both write it; a server without conditional
    // writes gets a plain write.
    let create = object_store::PutOptions::from(object_store::PutMode::Create);
    let r = rt.block_on(s3.put_opts(&key, PutPayload::from(data.clone()), create));
    match r {
        Ok(_) => Ok((algo, lease)),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {
            // another opener was first: use its settings
            store_meta(rt, s3, prefix, url, want, None, false)
        }
        Err(object_store::Error::NotImplemented { .. }) => {
            rt.block_on(s3.put(&key, PutPayload::from(data)))
                .map_err(|e| obj_err("write", key.as_ref(), e))?;
            Ok((algo, lease))
        }
        Err(e) => Err(obj_err("write", key.as_ref(), e)),
    }
}

/// Random bytes for a writer id, from the kernel.
pub(super) fn getrandom_bytes(out: &mut [u8]) {
    use std::io::Read;
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(out));
    if ok.is_err() {
        // Fall back to the clock and pid: unique enough for a writer id.
        let seed = now_ms() ^ (u64::from(std::process::id()) << 32);
        for (i, b) in out.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
}
