//! Keyword arguments into the core's types: labels, metrics, record metadata, filters, ids.

use super::*;

pub(crate) fn labels_from(d: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(Arc<str>, OwnedValue)>> {
    let Some(d) = d else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        let key: Arc<str> = match k.cast::<PyString>() {
            Ok(s) => Arc::from(s.to_str()?),
            Err(_) => {
                return Err(invalid(format!(
                    "label keys must be strings, got {}",
                    k.get_type().name()?
                )));
            }
        };
        out.push((key, value_from(&k, &v)?));
    }
    Ok(out)
}

pub(crate) fn value_from(k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) -> PyResult<OwnedValue> {
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(OwnedValue::Bool(b.is_true()));
    }
    if let Ok(i) = v.cast::<PyInt>() {
        return i
            .extract::<i64>()
            .map(OwnedValue::Int)
            .map_err(|_| invalid(format!("label {k} does not fit in 64 bits")));
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(OwnedValue::Float(f.value()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(OwnedValue::Str(Arc::from(s.to_str()?)));
    }
    Err(invalid(format!(
        "label {k} must be a str, int, float or bool, got {}",
        v.get_type().name()?
    )))
}

pub(crate) fn metrics_from(d: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(Arc<str>, f64)>> {
    let Some(d) = d else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        let key: Arc<str> = match k.cast::<PyString>() {
            Ok(s) => Arc::from(s.to_str()?),
            Err(_) => {
                return Err(invalid(format!(
                    "metric names must be strings, got {}",
                    k.get_type().name()?
                )));
            }
        };
        let is_number = (v.cast::<PyFloat>().is_ok() || v.cast::<PyInt>().is_ok())
            && v.cast::<PyBool>().is_err();
        let x: f64 = if is_number {
            v.extract()
                .map_err(|_| invalid(format!("metric {key:?} must be finite, got {v}")))?
        } else {
            // numpy scalars and other numbers convert through __float__.
            match v.call_method0("__float__").and_then(|f| f.extract::<f64>()) {
                Ok(x) if v.cast::<PyBool>().is_err() && v.cast::<PyString>().is_err() => x,
                _ => {
                    return Err(invalid(format!(
                        "metric {key:?} must be a number, got {}",
                        v.get_type().name()?
                    )));
                }
            }
        };
        if !x.is_finite() {
            return Err(invalid(format!("metric {key:?} must be finite, got {x}")));
        }
        out.push((key, x));
    }
    Ok(out)
}

/// The fields of a new record, as `runstash.Store` passes them: a tuple
/// `(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, mime)`.
#[derive(FromPyObject)]
pub(crate) struct MetaArgs<'py>(
    String,
    Option<Bound<'py, PyDict>>,
    Option<Bound<'py, PyDict>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Option<String>,
);

impl MetaArgs<'_> {
    pub(crate) fn into_meta(self) -> PyResult<RecordMeta> {
        Ok(RecordMeta {
            kind: self.0,
            labels: labels_from(self.1.as_ref())?,
            metrics: metrics_from(self.2.as_ref())?,
            run_id: self.3,
            graph_id: self.4,
            node_id: self.5,
            project_id: self.6,
            pinned: self.7,
            mime: self.8,
            uri: None,
        })
    }
}

/// A query filter as `runstash.Store` passes it: a tuple
/// `(kind, labels, run_id, graph_id, node_id, project_id, pinned)`.
#[derive(FromPyObject)]
pub(crate) struct FilterArgs<'py>(
    Option<String>,
    Option<Bound<'py, PyDict>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
);

impl FilterArgs<'_> {
    pub(crate) fn into_filter(self) -> PyResult<Filter> {
        let labels = labels_from(self.1.as_ref())?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok(Filter {
            kind: self.0,
            labels,
            run_id: self.2,
            graph_id: self.3,
            node_id: self.4,
            project_id: self.5,
            pinned: self.6,
        })
    }
}

pub(crate) fn parse_id(id: &str) -> PyResult<ArtifactId> {
    id.parse().py_err()
}
